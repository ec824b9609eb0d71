"""The engine process: one asyncio loop owning the journal, the RPC server and the services that trade.

``Engine.run()`` is the whole life of the process: start the RPC server, journal ``engine.started``, start the
services in order, report ready (the daemon then writes ``engine.json``), wait for SIGTERM/SIGINT or
``engine.shutdown``, then stop the services in reverse order and journal ``engine.stopped``. A crash skips the
shutdown half; that is fine by design (crash-only recovery: the next start reconciles from the journal and the
exchange).

The engine is assembled in plain sight by ``engine/process/daemon.py`` (``build_engine``): it opens the journal,
constructs the ``Engine``, then the services in a fixed list, and binds the RPC methods of ``engine/api.py``. What
a service may use of the engine is ``EngineContext`` below: nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

from tradebaas._version import __version__
from tradebaas.engine.journal.database import Journal, now_ms
from tradebaas.engine.process import logs
from tradebaas.engine.process.logs import REDACT, CallbackHandler
from tradebaas.home import Home
from tradebaas.rpc.protocol import Registry
from tradebaas.rpc.server import RpcServer

log = logging.getLogger("tradebaas.engine")

Listener = Callable[[str, Any], None]


class EngineContext(Protocol):
    """What a service may use of the engine (the services are constructed with it)."""

    home: Home
    journal: Journal
    #: The ``--exchange`` the engine was started with (None: the one the journal remembers, else ``sim``).
    exchange: str | None
    #: The read-only RPC token (for the clients the engine starts: report notebooks).
    readonly_token: str
    #: The ``exchange`` part of ``engine.status``; the live loop replaces it with its own.
    exchange_status: Callable[[], dict[str, Any]]

    def publish(self, channel: str, data: Any, *, internal: bool = False) -> int:
        """Push an event to RPC subscribers of ``channel`` and to in-process listeners (``internal``: listeners
        only, for high-volume data no client asked to see, such as the market's public trades)."""
        ...

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(channel, data)`` for every published event; returns a remover."""
        ...

    def hold_pushes(self) -> Callable[[], None]:
        """Queue RPC pushes without writing them until the returned release is called (``RpcServer.hold_writes``)."""
        ...

    def status(self) -> dict[str, Any]: ...


class Service(Protocol):
    """A part of the engine with a life: started in list order once the RPC serves, stopped in reverse."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Engine:
    """Owns the loop's services. Construct, then ``await run()`` inside ``asyncio.run``."""

    def __init__(self, home: Home, journal: Journal, *, exchange: str | None = None, port: int = 0,
                 token: str | None = None) -> None:
        self.home = home
        self.journal = journal
        self.exchange = exchange
        self.token = token or secrets.token_urlsafe(32)
        self.readonly_token = secrets.token_urlsafe(32)
        REDACT.add_secret(self.token)
        REDACT.add_secret(self.readonly_token)
        self.registry = Registry()
        self.server = RpcServer(self.registry, self.token, port=port, readonly_token=self.readonly_token)
        self.services: list[Service] = []
        self._listeners: list[Listener] = []
        self.started_ts_ms = 0
        self._started_monotonic = 0.0
        self._stop_event: asyncio.Event | None = None
        self._stop_reason = ""
        self._log_handler: CallbackHandler | None = None
        self.exchange_status: Callable[[], dict[str, Any]] = self._exchange_placeholder

    # -- wiring --------------------------------------------------------------------------------------------
    def add_service(self, service: Service) -> None:
        self.services.append(service)

    def publish(self, channel: str, data: Any, *, internal: bool = False) -> int:
        """Push an event to RPC subscribers of ``channel`` (``strategy.<id>``, ``orders``, ``trades``, ...) and
        to in-process listeners (notifications, the recorder). A failing listener never stops publishing."""
        for listener in self._listeners:
            try:
                listener(channel, data)
            except Exception:
                log.exception("event listener failed on %s", channel)
        return 0 if internal else self.server.publish(channel, data)

    def hold_pushes(self) -> Callable[[], None]:
        return self.server.hold_writes()

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(channel, data)`` for every published event, subscribed or not; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def request_shutdown(self) -> dict[str, bool]:
        """Graceful stop requested over RPC (same path as SIGTERM); answers before the engine goes away."""
        asyncio.get_running_loop().call_later(0.05, self.request_stop, "engine.shutdown over RPC")
        return {"stopping": True}

    def _exchange_placeholder(self) -> dict[str, Any]:
        return {
            "name": self.exchange or "none",
            "url": None,
            "connected": False,
            "since_ts_ms": None,
            "reconnects": 0,
            "last_error": None,
        }

    def status(self) -> dict[str, Any]:
        """The answer of ``engine.status`` (docs/rpc.md)."""
        strategies = self.journal.strategy_counts()
        journal_info = {
            "path": str(self.journal.path),
            "schema_version": self.journal.schema_version,
            "last_event_id": self.journal.last_event_id(),
        }
        return {
            "health": "ok",
            "version": __version__,
            "pid": os.getpid(),
            "port": self.server.port,
            "home": str(self.home.root),
            "started_ts_ms": self.started_ts_ms,
            "uptime_s": round(time.monotonic() - self._started_monotonic, 3) if self._started_monotonic else 0.0,
            "exchange": self.exchange_status(),
            "strategies": strategies,
            "journal": journal_info,
            "clients": len(self.server.sessions),
        }

    # -- life ----------------------------------------------------------------------------------------------
    def request_stop(self, reason: str = "") -> None:
        """Ask the engine to shut down gracefully (idempotent, loop thread only)."""
        if self._stop_event is not None and not self._stop_event.is_set():
            self._stop_reason = reason
            log.info("stopping: %s", reason or "requested")
            self._stop_event.set()

    async def run(self, on_ready: Callable[[Engine], None] | None = None) -> None:
        """Run until asked to stop. ``on_ready`` is called once the RPC answers (the daemon writes engine.json)."""
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            port = await self.server.start()
            self.started_ts_ms = now_ms()
            self._started_monotonic = time.monotonic()
            self._attach_log_channel()
            self.journal.append(
                "engine.started",
                {"pid": os.getpid(), "port": port, "version": __version__, "exchange": self.exchange},
                ts_ms=self.started_ts_ms,
            )
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
            started: list[Service] = []
            try:
                for service in self.services:
                    await service.start()
                    started.append(service)
                log.info("engine %s ready on 127.0.0.1:%d (pid %d, home %s)", __version__, port, os.getpid(),
                         self.home.root)
                if on_ready is not None:
                    on_ready(self)
                await self._stop_event.wait()
            finally:
                for service in reversed(started):
                    try:
                        await service.stop()
                    except Exception:
                        log.exception("service %s failed to stop cleanly", getattr(service, "name", service))
            self.journal.append(
                "engine.stopped",
                {"pid": os.getpid(), "reason": self._stop_reason,
                 "uptime_s": round(time.monotonic() - self._started_monotonic, 3)},
                ts_ms=now_ms(),
            )
            log.info("engine stopped")
        finally:
            self._detach_log_channel()
            await self.server.stop()
            self.journal.close()

    def _attach_log_channel(self) -> None:
        self._log_handler = CallbackHandler(lambda rec: self.server.publish_threadsafe("log", rec))
        logs.attach(self._log_handler)
        logs.defer_to_loop(asyncio.get_running_loop())  # lines are written between the loop's other work

    def _detach_log_channel(self) -> None:
        logs.defer_to_loop(None)
        if self._log_handler is not None:
            logs.detach(self._log_handler)
            self._log_handler = None
