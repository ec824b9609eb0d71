"""The simulator's snapshot file under TRADEBAAS_HOME/sim (``state.json``): what the exchange holds survives a restart.

Why: a real exchange does not forget orders, positions or balances when a client's connection (or the
simulator process) goes away, and the live loop's reconciliation is tested against exactly that. The state file
holds ``SimExchange.to_state()``, the simulated clock, the data source it belongs to, the last journal record it
includes (``journal_seq``) and the id reservation (``reserved``: see ``durable``); the journal holds every change
after it. Tokens are not kept (clients log in again, as after any reconnect). Writes are atomic (temp file +
fsync + ``os.replace`` + fsync of the directory), so a crash leaves either the old or the new state, never a torn
one. Files without ``journal_seq``/``reserved`` (older simulators) load with 0/None.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .codec import loads

STATE_VERSION = 1


@dataclass(slots=True)
class SavedState:
    clock_ms: int
    data_name: str
    exchange: dict[str, Any]
    extra: dict[str, Any]
    journal_seq: int = 0
    reserved: dict[str, Any] | None = None


def save(path: Path, state: SavedState) -> int:
    """Write ``state`` atomically and durably (0600: the file names accounts); returns its size in bytes."""
    payload = {"version": STATE_VERSION, "clock_ms": state.clock_ms, "data": state.data_name,
               "exchange": state.exchange, "extra": state.extra, "journal_seq": state.journal_seq,
               "reserved": state.reserved}
    data = _dumps(payload)
    write_atomic(path, data)
    return len(data)


def _dumps(obj: object) -> bytes:
    try:
        import orjson
    except ImportError:  # pragma: no cover
        return json.dumps(obj, separators=(",", ":")).encode()
    return orjson.dumps(obj)


def write_atomic(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if isinstance(text, str):
        text = text.encode()
    with os.fdopen(fd, "wb") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a power cut could otherwise bring back the old name)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: Path) -> SavedState | None:
    """The saved state, or None when there is none. A corrupt file is an error, never silently reset."""
    if not path.exists():
        return None
    try:
        raw = loads(path.read_bytes())  # orjson when installed: a large state loads several times faster
    except json.JSONDecodeError as exc:
        raise ValueError(f"simulator state {path} is corrupt ({exc}); move it away to start fresh") from None
    if raw.get("version") != STATE_VERSION:
        raise ValueError(f"simulator state {path} has unknown version {raw.get('version')!r}")
    reserved = raw.get("reserved")
    return SavedState(int(raw["clock_ms"]), str(raw.get("data", "")), dict(raw.get("exchange") or {}),
                      dict(raw.get("extra") or {}), int(raw.get("journal_seq") or 0),
                      dict(reserved) if reserved else None)
