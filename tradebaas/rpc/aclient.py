"""The asyncio engine client behind ``tradebaas.connect_async()``, for code that already lives in a loop.

Same behaviour as the synchronous client (``tradebaas.rpc.client``): one reader task owns the socket and resolves
request ids; events go through a queue to one dispatcher task (callbacks may be plain functions or coroutines);
the connection re-reads ``engine.json``, reconnects and re-subscribes when the engine restarts. Use it from one
event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tradebaas.errors import EngineNotRunning, UserError
from tradebaas.home import Home
from tradebaas.rpc.client import (
    DEFAULT_TIMEOUT_S,
    ConnectionLost,
    _arity,
    _result,
    connect_error,
    resolve_target,
    socket_options,
)
from tradebaas.rpc.protocol import channel_matches, valid_channel

log = logging.getLogger("tradebaas.rpc.aclient")


async def open_socket(url: str, token: str, timeout_s: float) -> ClientConnection:
    try:
        return await ws_connect(url, **socket_options(token, timeout_s))
    except (InvalidStatus, OSError, TimeoutError) as exc:
        raise connect_error(url, exc) from exc


class AsyncEngineClient:
    """Create with ``await tradebaas.connect_async()``; every method is awaitable."""

    def __init__(self, home: Home | str | None, url: str | None, token: str | None, timeout: float,
                 reconnect: bool) -> None:
        self._home = home
        self._explicit = (url, token) if url is not None else None
        self.timeout = timeout
        self.reconnect = reconnect
        self.url = ""
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._subs: dict[str, list[tuple[Callable[..., Any], int]]] = {}
        self._reconnect_callbacks: list[Callable[[], Any]] = []
        self._events: asyncio.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._closing = False
        self._dead = False
        self._tasks: list[asyncio.Task[None]] = []

    def _target(self) -> tuple[str, str]:
        if self._explicit is not None:
            return resolve_target(self._home, *self._explicit)
        return resolve_target(self._home, None, None)

    async def _open(self) -> None:
        self.url, token = self._target()
        self._ws = await open_socket(self.url, token, self.timeout)
        self._connected.set()
        self._tasks = [asyncio.create_task(self._read_loop()), asyncio.create_task(self._dispatch_loop())]

    # -- public API ----------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def call(self, method: str, /, params: dict[str, Any] | None = None, *, timeout: float | None = None,
                   **kwargs: Any) -> Any:
        wait_s = self.timeout if timeout is None else timeout
        if self._closing:
            raise UserError("this engine client is closed")
        if self._dead:
            raise ConnectionLost(f"connection to the engine ({self.url}) was lost")
        try:
            await asyncio.wait_for(self._connected.wait(), wait_s)
        except TimeoutError:
            raise EngineNotRunning(f"not connected to the engine ({self.url}); still trying to reconnect") from None
        req_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        frame = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": {**(params or {}), **kwargs}}
        try:
            assert self._ws is not None
            await self._ws.send(json.dumps(frame))
            answer = await asyncio.wait_for(fut, wait_s)
        except ConnectionClosed as exc:
            raise ConnectionLost(f"connection to the engine lost while sending {method}") from exc
        except TimeoutError:
            raise TimeoutError(f"the engine did not answer {method} within {wait_s:g}s") from None
        finally:
            self._pending.pop(req_id, None)
        return _result(answer)

    async def ping(self) -> str:
        return await self.call("engine.ping")

    async def status(self) -> dict[str, Any]:
        return await self.call("engine.status")

    async def subscribe(self, channel: str, callback: Callable[..., Any]) -> None:
        """``callback(data)`` or ``callback(channel, data)``, sync or async, for every event on ``channel``."""
        if not valid_channel(channel):
            raise UserError(f"bad channel name {channel!r}")
        new = channel not in self._subs
        self._subs.setdefault(channel, []).append((callback, _arity(callback)))
        if new:
            try:
                await self.call("subscribe", channels=[channel])
            except BaseException:
                self._subs.pop(channel, None)
                raise

    async def unsubscribe(self, channel: str, callback: Callable[..., Any] | None = None) -> None:
        callbacks = self._subs.get(channel, [])
        remaining = [] if callback is None else [(c, a) for c, a in callbacks if c is not callback]
        if remaining:
            self._subs[channel] = remaining
            return
        self._subs.pop(channel, None)
        with contextlib.suppress(EngineNotRunning, TimeoutError):
            await self.call("unsubscribe", channels=[channel])

    def on_reconnect(self, callback: Callable[[], Any]) -> None:
        self._reconnect_callbacks.append(callback)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._connected.clear()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        self._fail_pending(ConnectionLost("the client was closed"))
        self._events.put_nowait(None)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def __aenter__(self) -> AsyncEngineClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- tasks ---------------------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        while not self._closing:
            ws = self._ws
            assert ws is not None
            try:
                async for frame in ws:
                    self._on_frame(frame)
            except ConnectionClosed:
                pass
            self._connected.clear()
            self._fail_pending(ConnectionLost("connection to the engine lost"))
            if self._closing or not self.reconnect or not await self._reconnect():
                break
        self._dead = True

    def _on_frame(self, frame: str | bytes) -> None:
        try:
            msg = json.loads(frame)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        if msg.get("method") == "event":
            params = msg.get("params") or {}
            channel, data = params.get("channel", ""), params.get("data")
            for pattern, cbs in list(self._subs.items()):
                if channel_matches(pattern, channel):
                    for cb, arity in cbs:
                        self._events.put_nowait((cb, (channel, data) if arity == 2 else (data,)))
            return
        fut = self._pending.get(msg.get("id"))  # type: ignore[arg-type]
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    async def _reconnect(self) -> bool:
        delay = 0.05
        while not self._closing:
            try:
                self.url, token = self._target()
                ws = await open_socket(self.url, token, min(self.timeout, 5.0))
            except UserError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._ws = ws
            self.reconnects += 1
            if self._subs:
                frame = {"jsonrpc": "2.0", "id": next(self._ids), "method": "subscribe",
                         "params": {"channels": sorted(self._subs)}}
                try:
                    await ws.send(json.dumps(frame))
                except ConnectionClosed:
                    continue
            self._connected.set()
            for cb in list(self._reconnect_callbacks):
                self._events.put_nowait((cb, ()))
            return True
        return False

    async def _dispatch_loop(self) -> None:
        while True:
            item = await self._events.get()
            if item is None:
                return
            callback, args = item
            try:
                result = callback(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("subscription callback %r failed", callback)


async def connect_async(
    home: Home | str | None = None,
    url: str | None = None,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    reconnect: bool = True,
) -> AsyncEngineClient:
    """``await tradebaas.connect_async()``: like ``tradebaas.connect()`` but every method is a coroutine."""
    client = AsyncEngineClient(home, url, token, timeout, reconnect)
    await client._open()
    return client
