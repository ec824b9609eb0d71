"""The engine's logging: a rotating file under TRADEBAAS_HOME/logs, secrets redacted, records pushed over RPC.

Why a redacting filter instead of "be careful": tokens and API secrets pass through libraries (URLs with
``?token=``, auth payloads) that we do not control; the filter masks the engine's own token, any registered
secret, and ``token=``/``secret=``-looking key/value pairs in every record before any handler formats it.

Lines about one strategy carry its id as a field after the logger's name (``... INFO    tradebaas.engine.orders
[razor-3f9a1c]: order sent: ...``), set from the log call's ``extra`` (``strategy_extra``), so ``tradebaas logs
--strategy ID`` filters on the field, exactly, not on text that merely mentions the id (``StrategyLines``).

Every log record is one line: text from outside (an ``engine.log`` note, a strategy id, an exchange error message)
can carry newlines, NUL or terminal escapes, and a message that starts a new line could forge a record ("...
CRITICAL tradebaas.engine: kill switch"). ``OneLineFilter`` escapes control characters in the message after
redaction; a traceback from ``log.exception`` still follows on its own lines, as Python prints it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import logging.handlers
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(strategy_field)s: %(message)s"
#: A line's strategy field: `` [razor-3f9a1c]`` between the logger's name and the colon. It comes from the record's
#: ``strategy_id`` attribute (``log.info(..., extra=strategy_extra(sid))``), never from the message, so a message
#: cannot forge it and ``tradebaas logs --strategy ID`` can match it exactly (``strategy_of_line``).
LINE_HEAD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ +[^ :]+(?: \[(?P<strategy>[A-Za-z0-9_-]+)\])?: ")
_STRATEGY_ID = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 5

_SECRET_KV = re.compile(
    r"(?i)((?:access_|refresh_)?token|client_secret|secret|password|signature)([\"']?\s*[=:]\s*[\"']?)([^\s\"'&,}]+)"
)
_BEARER = re.compile(r"(?i)(bearer\s+)(\S+)")


class RedactFilter(logging.Filter):
    """Replaces known secrets and secret-looking values in a record's message with ``***``."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add_secret(self, secret: str | None) -> None:
        if secret and len(secret) >= 6:
            self.secrets.add(secret)

    def redact(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, "***")
        text = _SECRET_KV.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
        return _BEARER.sub(lambda m: f"{m.group(1)}***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not kill logging
            message = str(record.msg)
        redacted = self.redact(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


REDACT = RedactFilter()

#: C0 and C1 control characters, DEL, and the Unicode line and paragraph separators (``str.splitlines`` breaks on
#: all of them, and so may a log viewer).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape_control(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x00``, ``\\u2028``): one line,
    nothing for a terminal to interpret. Printable text, including non-ASCII and backslashes, is kept as is."""
    return _CONTROL.sub(_escape_one, text)


class OneLineFilter(logging.Filter):
    """Escapes control characters in a record's message (add it after ``RedactFilter``: it redacts the raw text).

    Idempotent: an escaped message has no control characters left, so a record passing several handlers that
    each carry this filter is escaped once."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not kill logging
            message = str(record.msg)
        escaped = escape_control(message)
        if escaped != message or record.args:
            record.msg, record.args = escaped, None
        return True


ONE_LINE = OneLineFilter()


def strategy_extra(strategy_id: str | None) -> dict[str, Any]:
    """``extra=`` for a log call about one strategy: its lines then carry the strategy field."""
    return {"strategy_id": strategy_id} if strategy_id else {}


def record_strategy(record: logging.LogRecord) -> str | None:
    """The strategy id a record is about (a valid id only: anything else is no field at all)."""
    sid = getattr(record, "strategy_id", None)
    return sid if isinstance(sid, str) and _STRATEGY_ID.match(sid) else None


class EngineFormatter(logging.Formatter):
    """``LOG_FORMAT`` with the strategy field filled in (empty for records about no strategy)."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        sid = record_strategy(record)
        record.strategy_field = f" [{sid}]" if sid else ""
        return super().formatMessage(record)


def line_head(line: str) -> re.Match[str] | None:
    """The head of a record's first line (time, level, logger, strategy field), or None for a line that is not
    the start of a record (a traceback's lines, a line from a process's stdio)."""
    return LINE_HEAD.match(line)


class StrategyLines:
    """``tradebaas logs --strategy ID``: whether each line of the log, read in order, belongs to strategy ``ID``.

    A record's first line belongs to it when its strategy field is exactly ``ID`` (``razor-1`` is not
    ``razor-12``, and a note that merely mentions the id is not about it); the lines that follow a record (its
    traceback) go with that record."""

    def __init__(self, strategy_id: str) -> None:
        self.strategy_id = strategy_id
        self._current = False

    def __call__(self, line: str) -> bool:
        head = line_head(line)
        if head is not None:
            self._current = head.group("strategy") == self.strategy_id
        return self._current


def add_filters(handler: logging.Handler) -> None:
    """The filters every engine log handler carries, in order: redact secrets, then make the message one line."""
    handler.addFilter(REDACT)
    handler.addFilter(ONE_LINE)


class CallbackHandler(logging.Handler):
    """Hands each record, as the ``log`` channel's data ``{ts_ms, level, logger, message, strategy_id}``, to a
    callback.

    The engine connects it to ``RpcServer.publish_threadsafe("log", ...)``. Records from the RPC/websockets
    machinery itself are skipped so that pushing a log record can never produce another one (no feedback loop).
    """

    def __init__(self, callback: Callable[[dict[str, Any]], None], level: int = logging.INFO) -> None:
        super().__init__(level)
        self.callback = callback
        add_filters(self)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("websockets", "tradebaas.rpc", "asyncio")):
            return
        try:
            self.callback(
                {
                    "ts_ms": int(record.created * 1000),
                    "level": record.levelname,
                    "logger": record.name,
                    "message": record.getMessage(),
                    "strategy_id": record_strategy(record),
                }
            )
        except Exception:
            self.handleError(record)


class DeferredHandler(logging.Handler):
    """Runs the real handlers (the log file, stderr, the ``log`` channel) on the engine's event loop, one record per
    loop iteration, in order, instead of inside the logging call.

    Why: a line cost 0.1-0.3 ms (redaction, formatting, the write and its flush, the rollover check, the ``log``
    channel's copy), and the live loop writes "decision ..." and "order sent ..." just before an order leaves. Here
    the caller pays for the record, its message (rendered at once: arguments may change later) and an append; the
    lines are written by the loop in the next iterations, which on the order path is while it waits for the
    exchange's answer (an answer arriving meanwhile waits for at most one line). Not a thread: a writer thread
    takes the GIL whenever the loop releases it (every SQLite call on the way to the exchange), and the loop then
    waits for it. Redaction and one-line escaping stay with the target handlers' filters.

    Without a loop (``use_loop(None)``: before the engine runs, after it stopped, in tools and tests) records are
    handled at once. A record from another thread (a strategy's own) is queued and handed to the loop.
    ``flush()`` and ``close()`` (``logging.shutdown`` at exit) write what is pending at once. A SIGKILL loses the
    records not yet written, normally none older than the loop's current iteration: recovery reads the journal,
    never the log.
    """

    def __init__(self, *targets: logging.Handler) -> None:
        super().__init__()
        self.targets: list[logging.Handler] = list(targets)
        self._pending: collections.deque[logging.LogRecord] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._scheduled = False

    def add_target(self, handler: logging.Handler) -> None:
        self.targets.append(handler)

    def remove_target(self, handler: logging.Handler) -> None:
        if handler in self.targets:
            self.targets.remove(handler)

    def use_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Write records on ``loop`` from now on (called from that loop's thread), or at once with None."""
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._loop = loop
            self._loop_thread = threading.get_ident() if loop is not None else 0
        if loop is None:
            self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        # Handler.handle holds self.lock around emit
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not kill logging (as the filters treat it)
            message = str(record.msg)
        record.msg, record.args = message, None
        loop = self._loop
        if loop is None or loop.is_closed():
            self._write(record)
            return
        self._pending.append(record)
        if self._scheduled:
            return
        self._scheduled = True
        try:
            if threading.get_ident() == self._loop_thread:
                loop.call_soon(self._write_one)
            else:
                loop.call_soon_threadsafe(self._write_one)
        except RuntimeError:  # the loop closed meanwhile
            self._scheduled = False
            self._write_pending()

    def _write_one(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                self._write(self._pending.popleft())
            if self._pending and self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon(self._write_one)
            else:
                self._scheduled = False
                self._write_pending()

    def _write(self, record: logging.LogRecord) -> None:
        for handler in tuple(self.targets):
            if record.levelno >= handler.level:
                handler.handle(record)

    def _write_pending(self) -> None:
        while self._pending:
            self._write(self._pending.popleft())

    def flush(self) -> None:
        """Write every pending record now, then flush the target handlers."""
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
        for handler in tuple(self.targets):
            handler.flush()

    def close(self) -> None:
        self.flush()
        super().close()


def defer_to_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    """Have the root logger's ``DeferredHandler`` (``setup_logging``) write on ``loop`` (None: at once again)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, DeferredHandler):
            handler.use_loop(loop)


def attach(handler: logging.Handler) -> None:
    """Add ``handler`` where the engine's records go: behind the root logger's ``DeferredHandler`` when there is
    one (so it runs when the loop writes the record, not inside the logging call), else on the root logger."""
    root = logging.getLogger()
    bg = next((h for h in root.handlers if isinstance(h, DeferredHandler)), None)
    if bg is not None:
        bg.add_target(handler)
    else:
        root.addHandler(handler)


def detach(handler: logging.Handler) -> None:
    root = logging.getLogger()
    for h in root.handlers:
        if isinstance(h, DeferredHandler):
            h.remove_target(handler)
    root.removeHandler(handler)


def setup_logging(log_file: Path, *, to_stderr: bool = False, level: int = logging.INFO) -> logging.Logger:
    """Route the root logger to a rotating ``log_file`` (and stderr for ``--foreground`` under systemd), through a
    ``DeferredHandler`` (the engine hands it its loop: ``defer_to_loop``)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        if isinstance(h, DeferredHandler):
            h.close()
    formatter = EngineFormatter()
    file_handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8"
    )
    file_handler.setFormatter(formatter)
    add_filters(file_handler)
    targets: list[logging.Handler] = [file_handler]
    if to_stderr:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        add_filters(stream)
        targets.append(stream)
    root.addHandler(DeferredHandler(*targets))
    root.setLevel(level)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return logging.getLogger("tradebaas.engine")
