"""WebSocket text frames as a server sends them (RFC 6455 5.2: FIN, opcode text, unmasked, no compression).

Both of our servers build their frames themselves and write them to the transport: the simulator's feed (one write
per connection and loop pass) and the engine's RPC pushes (a frame built once per push, the same bytes for every
panel). Only whole frames are written, and only on the loop's thread, so nothing interleaves inside a frame.
"""

from __future__ import annotations

import struct

_SHORT_HEADERS = [bytes((0x81, n)) for n in range(126)]  # FIN + text opcode, unmasked, 7-bit length
_pack_h = struct.Struct("!BBH").pack
_pack_q = struct.Struct("!BBQ").pack


def text_frame_header(length: int) -> bytes:
    """The header of an unmasked, unfragmented text frame of ``length`` payload bytes."""
    if length < 126:
        return _SHORT_HEADERS[length]
    return _pack_h(0x81, 126, length) if length < 65536 else _pack_q(0x81, 127, length)


def text_frame(payload: bytes) -> bytes:
    """A whole text frame carrying ``payload`` (UTF-8)."""
    return text_frame_header(len(payload)) + payload
