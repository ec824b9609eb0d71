"""The asyncio engine client behind ``tradebaas.connect_async()``, for code that already lives in a loop.

Same behaviour as the synchronous client (``tradebaas.rpc.client``), on the same sans-I/O core
(``tradebaas.rpc.session.ClientSession``): one reader task owns the socket; events go through a queue to one
dispatcher task (callbacks may be plain functions or coroutines); when the connection drops, the reader re-reads
``engine.json``, reconnects with back-off, re-subscribes and runs the ``on_reconnect`` callbacks, retrying every
failure until ``close()``. Use it from one event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tradebaas.errors import EngineNotRunning
from tradebaas.home import Home
from tradebaas.rpc.client import (
    CONNECT_ERRORS,
    DEFAULT_TIMEOUT_S,
    RECONNECT_OPEN_TIMEOUT_S,
    connect_error,
    resolve_target,
    socket_options,
)
from tradebaas.rpc.session import (
    ClientSession,
    ConnectionLost,
    Event,
    State,
    answer_result,
    apply_events,
)

log = logging.getLogger("tradebaas.rpc.aclient")

Answer = asyncio.Future[dict[str, Any]]


async def open_socket(url: str, token: str, timeout_s: float) -> ClientConnection:
    """One authenticated WebSocket, or a readable error."""
    try:
        return await ws_connect(url, **socket_options(token, timeout_s))
    except CONNECT_ERRORS as exc:
        raise connect_error(url, exc) from exc


class AsyncEngineClient:
    """Create with ``await tradebaas.connect_async()``; every method is awaitable."""

    def __init__(self, home: Home | str | None, url: str | None, token: str | None, timeout: float,
                 reconnect: bool) -> None:
        self._home = home
        self._explicit = (url, token) if url is not None else None
        self.timeout = timeout
        self.url = ""
        self._session: ClientSession[Answer] = ClientSession(reconnect=reconnect)
        self._ws: ClientConnection | None = None
        self._events: asyncio.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._closed = asyncio.Event()  # wakes the reconnect back-off when close() is called
        self._tasks: list[asyncio.Task[None]] = []

    def _target(self) -> tuple[str, str]:
        if self._explicit is not None:
            return resolve_target(self._home, *self._explicit)
        return resolve_target(self._home, None, None)

    async def _open(self) -> None:
        self.url, token = self._target()
        self._ws = await open_socket(self.url, token, self.timeout)
        self._session.connection_made()  # nothing to resend on the first connection
        self._connected.set()
        self._tasks = [asyncio.create_task(self._read_loop()), asyncio.create_task(self._dispatch_loop())]

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
        self._session.reconnect = value

    @property
    def reconnects(self) -> int:
        """How many times the client reconnected since it was created."""
        return self._session.reconnects

    async def call(self, method: str, /, params: dict[str, Any] | None = None, *, timeout: float | None = None,
                   **kwargs: Any) -> Any:
        wait_s = self.timeout if timeout is None else timeout
        self._session.check_call(self.url)
        try:
            async with asyncio.timeout(wait_s):
                await self._connected.wait()
        except TimeoutError:
            self._session.check_call(self.url)  # closed meanwhile, or gave up (reconnect=False)
            raise EngineNotRunning(f"not connected to the engine ({self.url}); still trying to reconnect") from None
        fut: Answer = asyncio.get_running_loop().create_future()
        out = self._session.request(method, {**(params or {}), **kwargs}, fut)
        try:
            assert self._ws is not None
            await self._ws.send(out.text)
            async with asyncio.timeout(wait_s):
                answer = await fut
        except ConnectionClosed as exc:
            raise ConnectionLost(f"connection to the engine lost while sending {method}") from exc
        except TimeoutError:
            raise TimeoutError(f"the engine did not answer {method} within {wait_s:g}s") from None
        finally:
            self._session.forget(out.id)
        return answer_result(answer)

    async def ping(self) -> str:
        return await self.call("engine.ping")

    async def status(self) -> dict[str, Any]:
        return await self.call("engine.status")

    async def subscribe(self, channel: str, callback: Callable[..., Any]) -> None:
        """``callback(data)`` or ``callback(channel, data)``, sync or async, for every event on ``channel``."""
        if self._session.add_callback(channel, callback):
            try:
                await self.call("subscribe", channels=[channel])
            except BaseException:
                self._session.drop_channel(channel)
                raise

    async def unsubscribe(self, channel: str, callback: Callable[..., Any] | None = None) -> None:
        if self._session.remove_callback(channel, callback):
            with contextlib.suppress(EngineNotRunning, TimeoutError):
                await self.call("unsubscribe", channels=[channel])

    def on_reconnect(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` (plain or coroutine function, on the dispatcher task) after every reconnection."""
        self._session.on_reconnect(callback)

    async def close(self) -> None:
        if self._session.state is State.CLOSED:
            return
        waiters = self._session.close()
        self._closed.set()
        self._connected.clear()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        _fail(waiters, ConnectionLost("the client was closed"))
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
        ws = self._ws
        while ws is not None:
            try:
                async for frame in ws:
                    self._apply(self._session.receive(frame))
            except ConnectionClosed:
                pass
            except Exception:
                log.exception("engine client reader failed")
            self._connected.clear()
            _fail(self._session.connection_lost(), ConnectionLost("connection to the engine lost"))
            ws = await self._reconnect()

    def _apply(self, events: list[Event[Answer]]) -> None:
        apply_events(events, self._events.put_nowait, log)

    async def _reconnect(self) -> ClientConnection | None:
        """A new, re-subscribed connection, retrying every failure with back-off; None once the client is
        closed (or was built with ``reconnect=False``)."""
        while self._session.wants_connection:
            ws: ClientConnection | None = None
            try:
                self.url, token = self._target()
                ws = await open_socket(self.url, token, min(self.timeout, RECONNECT_OPEN_TIMEOUT_S))
                if self._session.state is State.CLOSED:
                    await ws.close()
                    return None
                opened = self._session.connection_made()
                self._ws = ws
                for out in opened.frames:  # the resubscribe; its answer is read by the reader's next loop
                    await ws.send(out.text)
            except Exception as exc:  # every failure is retried until close()
                if ws is not None:
                    self._session.connection_lost()
                    with contextlib.suppress(Exception):
                        await ws.close()
                delay = self._session.backoff.next_delay()
                log.debug("reconnect failed (%s); next attempt in %.2fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._closed.wait()
                continue
            self._connected.set()
            log.info("reconnected to the engine at %s", self.url)
            self._apply(list(opened.deliveries))
            return ws
        return None

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


def _fail(waiters: list[Answer], exc: Exception) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_exception(exc)


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
