"""The synchronous engine client behind ``tradebaas.connect()``: safe in Jupyter kernels and widget callbacks.

Why threads and not asyncio: a Jupyter kernel already runs an event loop, so a client that needs its own loop
forces nest-asyncio hacks. Here ONE reader thread owns the socket and hands pushed events to ONE callback thread.
Callers block only on their own future, so ``call()`` works from any thread, including ipywidgets callbacks and
subscription callbacks (which may call back into the engine), and a slow callback delays only other callbacks,
never replies.

The rules of the conversation (framing, request ids, subscriptions, what to resend after a reconnect, the back-off)
live in the sans-I/O ``tradebaas.rpc.session.ClientSession``, shared with the async client; this module only moves
frames between it and a socket, and wakes threads.

The client always reconnects: when the connection drops (the engine restarted, stopped, crashed, a proxy reset
it), the reader thread re-reads ``engine.json`` (the port and token change on restart), reconnects with a capped
back-off, re-subscribes every channel, then runs the ``on_reconnect`` callbacks (the control panel reloads its
state there). Every failure on the way (refused, reset during the handshake, wrong token, the resubscribe frame
failing) is retried until ``close()``. Calls made while disconnected wait for the reconnection up to their
timeout, then raise ``EngineNotRunning``; calls in flight when it dropped raise ``ConnectionLost``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tradebaas.connection import pid_alive, read_connection_file
from tradebaas.errors import EngineNotRunning, UserError
from tradebaas.home import Home, get_home
from tradebaas.rpc.facade import EngineFacade
from tradebaas.rpc.session import (
    Callback,
    ClientSession,
    ConnectionLost,
    Event,
    State,
    answer_result,
    apply_events,
)

__all__ = ["ConnectionLost", "EngineClient", "Subscription", "connect", "ping_once", "wait_for_engine"]

log = logging.getLogger("tradebaas.rpc.client")

DEFAULT_TIMEOUT_S = 10.0
MAX_FRAME_BYTES = 64 << 20  # answers such as trades.list can be large
RECONNECT_OPEN_TIMEOUT_S = 5.0


#: A token for clients the engine starts itself (report notebooks get the read-only one here).
TOKEN_ENV_VAR = "TRADEBAAS_ENGINE_TOKEN"


def resolve_target(home: Home | str | None, url: str | None, token: str | None) -> tuple[str, str]:
    """(url, token) from explicit values or from ``engine.json`` of the home; EngineNotRunning if none runs. A token
    in ``TRADEBAAS_ENGINE_TOKEN`` wins over engine.json's (the engine gives its report notebooks the read-only one)."""
    token = token or os.environ.get(TOKEN_ENV_VAR) or None
    if url is not None:
        if token is None:
            info = read_connection_file(get_home(home))
            if info is None:
                raise UserError("connect(url=...) needs token=... (see `tradebaas engine status --json`)")
            token = info.token
        return url, token
    h = get_home(home)
    info = read_connection_file(h)
    if info is None:
        raise EngineNotRunning(
            f"no engine running for {h.root} (no engine.json); start one with `tradebaas engine start`"
        )
    if not pid_alive(info.pid):
        raise EngineNotRunning(
            f"no engine running for {h.root} (engine.json is stale: pid {info.pid} is gone); "
            "start one with `tradebaas engine start`"
        )
    return info.url, token or info.token


def socket_options(token: str, timeout_s: float) -> dict[str, Any]:
    """The WebSocket options both clients (sync and async) connect with."""
    return {
        "additional_headers": {"Authorization": f"Bearer {token}"},
        "open_timeout": timeout_s,
        "close_timeout": 2,
        "max_size": MAX_FRAME_BYTES,
        "compression": None,
        "proxy": None,
        "user_agent_header": None,
    }


#: What opening a socket may raise besides a refusal: the peer reset or closed it during the handshake
#: (``InvalidMessage``, ``EOFError``, ``ConnectionResetError``), timeouts, anything else websockets reports.
CONNECT_ERRORS = (WebSocketException, OSError, TimeoutError, EOFError)


def connect_error(url: str, exc: BaseException) -> UserError:
    """A failed connection as the readable error both clients raise."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status in (401, 403):
            return UserError(f"the engine at {url} refused the connection (HTTP {status}: wrong token?)")
        return EngineNotRunning(f"the engine at {url} answered HTTP {status}")
    return EngineNotRunning(f"cannot reach the engine at {url} ({exc or type(exc).__name__})")


def open_socket(url: str, token: str, timeout_s: float) -> ClientConnection:
    """One authenticated WebSocket, or a readable error."""
    try:
        return ws_connect(url, **socket_options(token, timeout_s), legacy=True)
    except CONNECT_ERRORS as exc:
        raise connect_error(url, exc) from exc


def ping_once(url: str, token: str, timeout_s: float = 2.0) -> bool:
    """True if an engine at ``url`` answers ``engine.ping`` (used to wait for a starting engine)."""
    try:
        ws = open_socket(url, token, timeout_s)
    except UserError:
        return False
    try:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "engine.ping"}))
        return json.loads(ws.recv(timeout=timeout_s)).get("result") == "pong"
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            ws.close()


class Subscription:
    """Handle returned by ``subscribe``; ``cancel()`` removes the callback."""

    def __init__(self, client: EngineClient, channel: str, callback: Callback) -> None:
        self.client, self.channel, self.callback = client, channel, callback

    def cancel(self) -> None:
        self.client.unsubscribe(self.channel, self.callback)


Answer = Future[dict[str, Any]]


class EngineClient(EngineFacade):
    """A connection to one engine. Thread-safe. Use ``tradebaas.connect()`` to make one.

    The user-facing vocabulary (``strategies()``, ``start()``, ``trades()``...) comes from ``EngineFacade``."""

    def __init__(
        self,
        home: Home | str | None = None,
        url: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        reconnect: bool = True,
    ) -> None:
        self._home = home
        self._explicit = (url, token) if url is not None else None
        self.timeout = timeout
        self._session: ClientSession[Answer] = ClientSession(reconnect=reconnect)
        self._lock = threading.Lock()  # guards the session (used by callers, the reader thread and close())
        self._send_lock = threading.Lock()
        self._events: queue.Queue[tuple[Callback, tuple[Any, ...]] | None] = queue.Queue()
        self._connected = threading.Event()
        self._closing = threading.Event()
        self.url, token = self._target()
        self._ws = open_socket(self.url, token, timeout)
        self._session.connection_made()  # nothing to resend on the first connection
        self._connected.set()
        self._reader = threading.Thread(target=self._read_loop, name="tradebaas-rpc-reader", daemon=True)
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="tradebaas-rpc-callbacks", daemon=True)
        self._reader.start()
        self._dispatcher.start()

    def _target(self) -> tuple[str, str]:
        if self._explicit is not None:
            return resolve_target(self._home, *self._explicit)
        return resolve_target(self._home, None, None)

    # -- public API ----------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def reconnect(self) -> bool:
        """Whether a dropped connection is re-established (True unless built with ``reconnect=False``)."""
        return self._session.reconnect

    @reconnect.setter
    def reconnect(self, value: bool) -> None:
        with self._lock:
            self._session.reconnect = value

    @property
    def reconnects(self) -> int:
        """How many times the client reconnected since it was created."""
        return self._session.reconnects

    def call(  # type: ignore[override]  # adds a positional params dict and the client-side timeout
        self, method: str, /, params: dict[str, Any] | None = None, *, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Call ``method`` with ``params``/keyword params; returns its result or raises ``RpcError``."""
        wait_s = self.timeout if timeout is None else timeout
        req_id, fut = self._send(method, {**(params or {}), **kwargs}, wait_s)
        try:
            answer = fut.result(wait_s)
        except FutureTimeout:
            with self._lock:
                self._session.forget(req_id)
            raise TimeoutError(f"the engine did not answer {method} within {wait_s:g}s") from None
        return answer_result(answer)

    def call_future(self, method: str, params: dict[str, Any] | None = None, *,
                    timeout: float | None = None) -> Answer:
        """Send a request without waiting: the future resolves to the raw answer object."""
        return self._send(method, params, self.timeout if timeout is None else timeout)[1]

    def _send(self, method: str, params: dict[str, Any] | None, wait_s: float) -> tuple[int, Answer]:
        """Register and write one request (waiting up to ``wait_s`` for a connection); its id and future."""
        with self._lock:
            self._session.check_call(self.url)
        if not self._connected.wait(wait_s):
            with self._lock:
                self._session.check_call(self.url)  # closed meanwhile, or gave up (reconnect=False)
            raise EngineNotRunning(f"not connected to the engine ({self.url}); still trying to reconnect")
        fut: Answer = Future()
        with self._lock:
            out = self._session.request(method, params, fut)
        try:
            with self._send_lock:
                self._ws.send(out.text)
        except (ConnectionClosed, OSError) as exc:
            with self._lock:
                self._session.forget(out.id)
            raise ConnectionLost(f"connection to the engine lost while sending {method}") from exc
        return out.id, fut

    def subscribe(self, channel: str, callback: Callback) -> Subscription:
        """Call ``callback(data)`` (or ``callback(channel, data)``) for every event on ``channel``.

        ``channel`` may end in ``.*`` (``strategy.*``). Callbacks run on the client's callback thread, one at a
        time, in arrival order; they may call the engine. Subscriptions survive reconnects.
        """
        with self._lock:
            new = self._session.add_callback(channel, callback)
        if new:
            try:
                self.call("subscribe", channels=[channel])
            except BaseException:
                with self._lock:
                    self._session.drop_channel(channel)
                raise
        return Subscription(self, channel, callback)

    def unsubscribe(self, channel: str, callback: Callback | None = None) -> None:
        """Remove ``callback`` (or every callback) from ``channel``; the engine stops sending when none remain."""
        with self._lock:
            last = self._session.remove_callback(channel, callback)
        if last:
            with contextlib.suppress(EngineNotRunning, TimeoutError):
                self.call("unsubscribe", channels=[channel])

    def on_reconnect(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` (on the callback thread) after every successful reconnection."""
        with self._lock:
            self._session.on_reconnect(callback)

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._connected.clear()
        with self._lock:
            waiters = self._session.close()
        with contextlib.suppress(Exception):
            self._ws.close()
        _fail(waiters, ConnectionLost("the client was closed"))
        self._events.put(None)
        if threading.current_thread() not in (self._reader, self._dispatcher):
            self._reader.join(timeout=RECONNECT_OPEN_TIMEOUT_S + 2)
            self._dispatcher.join(timeout=5)

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closing.is_set() else ("connected" if self.connected else "reconnecting")
        return f"<EngineClient {self.url} {state}>"

    # -- reader thread -------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        ws: ClientConnection | None = self._ws
        while ws is not None:
            try:
                for frame in ws:
                    self._on_frame(frame)
            except ConnectionClosed:
                pass
            except Exception:
                log.exception("engine client reader failed")
            self._connected.clear()
            with self._lock:
                waiters = self._session.connection_lost()
            _fail(waiters, ConnectionLost("connection to the engine lost"))
            ws = self._reconnect()

    def _on_frame(self, frame: str | bytes) -> None:
        with self._lock:
            events = self._session.receive(frame)
        self._apply(events)

    def _apply(self, events: list[Event[Answer]]) -> None:
        apply_events(events, self._events.put, log)

    def _reconnect(self) -> ClientConnection | None:
        """A new, re-subscribed connection, retrying every failure with back-off; None once the client is
        closed (or was built with ``reconnect=False``)."""
        while True:
            with self._lock:
                if not self._session.wants_connection or self._closing.is_set():
                    return None
            ws: ClientConnection | None = None
            try:
                self.url, token = self._target()
                ws = open_socket(self.url, token, min(self.timeout, RECONNECT_OPEN_TIMEOUT_S))
                with self._lock:
                    if self._session.state is State.CLOSED:
                        ws.close()
                        return None
                    opened = self._session.connection_made()
                    self._ws = ws
                for out in opened.frames:  # the resubscribe; its answer is read by this thread's next loop
                    with self._send_lock:
                        ws.send(out.text)
            except Exception as exc:  # every failure is retried until close()
                if ws is not None:
                    with self._lock:
                        self._session.connection_lost()
                    with contextlib.suppress(Exception):
                        ws.close()
                with self._lock:
                    delay = self._session.backoff.next_delay()
                log.debug("reconnect failed (%s); next attempt in %.2fs", exc, delay)
                self._closing.wait(delay)
                continue
            self._connected.set()
            log.info("reconnected to the engine at %s", self.url)
            self._apply(list(opened.deliveries))
            return ws

    # -- callback thread -----------------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            callback, args = item
            try:
                callback(*args)
            except Exception:
                log.exception("subscription callback %r failed", callback)


def _fail(waiters: list[Answer], exc: Exception) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_exception(exc)


def connect(
    home: Home | str | None = None,
    url: str | None = None,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    reconnect: bool = True,
) -> EngineClient:
    """Connect to the running engine: through ``engine.json`` of ``home`` (default TRADEBAAS_HOME), or to
    ``url`` with ``token`` (an engine reached through an SSH tunnel). Raises ``EngineNotRunning`` when none runs.
    Inside IPython it also registers the ``%%tradebaas_strategy`` cell magic (for ``eng.deploy``).
    """
    from tradebaas.notebook.magic import register_if_ipython

    register_if_ipython()
    return EngineClient(home=home, url=url, token=token, timeout=timeout, reconnect=reconnect)


def wait_for_engine(home: Home | str | None = None, timeout_s: float = 30.0) -> EngineClient:
    """Connect, retrying until an engine answers or ``timeout_s`` passes (for scripts that start one)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return connect(home)
        except EngineNotRunning:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)
