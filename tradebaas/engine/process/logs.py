"""The engine's logging: a rotating file under TRADEBAAS_HOME/logs, secrets redacted, records pushed over RPC.

Why a redacting filter instead of "be careful": tokens and API secrets pass through libraries (URLs with
``?token=``, auth payloads) that we do not control; the filter masks the engine's own token, any registered
secret, and ``token=``/``secret=``-looking key/value pairs in every record before any handler formats it.

Every log record is one line: text from outside (an ``engine.log`` note, a strategy id, an exchange error message)
can carry newlines, NUL or terminal escapes, and a message that starts a new line could forge a record ("...
CRITICAL tradebaas.engine: kill switch"). ``OneLineFilter`` escapes control characters in the message after
redaction; a traceback from ``log.exception`` still follows on its own lines, as Python prints it.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
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


def add_filters(handler: logging.Handler) -> None:
    """The filters every engine log handler carries, in order: redact secrets, then make the message one line."""
    handler.addFilter(REDACT)
    handler.addFilter(ONE_LINE)


class CallbackHandler(logging.Handler):
    """Hands each record, as the ``log`` channel's data ``{ts_ms, level, logger, message}``, to a callback.

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
                }
            )
        except Exception:
            self.handleError(record)


def setup_logging(log_file: Path, *, to_stderr: bool = False, level: int = logging.INFO) -> logging.Logger:
    """Route the root logger to a rotating ``log_file`` (and stderr for ``--foreground`` under systemd)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    formatter = logging.Formatter(LOG_FORMAT)
    file_handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8"
    )
    file_handler.setFormatter(formatter)
    add_filters(file_handler)
    root.addHandler(file_handler)
    if to_stderr:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        add_filters(stream)
        root.addHandler(stream)
    root.setLevel(level)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return logging.getLogger("tradebaas.engine")
