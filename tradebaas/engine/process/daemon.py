"""Start, stop and inspect the engine process of one TRADEBAAS_HOME.

Invariants:
- one engine per home: the engine holds an exclusive ``fcntl.flock`` on ``engine.lock`` for its whole life. The
  OS drops the lock when the process dies, however it dies, so a held lock means a live engine;
- ``engine.json`` (pid, port, token, version, started_ts_ms; mode 0600, written atomically) exists while the
  engine serves. After a SIGKILL it stays behind: it is *stale* when its pid is dead or the lock is free, and
  the next engine replaces it. A clean stop removes it;
- an engine always knows its exchange: ``--exchange``, else the one its journal remembers (the last start's, so a
  restart by systemd trades where the last start did), else ``[engine] exchange`` of ``tradebaas.toml``; with none
  it does not start (``choose_exchange``) rather than run without an exchange and leave strategies ``starting``;
- a detached engine is its own session leader (``start_new_session``) with stdin from /dev/null and
  stdout/stderr appended to ``logs/engine.stdio.log``: closing the terminal, the kernel or JupyterLab cannot
  take it down. ``start_detached`` returns only once the RPC answers ``engine.ping``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradebaas.collector import freeze_long_lived
from tradebaas.connection import (
    ConnectionInfo,
    pid_alive,
    read_connection_file,
    remove_connection_file,
    write_connection_file,
)
from tradebaas.errors import UserError
from tradebaas.home import ENV_VAR, Home

if TYPE_CHECKING:
    from tradebaas.engine.process.app import Engine

LOCK_WAIT_S = 2.0  # an engine retries the lock this long: a status probe may hold it for a moment
#: How long a thread may keep the GIL while another waits for it (Python's default is 5 ms). Every time the live
#: loop lets go of it (each SQLite call, each socket write) a busy thread may keep it that long. When deployed
#: strategies decided in threads, 100 strategies beside one spinning 300 ms per candle saw a tick-to-decision p99
#: of 314 ms at 5 ms, 145 ms at 0.5 ms (bench/scale.py); they decide in processes now (``strategy_process``), and
#: the threads left (the recorder's Parquet writes, the journal's checkpoint) still get the loop's GIL back soon.
GIL_SWITCH_INTERVAL_S = 0.0005


class EngineLock:
    """The exclusive flock on engine.lock that makes an engine the only one of its home."""

    def __init__(self, home: Home) -> None:
        self.path = home.engine_lock
        self._fd: int | None = None

    def acquire(self, wait_s: float = 0.0) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return True
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                return False
            time.sleep(0.05)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def lock_held(home: Home) -> bool:
    """True if some process holds the engine lock (probing takes it for an instant; engines retry)."""
    if not home.engine_lock.exists():
        return False
    probe = EngineLock(home)
    if probe.acquire(0):
        probe.release()
        return False
    return True


def engine_state(home: Home) -> tuple[str, ConnectionInfo | None]:
    """("running", info) | ("starting", None) | ("stale", info) | ("stopped", None)."""
    info = read_connection_file(home)
    held = lock_held(home)
    if info is not None:
        if held and pid_alive(info.pid):
            return "running", info
        return "stale", info
    return ("starting", None) if held else ("stopped", None)


# -- its exchange ----------------------------------------------------------------------------------------------
EXCHANGE_CHOICES = "sim | ws://host:port | deribit-testnet | deribit"


def remembered_exchange(home: Home) -> str | None:
    """The exchange the journal of ``home`` remembers (the last engine start's), or None (no journal yet). A journal
    that cannot be read raises its ``JournalError`` (corrupt, newer schema: the message says what to do), which
    is what the start would refuse with anyway."""
    import sqlite3

    from tradebaas.engine.journal.database import Journal

    if not home.journal_path.exists() or home.journal_path.stat().st_size == 0:
        return None
    with Journal.open(home.journal_path, readonly=True) as journal:
        try:
            value = journal.get_meta("exchange")
        except sqlite3.OperationalError:  # created but never migrated (no meta table yet): nothing remembered
            return None
    return str(value) if isinstance(value, str) and value.strip() else None


def configured_exchange(home: Home) -> str | None:
    """``[engine] exchange`` of ``home``'s ``tradebaas.toml`` (None when the file or the key is absent)."""
    import tomllib

    path = home.config_file
    if not path.exists():
        return None
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("engine", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    if not isinstance(table, dict):
        raise UserError(f"{path}: [engine] must be a table")
    value = table.get("exchange")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{path} [engine] exchange must be one of {EXCHANGE_CHOICES}, got {value!r}")
    return value.strip()


def choose_exchange(home: Home, given: str | None) -> str:
    """The exchange an engine of ``home`` connects to: ``given`` (``--exchange``), else the journal's, else the
    config's; UserError with the fix when there is none (a fresh home, nothing configured)."""
    chosen = (given or "").strip() or remembered_exchange(home) or configured_exchange(home)
    if not chosen:
        raise UserError(
            "no exchange for this engine: give one with --exchange (sim = the local simulator of `tradebaas sim` "
            "or `tradebaas up`; ws://host:port; deribit-testnet; deribit), e.g. `tradebaas engine start --exchange "
            f"sim`, or set it once in {home.config_file}: [engine] exchange = \"sim\""
        )
    return chosen


# -- the engine, assembled -------------------------------------------------------------------------------------
def build_engine(home: Home, exchange: str | None = None, *, port: int = 0) -> Engine:
    """Open the journal and assemble the engine from its services, in the order they start.

    The list is the whole engine: the journal's background checkpoint (``journal/checkpoint.py``), the live loop
    (exchange link, strategies, reconciliation), the market recorder (Parquet recordings of what the live loop
    saw), the notification service, the report service (scheduler and runs). ``engine/api.py`` binds the RPC
    methods to their handlers; a method not listed there is not served.
    A journal that cannot be trusted (corrupt, locked, newer schema) stops the start with a clear error.
    """
    from tradebaas.engine import api
    from tradebaas.engine.journal.checkpoint import WalCheckpointer
    from tradebaas.engine.journal.database import Journal
    from tradebaas.engine.live.recorder import MarketRecorder
    from tradebaas.engine.live.supervisor import Supervisor
    from tradebaas.engine.process.app import Engine
    from tradebaas.reports.notifications import NotificationService
    from tradebaas.reports.scheduler import ReportService

    # WAL + synchronous=NORMAL: a commit survives a crash or SIGKILL of the process (what crash-only recovery
    # needs) without an fsync on the order path; after a power cut the last commits may be lost, and the next
    # start recovers them from the exchange (labels, fills) like any other gap.
    journal = Journal.open(home.journal_path, check=True, synchronous="NORMAL")
    engine = Engine(home, journal, exchange=exchange, port=port)
    live = Supervisor(engine)
    notifications = NotificationService(engine)
    reports = ReportService(engine, notifications=notifications)
    recorder = MarketRecorder(engine)
    for service in (WalCheckpointer(journal), live, recorder, notifications, reports):
        engine.add_service(service)
    api.register(engine.registry, {**api.EngineApi(engine, live, recorder).handlers(), **reports.handlers()})
    return engine


# -- foreground engine -----------------------------------------------------------------------------------------
def run_foreground(home: Home, exchange: str | None = None, *, detached_child: bool = False, port: int = 0) -> int:
    """Be the engine: take the lock, log to logs/engine.log, serve until SIGTERM/SIGINT. Returns an exit code."""
    from tradebaas.engine.live.recorder import prefer_system_arrow_pool
    from tradebaas.engine.process.logs import setup_logging

    prefer_system_arrow_pool()  # before anything loads pyarrow: day-file rewrites give their memory back
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # the loop gets the GIL back quickly from the engine's threads
    home.ensure()
    lock = EngineLock(home)
    if not lock.acquire(LOCK_WAIT_S):
        raise UserError(_already_running_message(home))
    try:
        log = setup_logging(home.engine_log, to_stderr=not detached_child)
        stale = read_connection_file(home)
        if stale is not None:
            log.warning("replacing stale engine.json (pid %d, port %d) left by an engine that did not stop cleanly",
                        stale.pid, stale.port)
            remove_connection_file(home)
        try:
            engine = build_engine(home, choose_exchange(home, exchange), port=port)
        except UserError as exc:
            log.error("engine failed: %s", exc)
            raise

        def on_ready(eng: Engine) -> None:
            from tradebaas._version import __version__

            write_connection_file(
                home,
                ConnectionInfo(pid=os.getpid(), port=eng.server.port, token=eng.token, version=__version__,
                               started_ts_ms=eng.started_ts_ms, readonly_token=eng.readonly_token),
            )
            # Everything alive now (modules, pandas and pyarrow, the services) lives as long as the engine: out
            # of the cyclic collector's sight, and so is what survives each full collection (tradebaas.collector)
            freeze_long_lived(asyncio.get_running_loop())

        try:
            asyncio.run(engine.run(on_ready))
        except UserError as exc:
            log.error("engine failed: %s", exc)
            raise
        except Exception:
            log.exception("engine crashed")
            raise
        finally:
            remove_connection_file(home, pid=os.getpid())
        return 0
    finally:
        lock.release()


def _already_running_message(home: Home) -> str:
    info = read_connection_file(home)
    where = f"pid {info.pid}, port {info.port}" if info else "starting up"
    return f"an engine is already running for {home.root} ({where}); stop it with `tradebaas engine stop`"


# -- detached start, stop, status ------------------------------------------------------------------------------
def start_detached(home: Home, exchange: str | None = None, *, timeout_s: float = 30.0) -> ConnectionInfo:
    """Spawn a detached engine for ``home`` and return once its RPC answers; UserError if it cannot start."""
    from tradebaas.rpc.client import ping_once

    home.ensure()
    state, info = engine_state(home)
    if state in ("running", "starting"):
        raise UserError(_already_running_message(home))
    cmd = [sys.executable, "-m", "tradebaas.cli", "engine", "start", "--foreground", "--detached-child"]
    if exchange:
        cmd += ["--exchange", exchange]
    env = dict(os.environ)
    env[ENV_VAR] = str(home.root)
    env["PYTHONUNBUFFERED"] = "1"
    stdio_path = home.engine_stdio_log
    offset = stdio_path.stat().st_size if stdio_path.exists() else 0
    with open(stdio_path, "ab") as stdio:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio, env=env, cwd=home.root,
            start_new_session=True, close_fds=True,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            reason = _last_error_line(stdio_path, offset) or f"exit code {code}; see {home.engine_log}"
            raise UserError(f"engine failed to start: {reason}")
        info = read_connection_file(home)
        if info is not None and info.pid == proc.pid and ping_once(info.url, info.token, timeout_s=2.0):
            return info
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    raise UserError(f"engine did not answer within {timeout_s:.0f}s; see {home.engine_log}")


def _last_error_line(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()
    return lines[-1] if lines else ""


def stop(home: Home, *, timeout_s: float = 30.0) -> str:
    """Stop the engine of ``home`` gracefully (SIGTERM, SIGKILL after ``timeout_s``). Returns what happened."""
    state, info = engine_state(home)
    if state == "stopped":
        return "no engine running"
    if state == "stale":
        remove_connection_file(home)
        return f"no engine running (removed stale engine.json of pid {info.pid if info else '?'})"
    if info is None:  # starting: wait a moment for its connection file
        deadline = time.monotonic() + timeout_s
        while info is None and lock_held(home) and time.monotonic() < deadline:
            time.sleep(0.05)
            info = read_connection_file(home)
        if info is None:
            return "no engine running"
    os.kill(info.pid, signal.SIGTERM)
    if _wait_gone(home, info.pid, timeout_s):
        return f"engine stopped (pid {info.pid})"
    with contextlib.suppress(ProcessLookupError):
        os.kill(info.pid, signal.SIGKILL)
    _wait_gone(home, info.pid, 10.0)
    remove_connection_file(home, pid=info.pid)
    return f"engine did not stop within {timeout_s:.0f}s and was killed (pid {info.pid})"


def _wait_gone(home: Home, pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid) or not lock_held(home):
            # the lock drops when the process's descriptors close: engine.json is gone by then on a clean stop
            return True
        time.sleep(0.05)
    return False


def status(home: Home, *, timeout_s: float = 3.0) -> dict[str, Any]:
    """What ``engine status`` shows: the engine's own ``engine.status`` when it answers, else why not."""
    state, info = engine_state(home)
    base: dict[str, Any] = {"home": str(home.root), "state": state, "running": state == "running"}
    if state != "running" or info is None:
        if state == "stale" and info is not None:
            base["stale_pid"] = info.pid
        return base
    base.update(info.public())
    base["url"] = info.url
    from tradebaas.rpc.client import EngineClient

    try:
        with EngineClient(url=info.url, token=info.token, timeout=timeout_s, reconnect=False) as client:
            base.update(client.status())
    except Exception as exc:  # the process lives but does not answer: say so, don't hide it
        base["health"] = "unresponsive"
        base["error"] = str(exc)
    return base
