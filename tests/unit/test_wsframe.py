"""``tradebaas.wsframe``: the frames our servers build are what the websockets library parses, at every length
encoding (7-bit, 16-bit, 64-bit)."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from tradebaas.wsframe import text_frame, text_frame_header


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 70000])
def test_a_built_frame_parses_back_whole(length: int) -> None:
    payload = b"x" * length
    reader = StreamReader()
    reader.feed_data(text_frame(payload) + text_frame(b"next"))
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as done:
        next(parser)
    frame = done.value.value
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == payload
    assert len(text_frame_header(length)) == (2 if length < 126 else 4 if length < 65536 else 10)
