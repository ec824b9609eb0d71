"""Async Deribit client: one WebSocket connection kept alive, around the pure ``DeribitProtocol``.

Over 600 lines because the connection's whole life (connect, authenticate, heartbeats, token refresh,
timeouts, reconnect and resubscribe, rate-limit back-off) is one state machine around one socket; the typed calls
are thin wrappers on ``call``, and the message rules (``protocol.py``) and JSON conversion (``convert.py``) are apart.

This module owns everything with a socket, a clock or a task: connecting, authenticating, answering heartbeats,
refreshing the token, timing requests out, reconnecting, resubscribing and backing off. All message rules live in
``protocol.py`` (tested without a network); JSON <-> domain conversion lives in ``convert.py``.

Failure semantics (what the order manager can rely on):

- ``call`` raises ``DeribitApiError`` (or a subclass) when the exchange refused the request: nothing happened.
- ``RequestTimeout``: sent, no answer in time: the outcome is unknown; reconcile (a late answer is logged).
- ``ConnectionLost``: the connection dropped. ``sent=False`` means the request never left this process.
  Read-only methods are retried transparently after the reconnect; matching-engine methods (``ORDER_METHODS``:
  buy, sell, edit, cancel*, close_position) are never re-sent once sent: placing an order twice is worse than an
  error, so the caller decides (usually: reconcile by label).
- 10028 ``too_many_requests``: every caller pauses for an exponentially growing, jittered delay; read-only methods
  then retry, order methods raise ``TooManyRequests`` after the pause. If the server drops the session, the
  normal reconnect path takes over.
- After every reconnect (re-auth, heartbeat, resubscribe of the desired channel set) ``on_reconnect()`` is awaited:
  the engine reconciles there, because fills may have happened while the connection was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

import tradebaas.exchange.deribit.codes as codes
from tradebaas.domain import Candle, Fill, Order, OrderType, PositionSnapshot, Ticker
from tradebaas.exchange.deribit import convert, history
from tradebaas.exchange.deribit.errors import (
    AUTH_ERROR_CODES,
    AuthenticationError,
    ClientClosed,
    ConnectionLost,
    DeribitApiError,
    DeribitError,
    RequestTimeout,
    TooManyRequests,
    api_error,
)
from tradebaas.exchange.deribit.protocol import (
    DeribitProtocol,
    ErrorResponse,
    Heartbeat,
    HeartbeatRequest,
    Notification,
    OrphanResponse,
    OutgoingRequest,
    ProtocolViolation,
    Response,
    backoff_delay,
    is_order_method,
)
from tradebaas.instruments import Instrument
from tradebaas.secrets import Secret

log = logging.getLogger("tradebaas.exchange.deribit")

NotificationCallback = Callable[[str, Any], Awaitable[None] | None]
ReconnectCallback = Callable[[], Awaitable[None] | None]
StateCallback = Callable[["ClientStatus"], Awaitable[None] | None]

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ConnState(enum.StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(slots=True, frozen=True)
class ClientStatus:
    """What ``engine.status`` shows about the exchange connection. ``since_ms`` is wall-clock Unix ms of the
    last change of ``state`` (so "connected since" or "disconnected since")."""

    url: str
    state: str
    connected: bool
    authenticated: bool
    since_ms: int
    reconnects: int
    last_error: str | None
    channels: tuple[str, ...]
    pending_requests: int
    rate_limited: bool

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class DeribitClient:
    """A self-healing Deribit JSON-RPC/WebSocket connection with typed helpers (see module docstring).

    ``on_notification(channel, payload)`` is awaited (or called) in arrival order, one at a time, from a dedicated
    task, so it may itself ``await`` client calls. ``payload`` is already converted (``convert.parse_notification``:
    ``Order``, ``list[Fill]``, ``Ticker``, ``Candle``, summary ``dict``); aggregated ``user.orders`` lists arrive as
    one call per order. ``on_reconnect()`` is awaited after each successful reconnect (not after the first
    connect). ``on_state(status)`` is called on every state change. Exceptions in callbacks are logged, never
    propagated into the connection.
    """

    def __init__(
        self,
        url: str,
        client_id: str | None = None,
        client_secret: Secret | str | None = None,
        *,
        request_timeout: float = 10.0,
        heartbeat_interval: float | None = 15,
        on_notification: NotificationCallback | None = None,
        on_reconnect: ReconnectCallback | None = None,
        on_state: StateCallback | None = None,
        auth: str = "client_credentials",
        reconnect_base: float = 0.5,
        reconnect_max: float = 30.0,
        rate_limit_base: float = 0.5,
        rate_limit_max: float = 10.0,
        rate_limit_retries: int = 5,
        connect_timeout: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if auth not in ("client_credentials", "client_signature"):
            raise ValueError(f"auth must be 'client_credentials' or 'client_signature', not {auth!r}")
        if (client_id is None) != (client_secret is None):
            raise ValueError("give both client_id and client_secret, or neither")
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive (Deribit's minimum is 10 s) or None")
        self.url = url
        self.client_id = client_id
        self._secret = Secret(client_secret) if client_secret is not None else None
        self.auth_method = auth
        self.request_timeout = request_timeout
        self.heartbeat_interval = heartbeat_interval
        self.on_notification = on_notification
        self.on_reconnect = on_reconnect
        self.on_state = on_state
        self.reconnect_base = reconnect_base
        self.reconnect_max = reconnect_max
        self.rate_limit_base = rate_limit_base
        self.rate_limit_max = rate_limit_max
        self.rate_limit_retries = rate_limit_retries
        self.connect_timeout = connect_timeout if connect_timeout is not None else request_timeout
        self._rng = rng or random.Random()

        self._proto = DeribitProtocol(request_timeout=request_timeout)
        self._ws: ClientConnection | None = None
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._sent_methods: OrderedDict[int, str] = OrderedDict()  # recent ids -> method, for late answers
        self._ready = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._closing = False
        self._conn_tasks: list[asyncio.Task[Any]] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._refreshing = False
        self._throttle_until = 0.0
        self._rl_strikes = 0
        self._last_rate_limit = -1e9

        self._state = ConnState.IDLE
        self._since_ms = _wall_ms()
        self.reconnects = 0
        self.last_error: str | None = None
        #: ``usOut`` of the latest answer: the exchange's wall clock (µs) when it sent it (None before any)
        self.last_server_us: int | None = None

    # ------------------------------------------------------------------------------------------- lifecycle

    @property
    def has_credentials(self) -> bool:
        return self.client_id is not None and self._secret is not None

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    @property
    def authenticated(self) -> bool:
        return self._proto.authenticated

    @property
    def scope(self) -> str:
        """The scope the exchange granted the current session (``public/auth``'s answer; "" before any)."""
        return self._proto.auth.scope if self._proto.auth is not None else ""

    def status(self) -> ClientStatus:
        return ClientStatus(
            url=self.url,
            state=self._state.value,
            connected=self.connected,
            authenticated=self._proto.authenticated,
            since_ms=self._since_ms,
            reconnects=self.reconnects,
            last_error=self.last_error,
            channels=self._proto.desired_channels,
            pending_requests=len(self._futures),
            rate_limited=self._loop_time() < self._throttle_until,
        )

    async def start(self, *, retry: bool = False) -> None:
        """Connect, authenticate, set the heartbeat and subscribe the desired channels; then keep it that way.

        Without ``retry`` the first failure is raised (a wrong URL or key should be loud). With ``retry`` the
        first connection is retried with back-off like a reconnect, except for refused credentials.
        """
        if self._closing:
            raise ClientClosed("client is closed")
        if self._supervisor is not None:
            return
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="deribit-dispatch")
        self._set_state(ConnState.CONNECTING)
        attempt = 0
        while True:
            try:
                await self._open_session()
                break
            except AuthenticationError:
                await self._abort_start()
                raise
            except (TimeoutError, OSError, DeribitError, WebSocketException) as exc:
                self._note_error(exc)
                if not retry:
                    await self._abort_start()
                    raise
                delay = self._reconnect_delay(attempt)
                log.warning("Deribit connect to %s failed (%s); retrying in %.2f s", self.url, exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
        self._supervisor = asyncio.create_task(self._supervise(), name="deribit-supervisor")

    async def close(self) -> None:
        """Close the connection for good: pending and future calls raise ``ClientClosed``."""
        if self._state is ConnState.CLOSED:
            return
        self._closing = True
        self._disconnected.set()
        for task in (self._supervisor, self._dispatcher):
            if task is not None:
                task.cancel()
        ws = self._ws
        self._teardown(ws, ClientClosed("client closed"))
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in (self._supervisor, self._dispatcher):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._set_state(ConnState.CLOSED)

    async def __aenter__(self) -> DeribitClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until a session is up (connected, authenticated, subscribed)."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    async def _abort_start(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._dispatcher = None
        self._set_state(ConnState.IDLE)

    async def _open_session(self) -> None:
        """One connection attempt: socket, reader, auth, heartbeat, resubscribe. Raises on any failure."""
        host = urlsplit(self.url).hostname or ""
        ws = await connect(
            self.url,
            open_timeout=self.connect_timeout,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
            max_size=2**24,
            proxy=None if host in _LOOPBACK else True,
        )
        self._ws = ws
        self._conn_tasks = [
            asyncio.create_task(self._read_loop(ws), name="deribit-reader"),
            asyncio.create_task(self._timer_loop(ws), name="deribit-timer"),
        ]
        try:
            if self.has_credentials:
                await self._authenticate()
            if self.heartbeat_interval:
                await self._roundtrip(self._proto.request(
                    "public/set_heartbeat", {"interval": self.heartbeat_interval}, now=self._loop_time()))
            resub = self._proto.resubscribe(now=self._loop_time())
            if resub is not None:
                confirmed = await self._roundtrip(resub)
                missing = set(self._proto.desired_channels) - set(confirmed or [])
                if missing:
                    log.warning("Deribit refused channels on resubscribe: %s", sorted(missing))
        except BaseException:
            self._teardown(ws, ConnectionLost("session setup", "session setup failed"))
            with contextlib.suppress(Exception):
                await ws.close()
            raise
        if ws is not self._ws:  # dropped while setting up
            raise ConnectionLost("session setup", "connection dropped during setup")
        self._disconnected.clear()  # drops of failed attempts are history now
        self._ready.set()
        self._set_state(ConnState.CONNECTED)
        log.info("Deribit session up: %s (authenticated=%s, %d channels)", self.url,
                 self._proto.authenticated, len(self._proto.desired_channels))

    async def _authenticate(self) -> None:
        assert self.client_id is not None and self._secret is not None
        now = self._loop_time()
        if self.auth_method == "client_signature":
            req = self._proto.auth_with_signature(
                self.client_id, self._secret, timestamp_ms=_wall_ms(), nonce=secrets.token_hex(8), now=now)
        else:
            req = self._proto.auth_with_credentials(self.client_id, self._secret, now=now)
        await self._roundtrip(req)

    async def _refresh_token(self, ws: ClientConnection) -> None:
        """Refresh before expiry; fall back to full credentials; if both fail, drop the connection to reconnect."""
        self._refreshing = True
        try:
            try:
                await self._roundtrip(self._proto.auth_with_refresh_token(now=self._loop_time()))
                log.debug("Deribit token refreshed")
            except DeribitApiError as exc:
                log.warning("Deribit token refresh refused (%s); re-authenticating with credentials", exc)
                await self._authenticate()
        except (DeribitError, OSError) as exc:
            if ws is self._ws:
                self._note_error(exc)
                log.warning("Deribit re-authentication failed (%s); reconnecting", exc)
                await ws.close()
        finally:
            self._refreshing = False

    async def _supervise(self) -> None:
        """Reconnect forever (until ``close``): back-off with jitter, new session, then ``on_reconnect``."""
        while not self._closing:
            await self._disconnected.wait()
            if self._closing:
                return
            self._disconnected.clear()
            self._set_state(ConnState.RECONNECTING)
            # After a 10028 the server may have dropped us for hammering it: start further up the curve.
            attempt = 2 if self._loop_time() - self._last_rate_limit < 10 else 0
            while not self._closing:
                delay = self._reconnect_delay(attempt)
                log.info("Deribit reconnecting to %s in %.2f s (attempt %d)", self.url, delay, attempt + 1)
                await asyncio.sleep(delay)
                try:
                    await self._open_session()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any failure: keep trying, never give up on a live loop
                    self._note_error(exc)
                    log.warning("Deribit reconnect failed: %s", exc)
                    attempt += 1
            if self._closing:
                return
            self.reconnects += 1
            self._set_state(ConnState.CONNECTED)
            if self.on_reconnect is not None:
                try:
                    result = self.on_reconnect()
                    if inspect.isawaitable(result):
                        await result
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("on_reconnect callback failed")

    def _reconnect_delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.reconnect_base, self.reconnect_max, self._rng.random())

    # --------------------------------------------------------------------------------------- per connection

    async def _read_loop(self, ws: ClientConnection) -> None:
        reason = "connection closed"
        try:
            async for message in ws:
                for event in self._proto.receive(message, self._loop_time()):
                    self._handle(ws, event)
        except ConnectionClosed as exc:
            reason = f"connection closed ({exc})"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in handling must not leave a dead reader behind a live socket
            log.exception("Deribit reader failed")
            reason = f"reader failed: {exc}"
        if ws.close_code is not None and reason == "connection closed":
            reason = f"connection closed (code {ws.close_code} {ws.close_reason or ''})".strip()
        self._connection_lost(ws, reason)

    async def _timer_loop(self, ws: ClientConnection) -> None:
        """Deadlines, token refresh and liveness of one connection."""
        stale_after = None
        if self.heartbeat_interval:
            stale_after = max(3.0 * self.heartbeat_interval, self.heartbeat_interval + self.request_timeout)
        opened = self._loop_time()
        while ws is self._ws:
            now = self._loop_time()
            for exp in self._proto.expire(now):
                fut = self._futures.pop(exp.id, None)
                if fut is not None and not fut.done():
                    fut.set_exception(RequestTimeout(exp.method, exp.id, exp.timeout))
                else:
                    log.warning("Deribit %s (id %d) timed out", exp.method, exp.id)
            if self._proto.refresh_due(now) and not self._refreshing and self._ready.is_set():
                asyncio.create_task(self._refresh_token(ws), name="deribit-refresh")
            last = self._proto.last_received if self._proto.last_received is not None else opened
            if stale_after and now - last > stale_after:
                log.warning("Deribit silent for %.1f s; dropping the connection", now - last)
                self._note_error(ConnectionLost("heartbeat", "no message from the server"))
                await ws.close()
                return
            nxt = self._proto.next_deadline()
            await asyncio.sleep(min(0.25, max(0.01, (nxt - now) if nxt is not None else 0.25)))

    def _handle(self, ws: ClientConnection, event: object) -> None:
        if isinstance(event, Response):
            if event.server_us is not None:
                self.last_server_us = event.server_us
            self._resolve(event.id, result=event.result)
        elif isinstance(event, ErrorResponse):
            if event.id is None:
                log.warning("Deribit error without request id: %s %s", event.code, event.message)
                return
            self._resolve(event.id, error=api_error(event.code, event.message, event.data, event.method))
        elif isinstance(event, Notification):
            self._queue.put_nowait((event.channel, event.data))
        elif isinstance(event, HeartbeatRequest):
            self._remember(event.reply.id, event.reply.method)
            asyncio.create_task(self._send_quietly(ws, event.reply), name="deribit-heartbeat")
        elif isinstance(event, OrphanResponse):
            method = self._sent_methods.get(event.id) if isinstance(event.id, int) else None
            what = "error" if event.error is not None else "result"
            if method is not None and is_order_method(method):
                log.warning("late %s for %s (id %s) after the caller gave up: the order may exist; "
                            "reconciliation will find it", what, method, event.id)
            else:
                log.info("late %s for %s (id %s) ignored", what, method or "unknown request", event.id)
        elif isinstance(event, ProtocolViolation):
            log.warning("Deribit sent an invalid frame (%s): %s", event.reason, event.text)
        elif isinstance(event, Heartbeat):
            pass

    def _resolve(self, request_id: int, *, result: Any = None, error: BaseException | None = None) -> None:
        fut = self._futures.pop(request_id, None)
        if fut is None or fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)

    async def _send_quietly(self, ws: ClientConnection, req: OutgoingRequest) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            await ws.send(req.text)

    def _connection_lost(self, ws: ClientConnection, reason: str) -> None:
        if ws is not self._ws:
            return
        log.warning("Deribit connection to %s lost: %s", self.url, reason)
        self._note_error(ConnectionLost("connection", reason))
        self._teardown(ws, None, reason)
        if not self._closing:
            self._set_state(ConnState.RECONNECTING)
            self._disconnected.set()

    def _teardown(self, ws: ClientConnection | None, error: BaseException | None, reason: str = "") -> None:
        """Forget the connection: fail every pending future (``ConnectionLost`` unless ``error`` is given)."""
        if ws is not None and ws is not self._ws:
            return
        self._ws = None
        self._ready.clear()
        lost = self._proto.connection_lost()
        for pending in lost:
            fut = self._futures.pop(pending.id, None)
            if fut is not None and not fut.done():
                fut.set_exception(error if error is not None else ConnectionLost(pending.method, reason or "connection lost"))
        for fut in self._futures.values():  # registered but not yet in the protocol: cannot happen, but be safe
            if not fut.done():
                fut.set_exception(error if error is not None else ConnectionLost("request", reason))
        self._futures.clear()
        current = asyncio.current_task()
        for task in self._conn_tasks:
            if task is not current:
                task.cancel()
        self._conn_tasks = []

    # ---------------------------------------------------------------------------------------------- requests

    async def _roundtrip(self, req: OutgoingRequest) -> Any:
        """Send one registered request on the current socket and wait for its answer (no retries)."""
        ws = self._ws
        if ws is None:
            self._proto.forget(req.id)
            raise ConnectionLost(req.method, "not connected", sent=False)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._futures[req.id] = fut
        self._remember(req.id, req.method)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("-> %s id=%d %s", req.method, req.id, req.redacted())
        try:
            try:
                await ws.send(req.text)
            except (ConnectionClosed, OSError) as exc:
                self._futures.pop(req.id, None)
                self._proto.forget(req.id)
                raise ConnectionLost(req.method, f"send failed: {exc}") from exc
            return await fut
        finally:
            if not fut.done():  # the caller was cancelled: stop waiting for the answer
                self._futures.pop(req.id, None)
                self._proto.forget(req.id)
                fut.cancel()

    def _remember(self, request_id: int, method: str) -> None:
        self._sent_methods[request_id] = method
        while len(self._sent_methods) > 1000:
            self._sent_methods.popitem(last=False)

    async def _wait_ready(self, method: str, timeout: float) -> None:
        if self._closing:
            raise ClientClosed("client is closed")
        if self._ready.is_set():
            return
        if self._supervisor is None:
            raise ConnectionLost(method, "client not started", sent=False)
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            raise ConnectionLost(method, f"not connected within {timeout:g} s", sent=False) from None
        if self._closing:
            raise ClientClosed("client is closed")

    async def _wait_throttle(self) -> None:
        delay = self._throttle_until - self._loop_time()
        if delay > 0:
            await asyncio.sleep(delay)

    def _rate_limited(self) -> float:
        """Record a 10028 and return the pause every caller now observes."""
        now = self._loop_time()
        delay = backoff_delay(self._rl_strikes, self.rate_limit_base, self.rate_limit_max, self._rng.random())
        self._rl_strikes += 1
        self._last_rate_limit = now
        self._throttle_until = max(self._throttle_until, now + delay)
        return delay

    async def _execute(
        self, method: str, build: Callable[[float], OutgoingRequest], timeout: float | None
    ) -> Any:
        """The retry policy of the module docstring, around ``_roundtrip``."""
        timeout = self.request_timeout if timeout is None else timeout
        order = is_order_method(method)
        rl_retries = 0
        lost_retries = 0
        auth_retries = 0
        while True:
            await self._wait_ready(method, timeout)
            await self._wait_throttle()
            if not self._ready.is_set():
                continue
            try:
                result = await self._roundtrip(build(self._loop_time()))
                self._rl_strikes = 0
                return result
            except TooManyRequests:
                delay = self._rate_limited()
                log.warning("Deribit 10028 too_many_requests on %s; backing off %.2f s", method, delay)
                if order or rl_retries >= self.rate_limit_retries:
                    await self._wait_throttle()
                    raise
                rl_retries += 1
            except AuthenticationError as exc:
                # The session lost its auth (expired token, server restart): re-auth once; the refused request
                # did nothing, so sending it again is safe even for orders.
                if exc.code not in AUTH_ERROR_CODES or not self.has_credentials or auth_retries or method == "public/auth":
                    raise
                auth_retries += 1
                log.warning("Deribit %s refused (%s); re-authenticating", method, exc.message)
                await self._authenticate()
            except ConnectionLost as exc:
                if self._closing:
                    raise ClientClosed("client is closed") from exc
                if exc.sent and (order or lost_retries >= 2):
                    raise
                lost_retries += 1

    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Send ``method`` with ``params`` and return its ``result`` (see the module docstring for failures)."""
        params = dict(params or {})

        def build(now: float) -> OutgoingRequest:
            return self._proto.request(method, params, now=now, timeout=timeout)

        return await self._execute(method, build, timeout)

    async def subscribe(self, channels: Iterable[str]) -> list[str]:
        """Add channels to the desired set (kept across reconnects) and subscribe them now if connected.

        Returns the channels the server confirmed (empty when not connected yet: they are subscribed as soon as
        the session comes up). A channel the server refuses stays desired and is logged.
        """
        wanted = self._proto.want(channels)
        if not wanted or not self._ready.is_set():
            return []
        result = await self._execute(
            "subscribe", lambda now: self._proto.subscribe(wanted, now=now), None)
        confirmed = [c for c in (result or []) if isinstance(c, str)]
        refused = set(wanted) - set(confirmed)
        if refused:
            log.warning("Deribit refused channels: %s", sorted(refused))
        return confirmed

    async def unsubscribe(self, channels: Iterable[str]) -> list[str]:
        """Remove channels from the desired set and unsubscribe them if connected; returns those removed."""
        dropped = self._proto.unwant(channels)
        if not dropped or not self._ready.is_set():
            return []
        result = await self._execute(
            "unsubscribe", lambda now: self._proto.unsubscribe(dropped, now=now), None)
        return [c for c in (result or []) if isinstance(c, str)]

    # ---------------------------------------------------------------------------------------- typed helpers

    async def get_instruments(self, currency: str = "any", kind: str = "future") -> list[Instrument]:
        result = await self.call("public/get_instruments", {"currency": currency, "kind": kind})
        return convert.instruments_from_deribit(result)

    async def get_instrument(self, name: str) -> Instrument:
        try:
            return Instrument.from_deribit(await self.call("public/get_instrument", {"instrument_name": name}))
        except DeribitApiError as exc:
            if exc.code not in (codes.METHOD_NOT_FOUND, codes.NOT_IMPLEMENTED):  # a server without the method
                raise
        for inst in await self.get_instruments("any"):
            if inst.name == name:
                return inst
        code = codes.INVALID_OR_UNSUPPORTED_INSTRUMENT
        raise DeribitApiError(code, codes.message(code), {"instrument_name": name}, "public/get_instruments")

    async def ticker(self, instrument: str) -> Ticker:
        return convert.ticker_from_deribit(await self.call("public/ticker", {"instrument_name": instrument}))

    async def get_chart_candles(
        self, instrument: str, start_ms: int, end_ms: int, resolution: int | str = 1
    ) -> list[Candle]:
        """OHLCV bars in [start_ms, end_ms] (exchange time) from ``public/get_tradingview_chart_data``."""
        result = await self.call(
            "public/get_tradingview_chart_data",
            {"instrument_name": instrument, "start_timestamp": int(start_ms), "end_timestamp": int(end_ms),
             "resolution": str(resolution)},
        )
        return convert.candles_from_chart_data(result)

    async def buy(self, instrument: str, amount: float, type: OrderType | str, label: str, **kw: Any
                  ) -> tuple[Order, list[Fill]]:
        """``private/buy``; keyword args as ``convert.order_params`` (price, trigger_price, trigger, reduce_only,
        time_in_force, post_only, linked_order_type, trigger_fill_condition, otoco_config, valid_until, timeout).
        Returns the order and its immediate fills. Never retried after an ambiguous failure."""
        return await self._place("private/buy", instrument, amount, type, label, **kw)

    async def sell(self, instrument: str, amount: float, type: OrderType | str, label: str, **kw: Any
                   ) -> tuple[Order, list[Fill]]:
        """``private/sell``; see ``buy``."""
        return await self._place("private/sell", instrument, amount, type, label, **kw)

    async def _place(self, method: str, instrument: str, amount: float, type: OrderType | str, label: str,
                     *, timeout: float | None = None, **kw: Any) -> tuple[Order, list[Fill]]:
        params = convert.order_params(instrument, amount, type, label, **kw)
        return convert.order_result(await self.call(method, params, timeout=timeout))

    async def edit(self, order_id: str, amount: float, price: float | None = None,
                   trigger_price: float | None = None, **extra: Any) -> Order:
        """``private/edit`` (amount is required by Deribit even when unchanged)."""
        params: dict[str, Any] = {"order_id": order_id, "amount": amount}
        if price is not None:
            params["price"] = price
        if trigger_price is not None:
            params["trigger_price"] = trigger_price
        params.update({k: v for k, v in extra.items() if v is not None})
        order, _ = convert.order_result(await self.call("private/edit", params))
        return order

    async def cancel(self, order_id: str) -> Order:
        return convert.order_from_deribit(await self.call("private/cancel", {"order_id": order_id}))

    async def cancel_by_label(self, label: str) -> int:
        """Cancel every open order (trigger orders included) with this label; returns how many."""
        return int(await self.call("private/cancel_by_label", {"label": label}) or 0)

    async def get_open_orders(self, instrument: str) -> list[Order]:
        result = await self.call("private/get_open_orders_by_instrument", {"instrument_name": instrument})
        return [convert.order_from_deribit(o) for o in result]

    async def get_order_state(self, order_id: str) -> Order:
        return convert.order_from_deribit(await self.call("private/get_order_state", {"order_id": order_id}))

    async def get_position(self, instrument: str) -> PositionSnapshot:
        return convert.position_from_deribit(await self.call("private/get_position", {"instrument_name": instrument}))

    async def get_positions(self, currency: str = "any", kind: str = "future") -> list[PositionSnapshot]:
        result = await self.call("private/get_positions", {"currency": currency, "kind": kind})
        return [convert.position_from_deribit(p) for p in result]

    async def get_time(self) -> int:
        """The exchange's clock (``public/get_time``, Unix ms): the clock Deribit's history windows follow."""
        return int(await self.call("public/get_time"))

    async def get_user_trades(
        self, instrument: str, start_ms: int, end_ms: int | None = None, count: int = 1000
    ) -> list[Fill]:
        """Our fills on ``instrument`` from ``start_ms`` (inclusive), oldest first, across every page and both of
        Deribit's history windows.

        Deribit serves user trades of the last 24 hours without ``historical`` and only the older ones with
        ``historical: true`` (``deribit/history.py``, docs/deribit.md). So when ``start_ms`` is older than the
        recent window (by the exchange's clock, with a margin) both are queried, the recent one first: a trade that ages out between the two queries is then in the second, never in neither. Trades found
        twice (a server whose windows overlap, pages sharing a millisecond) are de-duplicated by trade id.
        """
        out = await self._user_trades_pages(instrument, start_ms, end_ms, count, historical=False)
        if history.needs_historical(int(start_ms), await self.get_time()):
            out += await self._user_trades_pages(instrument, start_ms, end_ms, count, historical=True)
        unique = {f.trade_id: f for f in out}
        return sorted(unique.values(), key=lambda f: (f.ts_ms, f.trade_seq))

    async def _user_trades_pages(self, instrument: str, start_ms: int, end_ms: int | None, count: int,
                                 historical: bool) -> list[Fill]:
        """Every page of one window, walked by timestamp; trades sharing the boundary millisecond are
        de-duplicated by trade id."""
        out: list[Fill] = []
        seen: set[str] = set()
        start = int(start_ms)
        while True:
            params: dict[str, Any] = {"instrument_name": instrument, "start_timestamp": start, "count": count,
                                      "sorting": "asc"}
            if end_ms is not None:
                params["end_timestamp"] = int(end_ms)
            if historical:
                params["historical"] = True
            result = await self.call("private/get_user_trades_by_instrument", params)
            page = convert.fills_from_deribit(result)
            new = [f for f in page if f.trade_id not in seen]
            out.extend(new)
            seen.update(f.trade_id for f in new)
            has_more = bool(result.get("has_more")) if isinstance(result, dict) else False
            if not has_more or not page:
                break
            last = max(f.ts_ms for f in page)
            nxt = last if new and last > start else last + 1
            if nxt <= start and not new:
                nxt = start + 1
            start = nxt
        return out

    async def get_account_summary(self, currency: str) -> dict[str, Any]:
        return dict(await self.call("private/get_account_summary", {"currency": currency}))

    async def close_position(self, instrument: str, type: str = "market", price: float | None = None
                             ) -> tuple[Order, list[Fill]]:
        params: dict[str, Any] = {"instrument_name": instrument, "type": type}
        if price is not None:
            params["price"] = price
        return convert.order_result(await self.call("private/close_position", params))

    # ------------------------------------------------------------------------------------------- callbacks

    async def _dispatch_loop(self) -> None:
        """Deliver notifications in order, one at a time, so handlers may await client calls."""
        while True:
            channel, data = await self._queue.get()
            if self.on_notification is None:
                continue
            try:
                payloads = list(convert.iter_notification_payloads(channel, data))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("cannot parse notification on %s: %s", channel, exc)
                continue
            for payload in payloads:
                try:
                    result = self.on_notification(channel, payload)
                    if inspect.isawaitable(result):
                        await result
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("on_notification callback failed for %s", channel)

    def _set_state(self, state: ConnState) -> None:
        if state is self._state:
            return
        self._state = state
        self._since_ms = _wall_ms()
        if self.on_state is None:
            return
        try:
            result = self.on_state(self.status())
            if inspect.isawaitable(result):
                asyncio.ensure_future(result)
        except Exception:
            log.exception("on_state callback failed")

    def _note_error(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"

    @staticmethod
    def _loop_time() -> float:
        """The event loop's clock (monotonic seconds); ``status()`` may be called from outside the loop."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()


def _wall_ms() -> int:
    return int(time.time() * 1000)
