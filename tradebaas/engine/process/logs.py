"""The engine's logging: a rotating file under TRADEBAAS_HOME/logs, secrets redacted, records pushed over RPC.

Why a redacting filter instead of "be careful": tokens and API secrets pass through libraries (URLs with
``?token=``, auth payloads) that we do not control; the filter masks the engine's own token, any registered
secret, and ``token=``/``secret=``-looking key/value pairs in every record before any handler formats it.
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


class CallbackHandler(logging.Handler):
    """Hands each record, as the ``log`` channel's data ``{ts_ms, level, logger, message}``, to a callback.

    The engine connects it to ``RpcServer.publish_threadsafe("log", ...)``. Records from the RPC/websockets
    machinery itself are skipped so that pushing a log record can never produce another one (no feedback loop).
    """

    def __init__(self, callback: Callable[[dict[str, Any]], None], level: int = logging.INFO) -> None:
        super().__init__(level)
        self.callback = callback
        self.addFilter(REDACT)

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
    file_handler.addFilter(REDACT)
    root.addHandler(file_handler)
    if to_stderr:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        stream.addFilter(REDACT)
        root.addHandler(stream)
    root.setLevel(level)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return logging.getLogger("tradebaas.engine")
