"""The synchronous engine client behind ``tradebaas.connect()``: safe in Jupyter kernels and widget callbacks.

Why threads and not asyncio: a Jupyter kernel already runs an event loop, so a client that needs its own loop
forces nest-asyncio hacks. Here ONE reader thread owns the socket: it resolves request ids to futures and hands
pushed events to ONE callback thread. Callers block only on their own future, so ``call()`` works from any
thread, including ipywidgets callbacks and subscription callbacks (which may call back into the engine), and a
slow callback delays only other callbacks, never replies.

Auto-reconnect: when the connection drops (the engine restarted, stopped, crashed), the reader thread re-reads
``engine.json`` (the port and token change on restart), reconnects with a capped back-off, re-subscribes every
channel, then runs the ``on_reconnect`` callbacks (the control panel reloads its state there). Calls made while
disconnected wait for the reconnection up to their timeout, then raise ``EngineNotRunning``.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tradebaas.connection import pid_alive, read_connection_file
from tradebaas.errors import EngineNotRunning, UserError
from tradebaas.home import Home, get_home
from tradebaas.rpc.facade import EngineFacade
from tradebaas.rpc.protocol import RpcError, channel_matches, valid_channel

log = logging.getLogger("tradebaas.rpc.client")

DEFAULT_TIMEOUT_S = 10.0
MAX_FRAME_BYTES = 64 << 20  # answers such as trades.list can be large


class ConnectionLost(EngineNotRunning):
    """The connection dropped while a call was waiting for its answer (the call may or may not have run)."""


Callback = Callable[..., Any]


def resolve_target(home: Home | str | None, url: str | None, token: str | None) -> tuple[str, str]:
    """(url, token) from explicit values or from ``engine.json`` of the home; EngineNotRunning if none runs."""
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


def connect_error(url: str, exc: Exception) -> UserError:
    """A failed connection as the readable error both clients raise."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status in (401, 403):
            return UserError(f"the engine at {url} refused the connection (HTTP {status}: wrong token?)")
        return EngineNotRunning(f"the engine at {url} answered HTTP {status}")
    return EngineNotRunning(f"cannot reach the engine at {url} ({exc})")


def open_socket(url: str, token: str, timeout_s: float) -> ClientConnection:
    """One authenticated WebSocket, or a readable error."""
    try:
        return ws_connect(url, **socket_options(token, timeout_s), legacy=True)
    except (InvalidStatus, OSError, TimeoutError) as exc:
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


def _arity(callback: Callback) -> int:
    """1 -> callback(data); 2 -> callback(channel, data)."""
    try:
        params = [
            p for p in inspect.signature(callback).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        return 1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    required = [p for p in params if p.default is p.empty]
    return 2 if len(required) >= 2 else 1


class Subscription:
    """Handle returned by ``subscribe``; ``cancel()`` removes the callback."""

    def __init__(self, client: EngineClient, channel: str, callback: Callback) -> None:
        self.client, self.channel, self.callback = client, channel, callback

    def cancel(self) -> None:
        self.client.unsubscribe(self.channel, self.callback)


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
        self.reconnect = reconnect
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._subs: dict[str, list[tuple[Callback, int]]] = {}
        self._subs_lock = threading.Lock()
        self._reconnect_callbacks: list[Callable[[], Any]] = []
        self._events: queue.Queue[tuple[Callback, tuple[Any, ...]] | None] = queue.Queue()
        self._connected = threading.Event()
        self._closing = threading.Event()
        self.reconnects = 0
        self._dead = False  # the reader gave up (reconnect=False and the connection dropped)
        self.url, token = self._target()
        self._ws = open_socket(self.url, token, timeout)
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

    def call(self, method: str, /, params: dict[str, Any] | None = None, *, timeout: float | None = None,
             **kwargs: Any) -> Any:
        """Call ``method`` with ``params``/keyword params; returns its result or raises ``RpcError``."""
        fut = self.call_future(method, {**(params or {}), **kwargs}, timeout=timeout)
        wait_s = self.timeout if timeout is None else timeout
        try:
            answer = fut.result(wait_s)
        except FutureTimeout:
            raise TimeoutError(f"the engine did not answer {method} within {wait_s:g}s") from None
        return _result(answer)

    def call_future(self, method: str, params: dict[str, Any] | None = None, *,
                    timeout: float | None = None) -> Future[dict[str, Any]]:
        """Send a request without waiting: the future resolves to the raw answer object."""
        wait_s = self.timeout if timeout is None else timeout
        if self._closing.is_set():
            raise UserError("this engine client is closed")
        if self._dead:
            raise ConnectionLost(f"connection to the engine ({self.url}) was lost")
        if not self._connected.wait(wait_s):
            raise EngineNotRunning(f"not connected to the engine ({self.url}); still trying to reconnect")
        fut: Future[dict[str, Any]] = Future()
        req_id = next(self._ids)
        frame = json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params or {}})
        with self._pending_lock:
            self._pending[req_id] = fut
        try:
            with self._send_lock:
                self._ws.send(frame)
        except (ConnectionClosed, OSError) as exc:
            with self._pending_lock:
                self._pending.pop(req_id, None)
            raise ConnectionLost(f"connection to the engine lost while sending {method}") from exc
        fut.add_done_callback(lambda _f: self._forget(req_id))
        return fut

    def _forget(self, req_id: int) -> None:
        with self._pending_lock:
            self._pending.pop(req_id, None)

    def ping(self) -> str:
        return self.call("engine.ping")

    def status(self) -> dict[str, Any]:
        return self.call("engine.status")

    def subscribe(self, channel: str, callback: Callback) -> Subscription:
        """Call ``callback(data)`` (or ``callback(channel, data)``) for every event on ``channel``.

        ``channel`` may end in ``.*`` (``strategy.*``). Callbacks run on the client's callback thread, one at a
        time, in arrival order; they may call the engine. Subscriptions survive reconnects.
        """
        if not valid_channel(channel):
            raise UserError(f"bad channel name {channel!r}")
        with self._subs_lock:
            new = channel not in self._subs
            self._subs.setdefault(channel, []).append((callback, _arity(callback)))
        if new:
            try:
                self.call("subscribe", channels=[channel])
            except BaseException:
                with self._subs_lock:
                    self._subs.pop(channel, None)
                raise
        return Subscription(self, channel, callback)

    def unsubscribe(self, channel: str, callback: Callback | None = None) -> None:
        """Remove ``callback`` (or every callback) from ``channel``; the engine stops sending when none remain."""
        with self._subs_lock:
            callbacks = self._subs.get(channel, [])
            remaining = [] if callback is None else [(c, a) for c, a in callbacks if c is not callback]
            if remaining:
                self._subs[channel] = remaining
                return
            self._subs.pop(channel, None)
        with contextlib.suppress(EngineNotRunning, TimeoutError):
            self.call("unsubscribe", channels=[channel])

    def on_reconnect(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` (on the callback thread) after every successful reconnection."""
        self._reconnect_callbacks.append(callback)

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._connected.clear()
        with contextlib.suppress(Exception):
            self._ws.close()
        self._fail_pending(ConnectionLost("the client was closed"))
        self._events.put(None)
        if threading.current_thread() not in (self._reader, self._dispatcher):
            self._reader.join(timeout=5)
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
        while not self._closing.is_set():
            ws = self._ws
            try:
                for frame in ws:
                    self._on_frame(frame)
            except ConnectionClosed:
                pass
            except Exception:
                log.exception("engine client reader failed")
            self._connected.clear()
            self._fail_pending(ConnectionLost("connection to the engine lost"))
            if self._closing.is_set() or not self.reconnect:
                break
            if not self._reconnect():
                break
        self._dead = True

    def _on_frame(self, frame: str | bytes) -> None:
        try:
            msg = json.loads(frame)
        except ValueError:
            log.warning("engine sent a frame that is not JSON; ignored")
            return
        if not isinstance(msg, dict):
            return
        if msg.get("method") == "event":
            params = msg.get("params") or {}
            channel, data = params.get("channel", ""), params.get("data")
            with self._subs_lock:
                targets = [cb for pattern, cbs in self._subs.items() if channel_matches(pattern, channel) for cb in cbs]
            for callback, arity in targets:
                self._events.put((callback, (channel, data) if arity == 2 else (data,)))
            return
        req_id = msg.get("id")
        with self._pending_lock:
            fut = self._pending.get(req_id) if isinstance(req_id, int) else None
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def _fail_pending(self, exc: Exception) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    def _reconnect(self) -> bool:
        """Reconnect until it works or the client is closed; re-subscribe; then notify. False = give up."""
        delay = 0.05
        while not self._closing.is_set():
            try:
                self.url, token = self._target()
                ws = open_socket(self.url, token, min(self.timeout, 5.0))
            except UserError as exc:
                log.debug("reconnect failed: %s", exc)
                self._closing.wait(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._ws = ws
            self.reconnects += 1
            with self._subs_lock:
                channels = sorted(self._subs)
            if channels:
                req_id = next(self._ids)
                frame = {"jsonrpc": "2.0", "id": req_id, "method": "subscribe", "params": {"channels": channels}}
                try:
                    ws.send(json.dumps(frame))  # its answer is read by this thread's next loop; nobody waits
                except ConnectionClosed:
                    continue
            self._connected.set()
            log.info("reconnected to the engine at %s", self.url)
            for callback in list(self._reconnect_callbacks):
                self._events.put((callback, ()))
            return True
        return False

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


def _result(answer: dict[str, Any]) -> Any:
    if "error" in answer:
        err = answer["error"] or {}
        raise RpcError(int(err.get("code", -32603)), str(err.get("message", "unknown error")), err.get("data"))
    return answer.get("result")


def connect(
    home: Home | str | None = None,
    url: str | None = None,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    reconnect: bool = True,
) -> EngineClient:
    """Connect to the running engine: through ``engine.json`` of ``home`` (default TRADEBAAS_HOME), or to
    ``url`` with ``token`` (an engine reached through an SSH tunnel). Raises ``EngineNotRunning`` when none runs.
    """
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
