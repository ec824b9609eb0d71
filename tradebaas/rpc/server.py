"""The engine's RPC endpoint: JSON-RPC 2.0 over WebSocket on 127.0.0.1, with a token and no browsers.

Security model: the socket is bound to loopback, and every connection must present a token from
``engine.json`` (the full one, or the read-only one whose connections may call only ``read`` methods, see
``engine/api.py``) (``Authorization: Bearer <token>`` or ``?token=<token>``), compared in constant time. Any request
carrying an ``Origin`` header is refused with HTTP 403: browsers always send one, so a web page cannot drive the
engine even if it guessed the port (DNS rebinding, CSRF over WebSocket). Python clients send none.

Each connection is a ``Session``: its subscriptions, and one outgoing queue drained by one writer task, so
answers and pushed events never interleave mid-frame and a slow client never blocks the engine. A client that
falls ``MAX_QUEUE`` frames behind is disconnected (it reconnects and re-reads state) rather than silently
missing events. Requests on one connection run concurrently (bounded), so a slow method does not delay a ping.
Every frame gets exactly one answer (none for a valid notification), hostile ones included: ``Registry.dispatch``
promises it, and ``_answer`` backs it with an internal error should dispatch ever fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import itertools
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tradebaas.rpc.protocol import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    Access,
    CallContext,
    Param,
    Registry,
    RpcError,
    channel_matches,
    encode,
    encode_jsonable,
    error_response,
    notification,
    valid_channel,
)
from tradebaas.wsframe import text_frame

log = logging.getLogger("tradebaas.rpc.server")

MAX_FRAME_BYTES = 1 << 20  # incoming frames; larger ones close the connection (1009)
MAX_QUEUE = 10_000  # outgoing frames per session before the client is considered stuck
MAX_INFLIGHT = 32  # concurrent requests per connection
WRITE_BATCH = 256  # queued frames written together at most


class Session:
    """One client connection: subscriptions and an ordered outgoing queue."""

    _ids = itertools.count(1)

    def __init__(self, ws: ServerConnection, access: Access = Access.TRADE,
                 writes_open: asyncio.Event | None = None) -> None:
        self.id = next(self._ids)
        #: Set while frames may be written (``RpcServer.hold_writes``): cleared, frames queue up and wait.
        self.writes_open = writes_open or _open_event()
        self.ws = ws
        self.access = access  # what the token it connected with allows
        self.channels: set[str] = set()
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(MAX_QUEUE)
        self.inflight = asyncio.Semaphore(MAX_INFLIGHT)
        self.closed = False

    def wants(self, channel: str) -> bool:
        return any(channel_matches(p, channel) for p in self.channels)

    def push(self, message: str | bytes) -> None:
        """Queue a message (text, or a whole frame already built); a client too far behind is cut off (it will
        reconnect and resync)."""
        if self.closed:
            return
        try:
            self.queue.put_nowait(text_frame(message.encode()) if isinstance(message, str) else message)
        except asyncio.QueueFull:
            log.warning("RPC client %s is %d frames behind; disconnecting it", self.id, MAX_QUEUE)
            self.closed = True
            asyncio.get_running_loop().create_task(self.ws.close(1008, "client too slow"))

    async def writer(self) -> None:
        """Write the queued frames in order; what queued up meanwhile goes out together (``write_frames``)."""
        while True:
            frames = [await self.queue.get()]
            if not self.writes_open.is_set():
                await self.writes_open.wait()
            while len(frames) < WRITE_BATCH and not self.queue.empty():
                frames.append(self.queue.get_nowait())
            end = frames.index(None) if None in frames else len(frames)
            try:
                await write_frames(self.ws, [f for f in frames[:end] if f is not None])
            except ConnectionClosed:
                return
            if end < len(frames):
                return


async def write_frames(ws: ServerConnection, frames: list[bytes]) -> None:
    """Send whole text frames (``wsframe.text_frame``), in order, with one write to the socket.

    Why: a candle close with 50 strategies pushes 50 decisions to every attached panel; sent one by one, each cost
    the library's send path and a system call (about 40 us), and the loop wrote them all before it read the next
    market event or an order's answer (10 ms with 5 panels). A push's frame is built once for every panel
    (``RpcServer.publish``); the write happens inside the library's ``send_context`` (the open-state check and
    the flow control ``send`` uses; the library has nothing of its own to send for a text frame)."""
    if frames:
        async with ws.send_context():
            ws.transport.write(b"".join(frames))


def _open_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


class RpcServer:
    """Serves a ``Registry`` to authenticated local clients and pushes published events to subscribers."""

    def __init__(
        self,
        registry: Registry,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        readonly_token: str | None = None,
    ) -> None:
        if not token:
            raise ValueError("the RPC server needs a token")
        self.registry = registry
        self._token = token.encode()
        #: A second token for reports and dashboards: its connections may call only ``read`` methods.
        self._readonly_token = readonly_token.encode() if readonly_token else None
        self.host = host
        self.port = port
        self.max_frame_bytes = max_frame_bytes
        self.sessions: set[Session] = set()
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._access: dict[int, Access] = {}  # connection -> access of its token, from handshake to session
        self._writes_open = _open_event()
        self._holds = 0
        self._install_builtin_methods()

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> int:
        """Listen; returns the bound port (a free one when constructed with port 0)."""
        logging.getLogger("websockets").setLevel(logging.WARNING)
        self._loop = asyncio.get_running_loop()
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            max_size=self.max_frame_bytes,
            compression=None,  # frames are small; deflate costs latency and memory per connection
            server_header=None,
        )
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close(close_connections=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._server.wait_closed()
        self._server = None

    # -- publishing ----------------------------------------------------------------------------------------
    def publish(self, channel: str, data: Any) -> int:
        """Push ``data`` to every session subscribed to ``channel``; returns how many. Call from the loop.

        ``data`` must be JSON-able (dataclasses and enums are converted). Never blocks.
        """
        targets = [s for s in self.sessions if s.wants(channel)]
        if not targets:
            return 0
        frame = text_frame(encode_jsonable(notification(channel, data)).encode())
        for session in targets:
            session.push(frame)
        return len(targets)

    def hold_writes(self) -> Callable[[], None]:
        """Queue frames without writing them until the returned release is called (idempotent; holds nest).

        Why: when a market event closes candles, every strategy on the instrument decides and their decisions are
        committed; a pass of the loop in the middle (an entry handed to its task) would otherwise also write every
        push queued so far to every panel (milliseconds with five panels) while the other strategies wait to
        decide. The live loop holds writes while its strategies decide; the pushes go out right after, together."""
        self._holds += 1
        self._writes_open.clear()
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._holds -= 1
            if self._holds == 0:
                self._writes_open.set()

        return release

    def publish_threadsafe(self, channel: str, data: Any) -> None:
        """``publish`` from any thread (e.g. a logging handler in a worker thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.publish(channel, data)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.publish, channel, data)

    def has_subscribers(self, channel: str) -> bool:
        return any(s.wants(channel) for s in self.sessions)

    # -- connections ---------------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if "Origin" in request.headers:
            return connection.respond(http.HTTPStatus.FORBIDDEN, "browser origins are refused\n")
        token = _bearer(request.headers.get("Authorization"))
        if token is None:
            token = parse_qs(urlsplit(request.path).query).get("token", [""])[0]
        full = bool(token) and hmac.compare_digest(token.encode(), self._token)
        readonly = bool(token) and self._readonly_token is not None and hmac.compare_digest(
            token.encode(), self._readonly_token)
        if not (full or readonly):
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
        self._access[id(connection)] = Access.TRADE if full else Access.READ
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        session = Session(ws, self._access.pop(id(ws), Access.READ), self._writes_open)
        self.sessions.add(session)
        writer = asyncio.create_task(self._write(session))
        log.debug("RPC client %s connected", session.id)
        try:
            async for frame in ws:
                await session.inflight.acquire()
                task = asyncio.create_task(self._answer(session, frame))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except ConnectionClosed:
            pass
        finally:
            session.closed = True
            self.sessions.discard(session)
            with contextlib.suppress(asyncio.QueueFull):
                session.queue.put_nowait(None)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            log.debug("RPC client %s disconnected", session.id)

    async def _write(self, session: Session) -> None:
        await session.writer()

    async def _answer(self, session: Session, frame: str | bytes) -> None:
        """Answer one frame. ``dispatch`` answers every frame itself; should it ever raise anyway (a bug), the
        client still gets an internal error rather than waiting for its timeout."""
        try:
            answer = await self.registry.dispatch(frame, CallContext(session=session, access=session.access))
        except Exception:
            log.exception("RPC dispatch failed")
            answer = encode(error_response(None, RpcError(INTERNAL_ERROR, "internal error while answering")))
        finally:
            session.inflight.release()
        if answer is not None:
            session.push(answer)

    # -- built-in methods ----------------------------------------------------------------------------------
    def _install_builtin_methods(self) -> None:
        channels = Param(list, doc="channel names, e.g. ['log', 'strategy.*']")
        self.registry.add("subscribe", self._subscribe, {"channels": channels}, access=Access.READ)
        self.registry.add("unsubscribe", self._unsubscribe, {"channels": channels}, access=Access.READ)

    @staticmethod
    def _channels(channels: list[Any]) -> list[str]:
        bad = [c for c in channels if not valid_channel(c)]
        if bad:
            raise RpcError(INVALID_PARAMS, f"bad channel name(s): {', '.join(map(repr, bad))}")
        return [str(c) for c in channels]

    async def _subscribe(self, channels: list[Any], ctx: CallContext) -> list[str]:
        """Start receiving events on ``channels``; answers all channels now subscribed."""
        session: Session = ctx.session
        session.channels.update(self._channels(channels))
        return sorted(session.channels)

    async def _unsubscribe(self, channels: list[Any], ctx: CallContext) -> list[str]:
        session: Session = ctx.session
        session.channels.difference_update(self._channels(channels))
        return sorted(session.channels)


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None
