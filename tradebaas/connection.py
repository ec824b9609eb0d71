"""The connection file ``TRADEBAAS_HOME/engine.json``: how a client finds the engine of a home.

Like jupyter_client's ``connect.py`` for kernels, this module owns the file's format and its life; the engine's
daemon writes and removes it, the CLI and both RPC clients read it. It imports nothing from ``tradebaas.engine``,
so notebook-side code can find an engine without importing the engine.

Promises: the file is written atomically (tmp + fsync + rename) with mode 0600 from its first byte, so a reader
never sees half a file or a token readable by others; a missing or unreadable file reads as ``None``. It names a
pid; ``pid_alive`` tells whether that process still runs (a SIGKILLed engine leaves the file behind: *stale*).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tradebaas.home import Home


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """The content of engine.json: everything a client needs to reach the engine."""

    pid: int
    port: int
    token: str
    version: str
    started_ts_ms: int
    host: str = "127.0.0.1"
    #: For reports and dashboards: a connection made with it may call only read methods (docs/rpc.md).
    readonly_token: str = ""

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConnectionInfo:
        return cls(
            pid=int(d["pid"]), port=int(d["port"]), token=str(d["token"]), version=str(d.get("version", "")),
            started_ts_ms=int(d.get("started_ts_ms", 0)), host=str(d.get("host", "127.0.0.1")),
            readonly_token=str(d.get("readonly_token", "")),
        )

    def public(self) -> dict[str, Any]:
        """Without the tokens (for status output and logs)."""
        d = asdict(self)
        d.pop("token")
        d.pop("readonly_token")
        return d


def read_connection_file(home: Home) -> ConnectionInfo | None:
    """The engine.json of ``home``, or None when absent or unreadable (a half-written file is never seen)."""
    try:
        return ConnectionInfo.from_dict(json.loads(home.engine_json.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, OSError):
        return None


def write_connection_file(home: Home, info: ConnectionInfo) -> None:
    """Atomically (tmp + fsync + rename) write engine.json with mode 0600 from the first byte."""
    tmp = home.engine_json.with_name(f".engine.json.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps(asdict(info), indent=2).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, home.engine_json)


def remove_connection_file(home: Home, pid: int | None = None) -> None:
    """Remove engine.json (only if it belongs to ``pid`` when given)."""
    if pid is not None:
        info = read_connection_file(home)
        if info is not None and info.pid != pid:
            return
    with contextlib.suppress(FileNotFoundError):
        home.engine_json.unlink()


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (zombies count as dead: their lock and sockets are gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
