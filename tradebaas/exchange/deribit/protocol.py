"""The Deribit JSON-RPC client protocol as a pure state machine (no sockets, no clock, no tasks).

Text frames go in through ``receive(text, now)`` and come out as events; requests are built by ``request(...)``,
which returns the frame to write. ``now`` is whatever monotonic clock the caller uses (seconds); the protocol only
compares it with itself. This keeps every rule of the conversation testable with plain function calls, the way the
``websockets`` library keeps its own protocol apart from asyncio:

- request ids are unique for the life of the object (never reused across reconnects, so a late answer can never
  be mistaken for a newer request's);
- every request has a deadline; ``expire(now)`` hands back the ones that passed it;
- a server ``test_request`` heartbeat produces a ``HeartbeatRequest`` event carrying the ``public/test`` frame the
  connection must send (the protocol has already registered it, and swallows its answer);
- the desired subscription set survives ``connection_lost()`` so the connection can resubscribe it;
- the auth state (tokens as ``Secret``, expiry) is updated from ``public/auth`` answers, and ``refresh_due(now)``
  says when to use the refresh token. Tokens never appear in events, reprs or logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tradebaas.secrets import Secret

# Methods that reach the matching engine: sending one twice may trade twice, so they are never retried after an
# ambiguous failure (timeout, dropped connection) and a 10028 is raised to the caller after backing off.
ORDER_METHODS = frozenset(
    {
        "private/buy",
        "private/sell",
        "private/edit",
        "private/edit_by_label",
        "private/close_position",
        "private/cancel",
        "private/cancel_all",
        "private/cancel_all_by_currency",
        "private/cancel_all_by_instrument",
        "private/cancel_all_by_kind_or_type",
        "private/cancel_by_label",
    }
)

# Param keys whose values are credentials; replaced by "***" wherever params are shown.
SENSITIVE_KEYS = frozenset({"client_secret", "signature", "refresh_token", "access_token", "password", "nonce"})

AUTH_METHOD = "public/auth"
TEST_METHOD = "public/test"
SUBSCRIBE_METHODS = frozenset({"public/subscribe", "private/subscribe"})
UNSUBSCRIBE_METHODS = frozenset({"public/unsubscribe", "private/unsubscribe"})


def is_order_method(method: str) -> bool:
    """True for matching-engine methods whose blind repetition could place or change an order twice."""
    return method in ORDER_METHODS


def is_private_channel(channel: str) -> bool:
    """``user.*`` channels exist only on an authenticated connection (``private/subscribe``)."""
    return channel.startswith("user.")


def redact(params: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``params`` safe to log: credential values replaced by ``"***"`` (recursively)."""
    if not params:
        return {}
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in SENSITIVE_KEYS or isinstance(value, Secret):
            out[key] = "***"
        elif isinstance(value, dict):
            out[key] = redact(value)
        else:
            out[key] = value
    return out


def sign(client_secret: str, timestamp_ms: int, nonce: str, data: str = "") -> str:
    """Deribit's ``client_signature``: hex(HMAC-SHA256(secret, f"{timestamp}\\n{nonce}\\n{data}"))."""
    payload = f"{timestamp_ms}\n{nonce}\n{data}".encode()
    return hmac.new(client_secret.encode(), payload, hashlib.sha256).hexdigest()


def backoff_delay(attempt: int, base: float, cap: float, rand: float) -> float:
    """Exponential back-off with jitter: ``min(cap, base * 2**attempt)`` scaled into [50 %, 100 %] by ``rand``.

    ``rand`` is a uniform number in [0, 1) supplied by the caller (so this stays deterministic under test). Half
    the delay is kept so that many clients restarting together still spread out but never retry immediately.
    """
    attempt = max(0, attempt)
    ceiling = min(cap, base * (2 ** min(attempt, 62)))
    return ceiling * (0.5 + 0.5 * min(max(rand, 0.0), 1.0))


# --------------------------------------------------------------------------------------------------- events


@dataclass(slots=True, frozen=True)
class OutgoingRequest:
    """A request frame ready to write. ``text`` may hold credentials: log ``redacted()`` instead."""

    id: int
    method: str
    params: dict[str, Any] = field(repr=False)
    text: str = field(repr=False)
    deadline: float = 0.0

    def redacted(self) -> dict[str, Any]:
        return redact(self.params)


@dataclass(slots=True, frozen=True)
class Response:
    """A successful answer to one of our pending requests. ``server_us`` is the envelope's ``usOut``: the exchange's
    wall clock (µs) when it answered (None when absent); it is how a clock skew is measured."""

    id: int
    method: str
    result: Any
    server_us: int | None = field(default=None, compare=False)


@dataclass(slots=True, frozen=True)
class ErrorResponse:
    """An error answer. ``id``/``method`` are None when the server could not tie it to a request (parse error)."""

    id: int | None
    method: str | None
    code: int
    message: str
    data: Any = None


@dataclass(slots=True, frozen=True)
class Notification:
    """A subscription message; ``channel`` is exactly the string we subscribed."""

    channel: str
    data: Any


@dataclass(slots=True, frozen=True)
class HeartbeatRequest:
    """The server asked ``test_request``: write ``reply`` now or the server closes the connection."""

    reply: OutgoingRequest


@dataclass(slots=True, frozen=True)
class Heartbeat:
    """A plain ``heartbeat`` message (no answer needed); proof the connection is alive."""


@dataclass(slots=True, frozen=True)
class OrphanResponse:
    """An answer whose id is not pending (it timed out earlier, or was never ours).

    For an order method this matters: the order the caller was told timed out may exist after all.
    """

    id: Any
    method: str | None
    result: Any = None
    error: dict[str, Any] | None = None


@dataclass(slots=True, frozen=True)
class ProtocolViolation:
    """A frame that is not valid Deribit JSON-RPC; kept for logging, never raised."""

    reason: str
    text: str


@dataclass(slots=True, frozen=True)
class Expired:
    """A pending request passed its deadline without an answer."""

    id: int
    method: str
    timeout: float


Event = Response | ErrorResponse | Notification | HeartbeatRequest | Heartbeat | OrphanResponse | ProtocolViolation


@dataclass(slots=True)
class Pending:
    id: int
    method: str
    sent_at: float
    deadline: float
    internal: bool = False
    channels: tuple[str, ...] = ()


@dataclass(slots=True)
class AuthState:
    """Tokens of the current session. ``expires_at`` and ``refresh_at`` are on the caller's ``now`` clock."""

    access_token: Secret
    refresh_token: Secret | None
    issued_at: float
    expires_at: float
    scope: str = ""

    @property
    def refresh_at(self) -> float:
        """When to refresh: a minute before expiry, but never later than half-way through a short lifetime."""
        ttl = self.expires_at - self.issued_at
        return self.issued_at + max(ttl / 2, ttl - 60.0)

    def __repr__(self) -> str:
        return f"AuthState(expires_at={self.expires_at:.1f}, refresh_at={self.refresh_at:.1f}, scope={self.scope!r})"


# ------------------------------------------------------------------------------------------------- protocol


class DeribitProtocol:
    """Client side of one Deribit JSON-RPC conversation, across reconnects (see module docstring)."""

    def __init__(self, *, request_timeout: float = 10.0, first_id: int = 1) -> None:
        self.request_timeout = request_timeout
        self._next_id = first_id
        self._pending: dict[int, Pending] = {}
        self._desired: dict[str, None] = {}  # insertion-ordered set
        self._active: set[str] = set()
        self.auth: AuthState | None = None
        self.authenticated = False  # the *connection* is authenticated (reset on connection_lost)
        self.last_received: float | None = None

    # ---------------------------------------------------------------------------------------------- requests

    def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        now: float,
        timeout: float | None = None,
        internal: bool = False,
    ) -> OutgoingRequest:
        """Register a request and return its frame. ``internal`` answers are swallowed (no ``Response`` event)."""
        params = dict(params or {})
        request_id = self._next_id
        self._next_id += 1
        timeout = self.request_timeout if timeout is None else timeout
        deadline = now + timeout
        channels: tuple[str, ...] = ()
        if method in SUBSCRIBE_METHODS or method in UNSUBSCRIBE_METHODS:
            channels = tuple(params.get("channels", ()))
        self._pending[request_id] = Pending(request_id, method, now, deadline, internal, channels)
        wire = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": _reveal(params)}
        text = json.dumps(wire, separators=(",", ":"))
        return OutgoingRequest(request_id, method, params, text, deadline)

    @property
    def pending(self) -> dict[int, Pending]:
        """Requests awaiting an answer, by id (read-only view by convention)."""
        return self._pending

    def forget(self, request_id: int) -> Pending | None:
        """Stop waiting for ``request_id`` (the caller gave up, e.g. it was cancelled)."""
        return self._pending.pop(request_id, None)

    def next_deadline(self) -> float | None:
        """The earliest deadline among pending requests, for the connection's timer."""
        return min((p.deadline for p in self._pending.values()), default=None)

    def expire(self, now: float) -> list[Expired]:
        """Remove and return every pending request whose deadline is <= ``now``."""
        out = [
            Expired(p.id, p.method, p.deadline - p.sent_at)
            for p in self._pending.values()
            if p.deadline <= now
        ]
        for e in out:
            del self._pending[e.id]
        return out

    def connection_lost(self) -> list[Pending]:
        """The socket is gone: drop and return every pending request; the session's auth and channels end.

        The desired subscription set and the refresh token are kept: the next connection re-authenticates and
        resubscribes from them.
        """
        lost = list(self._pending.values())
        self._pending.clear()
        self._active.clear()
        self.authenticated = False
        self.last_received = None
        return lost

    # ------------------------------------------------------------------------------------------------ receive

    def receive(self, text: str | bytes, now: float) -> list[Event]:
        """Parse one frame into events (usually one). Never raises on bad input: it becomes a violation."""
        self.last_received = now
        try:
            msg = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            return [ProtocolViolation(f"invalid JSON: {exc}", _clip(text))]
        if not isinstance(msg, dict):
            return [ProtocolViolation("frame is not a JSON object", _clip(text))]
        if "id" in msg and ("result" in msg or "error" in msg):
            return [self._on_answer(msg, now)]
        method = msg.get("method")
        params = msg.get("params")
        if method == "subscription":
            if not isinstance(params, dict) or not isinstance(params.get("channel"), str):
                return [ProtocolViolation("subscription without a channel", _clip(text))]
            return [Notification(params["channel"], params.get("data"))]
        if method == "heartbeat":
            kind = params.get("type") if isinstance(params, dict) else None
            if kind == "test_request":
                return [HeartbeatRequest(self.request(TEST_METHOD, {}, now=now, internal=True))]
            return [Heartbeat()]
        return [ProtocolViolation("neither an answer nor a notification", _clip(text))]

    def _on_answer(self, msg: dict[str, Any], now: float) -> Event:
        raw_id = msg.get("id")
        pending = self._pending.pop(raw_id, None) if isinstance(raw_id, int) else None
        error = msg.get("error")
        if error is not None:
            if not isinstance(error, dict):
                error = {"code": 0, "message": str(error)}
            if pending is None and raw_id is not None:
                return OrphanResponse(raw_id, None, error=error)
            method = pending.method if pending else None
            if method == AUTH_METHOD:
                self.authenticated = False
            return ErrorResponse(
                raw_id if pending else None,
                method,
                _int(error.get("code")),
                str(error.get("message", "")),
                error.get("data"),
            )
        result = msg.get("result")
        if pending is None:
            return OrphanResponse(raw_id, None, result=_strip_tokens(result))
        if pending.method == AUTH_METHOD:
            result = self._on_auth(result, now)
        elif pending.method in SUBSCRIBE_METHODS and isinstance(result, list):
            self._active.update(c for c in result if isinstance(c, str))
        elif pending.method in UNSUBSCRIBE_METHODS and isinstance(result, list):
            self._active.difference_update(result)
        server_us = msg.get("usOut")
        server_us = server_us if isinstance(server_us, int) and not isinstance(server_us, bool) else None
        if pending.internal:
            return Heartbeat() if pending.method == TEST_METHOD else Response(pending.id, pending.method, result,
                                                                              server_us)
        return Response(pending.id, pending.method, result, server_us)

    # --------------------------------------------------------------------------------------------------- auth

    def auth_with_credentials(self, client_id: str, client_secret: Secret | str, *, now: float) -> OutgoingRequest:
        """``public/auth`` with ``grant_type=client_credentials``."""
        params = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": Secret(client_secret)}
        return self.request(AUTH_METHOD, params, now=now)

    def auth_with_signature(
        self,
        client_id: str,
        client_secret: Secret | str,
        *,
        timestamp_ms: int,
        nonce: str,
        data: str = "",
        now: float,
    ) -> OutgoingRequest:
        """``public/auth`` with ``grant_type=client_signature`` (the secret itself never goes on the wire)."""
        secret = client_secret.reveal() if isinstance(client_secret, Secret) else client_secret
        params = {
            "grant_type": "client_signature",
            "client_id": client_id,
            "timestamp": timestamp_ms,
            "nonce": nonce,
            "data": data,
            "signature": Secret(sign(secret, timestamp_ms, nonce, data)),
        }
        return self.request(AUTH_METHOD, params, now=now)

    def auth_with_refresh_token(self, *, now: float) -> OutgoingRequest:
        """``public/auth`` with ``grant_type=refresh_token``; requires a previous successful auth."""
        if self.auth is None or self.auth.refresh_token is None:
            raise ValueError("no refresh token: authenticate with credentials first")
        params = {"grant_type": "refresh_token", "refresh_token": self.auth.refresh_token}
        return self.request(AUTH_METHOD, params, now=now)

    def refresh_due(self, now: float) -> bool:
        """True once the access token should be refreshed (only while the connection is authenticated)."""
        return self.authenticated and self.auth is not None and now >= self.auth.refresh_at

    def auth_expired(self, now: float) -> bool:
        return self.auth is not None and now >= self.auth.expires_at

    def _on_auth(self, result: Any, now: float) -> Any:
        if not isinstance(result, dict) or not result.get("access_token"):
            self.authenticated = False
            return _strip_tokens(result)
        expires_in = _float(result.get("expires_in"), 900.0)
        refresh = result.get("refresh_token")
        self.auth = AuthState(
            access_token=Secret(str(result["access_token"])),
            refresh_token=Secret(str(refresh)) if refresh else None,
            issued_at=now,
            expires_at=now + expires_in,
            scope=str(result.get("scope", "")),
        )
        self.authenticated = True
        return _strip_tokens(result)

    # ------------------------------------------------------------------------------------------ subscriptions

    @property
    def desired_channels(self) -> tuple[str, ...]:
        """Channels the owner wants, in the order first asked for; resubscribed after every reconnect."""
        return tuple(self._desired)

    @property
    def active_channels(self) -> frozenset[str]:
        """Channels the server confirmed on the current connection."""
        return frozenset(self._active)

    def want(self, channels: Iterable[str]) -> list[str]:
        """Add ``channels`` to the desired set without a request (while disconnected); returns them deduplicated."""
        channels = list(dict.fromkeys(channels))
        for c in channels:
            self._desired[c] = None
        return channels

    def unwant(self, channels: Iterable[str]) -> list[str]:
        """Remove ``channels`` from the desired set without a request; returns them deduplicated."""
        channels = list(dict.fromkeys(channels))
        for c in channels:
            self._desired.pop(c, None)
        self._active.difference_update(channels)
        return channels

    def subscribe(self, channels: Iterable[str], *, now: float) -> OutgoingRequest:
        """Add ``channels`` to the desired set and build the subscribe request for them.

        ``private/subscribe`` is used whenever the connection is authenticated (it accepts public channels too,
        and raw intervals need auth); ``public/subscribe`` otherwise.
        """
        channels = self.want(channels)
        method = "private/subscribe" if self.authenticated else "public/subscribe"
        return self.request(method, {"channels": channels}, now=now)

    def unsubscribe(self, channels: Iterable[str], *, now: float) -> OutgoingRequest:
        """Remove ``channels`` from the desired set and build the unsubscribe request."""
        channels = list(dict.fromkeys(channels))
        for c in channels:
            self._desired.pop(c, None)
        method = "private/unsubscribe" if self.authenticated else "public/unsubscribe"
        return self.request(method, {"channels": channels}, now=now)

    def resubscribe(self, *, now: float) -> OutgoingRequest | None:
        """The request that restores the desired set on a new connection (None when nothing is desired)."""
        if not self._desired:
            return None
        return self.subscribe(list(self._desired), now=now)


# ---------------------------------------------------------------------------------------------------- helpers


def _reveal(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.reveal() if isinstance(v, Secret) else v) for k, v in params.items()}


def _strip_tokens(result: Any) -> Any:
    """Auth answers carry tokens; events and logs get ``Secret`` wrappers instead."""
    if isinstance(result, dict) and ("access_token" in result or "refresh_token" in result):
        return {
            k: (Secret(str(v)) if k in ("access_token", "refresh_token") and v is not None else v)
            for k, v in result.items()
        }
    return result


def _clip(text: str | bytes, limit: int = 200) -> str:
    s = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return s if len(s) <= limit else s[:limit] + "..."


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
