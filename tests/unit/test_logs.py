"""The engine's log: one line per record whatever the message carries, secrets still redacted."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tradebaas.engine.process.logs import (
    REDACT,
    CallbackHandler,
    DeferredHandler,
    OneLineFilter,
    StrategyLines,
    attach,
    defer_to_loop,
    detach,
    escape_control,
    line_head,
    setup_logging,
    strategy_extra,
)

FORGED = "note\n2025-01-01 00:00:00,000 CRITICAL tradebaas.engine: kill switch engaged"


def test_escape_control_writes_every_control_character_as_an_escape() -> None:
    assert escape_control("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert escape_control("\x00\x07\x1b[31m\x7f\x85\u2028\u2029") == "\\x00\\x07\\x1b[31m\\x7f\\x85\\u2028\\u2029"
    kept = "prijs € 95.000 – BTC_USDC-PERPETUAL \\n C:\\path 🚀"
    assert escape_control(kept) == kept  # printable text, backslashes included, is untouched
    every = "".join(map(chr, range(0x110000)))
    assert len(escape_control(every).splitlines()) == 1


def record(msg: str, *args: Any, exc_info: Any = None) -> logging.LogRecord:
    return logging.LogRecord("tradebaas.user", logging.INFO, __file__, 1, msg, args, exc_info)


def test_the_filter_escapes_the_formatted_message_once() -> None:
    f = OneLineFilter()
    rec = record("note %s from %r", "a\x00b", "x\ny")
    assert f.filter(rec)
    assert rec.getMessage() == "note a\\x00b from 'x\\ny'" and "\n" not in rec.getMessage()
    f.filter(rec)
    assert rec.getMessage() == "note a\\x00b from 'x\\ny'"  # idempotent
    broken = record("%d items", "not a number\n")
    f.filter(broken)
    assert "\n" not in broken.getMessage()


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_engine_log_file_has_one_line_per_record_with_secrets_still_redacted(tmp_path: Path,
                                                                             root_logging: None) -> None:
    log_file = tmp_path / "logs" / "engine.log"
    log = setup_logging(log_file)
    REDACT.add_secret("engine-token-0123456789")
    user = logging.getLogger("tradebaas.user")
    user.info("%s", FORGED)
    user.warning("nul \x00 bell \x07 esc \x1b[2J and token=engine-token-0123456789\nsecret=hunter2 trailing")
    try:
        raise ValueError("boom\nforged line in the exception")
    except ValueError:
        log.exception("handler failed for %s", "id\r\nCRITICAL fake")
    for h in logging.getLogger().handlers:
        h.flush()
    lines = log_file.read_text(encoding="utf-8").splitlines()
    records = [ln for ln in lines if ln[:4].isdigit()]  # lines that start a record (with the timestamp)
    assert len(records) == 3, lines
    assert records[0].endswith("tradebaas.user: note\\n2025-01-01 00:00:00,000 CRITICAL tradebaas.engine: kill "
                               "switch engaged")
    assert not any(ln.startswith("2025-01-01") for ln in lines)  # nothing forged a record
    assert "\\x00" in records[1] and "\\x1b[2J" in records[1] and "\x00" not in records[1]
    assert "engine-token-0123456789" not in records[1] and "hunter2" not in records[1]
    assert records[2].endswith("handler failed for id\\r\\nCRITICAL fake")
    assert lines[-1] == "forged line in the exception"  # a traceback stays as Python prints it, below its record


def test_log_channel_records_are_one_line() -> None:
    got: list[dict[str, Any]] = []
    handler = CallbackHandler(got.append)
    logger = logging.getLogger("tradebaas.user.test-one-line")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("%s", FORGED)
    finally:
        logger.removeHandler(handler)
    assert [r["message"] for r in got] == [FORGED.replace("\n", "\\n")]


def test_a_line_about_a_strategy_carries_its_id_as_a_field_the_filter_matches_exactly(
        tmp_path: Path, root_logging: None) -> None:
    log_file = tmp_path / "logs" / "engine.log"
    setup_logging(log_file)
    orders = logging.getLogger("tradebaas.engine.orders")
    orders.info("order sent: entry of trade t-1", extra=strategy_extra("razor-1"))
    orders.info("order sent: entry of trade t-2", extra=strategy_extra("razor-12"))
    logging.getLogger("tradebaas.user").info("a note that mentions razor-1 [razor-1]: in its text")
    try:
        raise RuntimeError("its traceback")
    except RuntimeError:
        logging.getLogger("tradebaas.engine.live.supervisor").exception("stopped", extra=strategy_extra("razor-1"))
    orders.info("a field that is not an id is no field", extra=strategy_extra("razor-1] forged"))
    for h in logging.getLogger().handlers:
        h.flush()
    lines = log_file.read_text(encoding="utf-8").splitlines(keepends=True)
    heads = [line_head(ln) for ln in lines]
    assert [h.group("strategy") for h in heads if h] == ["razor-1", "razor-12", None, "razor-1", None]
    assert " tradebaas.engine.orders [razor-1]: order sent: entry of trade t-1" in lines[0]

    mine = StrategyLines("razor-1")
    kept = [ln for ln in lines if mine(ln)]
    assert kept[0].endswith("[razor-1]: order sent: entry of trade t-1\n")
    assert kept[1].endswith("[razor-1]: stopped\n") and kept[-1] == "RuntimeError: its traceback\n"
    assert not any("razor-12" in ln or "mentions" in ln or "forged" in ln for ln in kept)


def test_log_channel_records_name_their_strategy() -> None:
    got: list[dict[str, Any]] = []
    handler = CallbackHandler(got.append)
    logger = logging.getLogger("tradebaas.engine.test-channel-strategy")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("fill", extra=strategy_extra("razor-1"))
        logger.info("engine ready")
    finally:
        logger.removeHandler(handler)
    assert [r["strategy_id"] for r in got] == ["razor-1", None]


def test_the_engine_loop_writes_log_lines_after_the_call_in_order_and_from_other_threads(
        tmp_path: Path, root_logging: None) -> None:
    """On the engine's loop a logging call only queues its record (the order path does not wait for the write);
    the loop writes the lines, in order, in its next iterations; the ``log`` channel's handler sees them too."""
    log_file = tmp_path / "engine.log"
    setup_logging(log_file)
    (deferred,) = [h for h in logging.getLogger().handlers if isinstance(h, DeferredHandler)]
    channel: list[dict[str, Any]] = []
    cb = CallbackHandler(channel.append)
    attach(cb)
    log = logging.getLogger("tradebaas.engine.test-deferred")

    def lines() -> list[str]:
        return [ln.rsplit(": ", 1)[-1] for ln in log_file.read_text(encoding="utf-8").splitlines()]

    async def run() -> None:
        defer_to_loop(asyncio.get_running_loop())
        try:
            for i in range(5):
                log.info("order sent %d of %s", i, ["late"])
            assert lines() == [] and channel == []  # nothing written inside the calls
            await asyncio.to_thread(log.warning, "from a worker thread")
            for _ in range(20):
                await asyncio.sleep(0)
            assert lines() == [f"order sent {i} of ['late']" for i in range(5)] + ["from a worker thread"]
            log.info("pending when the loop stops")
        finally:
            defer_to_loop(None)  # what the engine does at shutdown: the pending records are written at once
        assert lines()[-1] == "pending when the loop stops"
        log.info("after the loop, written at once")
        assert lines()[-1] == "after the loop, written at once"

    asyncio.run(run())
    assert [r["message"] for r in channel][-2:] == ["pending when the loop stops", "after the loop, written at once"]
    assert len(channel) == 8
    detach(cb)
    log.info("detached")
    assert len(channel) == 8 and deferred.targets and threading.active_count() >= 1
