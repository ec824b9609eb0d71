"""The engine's log: one line per record whatever the message carries, secrets still redacted."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tradebaas.engine.process.logs import (
    REDACT,
    CallbackHandler,
    OneLineFilter,
    escape_control,
    setup_logging,
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
