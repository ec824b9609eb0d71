"""The client side of one engine RPC conversation, sans I/O: both engine clients are thin front ends on it.

Like the ``websockets`` library's protocol class (and ``tradebaas.exchange.deribit.protocol``), this holds every
rule of the conversation and touches no socket, clock, thread or event loop:

- framing: ``request(...)`` registers a request and returns the text frame to write; ``receive(frame)`` turns one
  incoming frame into events (``Reply`` for an answer someone waits for, ``Deliver`` for each subscription
  callback an event must reach, ``Ignored`` for anything else, kept for logging). It never raises on bad input;
- ids are unique for the life of the session, never reused across reconnects, so a late answer can never be
  taken for a newer request's;
- subscriptions (channel -> callbacks) survive reconnects: ``connection_made()`` hands back the ``subscribe``
  frame that restores them on a new connection and, on a *re*-connection, a ``Deliver`` for every
  ``on_reconnect`` callback;
- the connection state (``State``) and what a call may do in each (``check_call``);
- the reconnect policy (``Backoff``): capped exponential back-off, reset by a successful connection. Every
  failure while reconnecting is retried until ``close()``: the policy never gives up by itself.

A "waiter" is whatever the front end waits on (a ``concurrent.futures.Future``, an ``asyncio.Future``): the
session only stores it with the request and hands it back in ``Reply`` or from ``connection_lost()``/``close()``.
Callbacks are opaque values too: the session says which to call with what; the front end calls them. The session
is not thread-safe: the synchronous client guards it with one lock; the async one uses it from one loop.
"""

from __future__ import annotations

import enum
import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tradebaas.errors import EngineNotRunning, UserError
from tradebaas.rpc.protocol import RpcError, channel_matches, valid_channel

W = TypeVar("W")
Callback = Callable[..., Any]

#: First and longest pause between reconnection attempts (seconds).
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 2.0


class ConnectionLost(EngineNotRunning):
    """The connection dropped while a call was waiting for its answer (the call may or may not have run)."""


class State(enum.Enum):
    CONNECTING = "connecting"  # before the first connection
    OPEN = "open"
    RECONNECTING = "reconnecting"  # dropped; the front end keeps trying until close()
    LOST = "lost"  # dropped with reconnect=False: calls fail at once
    CLOSED = "closed"  # close() was called


# --------------------------------------------------------------------------------------------------- events


@dataclass(slots=True, frozen=True)
class Outgoing:
    """A request frame to write, and the id its answer will carry."""

    id: int
    method: str
    text: str = field(repr=False)


@dataclass(slots=True, frozen=True)
class Reply(Generic[W]):
    """The answer object (``result`` or ``error``) to a request a waiter waits for."""

    id: int
    method: str
    waiter: W
    answer: dict[str, Any]


@dataclass(slots=True, frozen=True)
class Deliver:
    """Call ``callback(*args)`` (on the front end's callback thread or task): a pushed event or a reconnection."""

    callback: Callback
    args: tuple[Any, ...]


@dataclass(slots=True, frozen=True)
class Ignored:
    """A frame that is neither a pushed event nor an answer anyone waits for (kept for logging)."""

    reason: str
    warn: bool = False  # True when it points to a problem (bad JSON, a failed resubscribe), not a late answer


Event = Reply[W] | Deliver | Ignored


def apply_events(events: list[Event[Any]], deliver: Callable[[tuple[Callback, tuple[Any, ...]]], None],
                 log: logging.Logger) -> None:
    """Carry out what the session decided: answer the waiters, hand pushed events to ``deliver`` (the sync
    client's queue or the async client's), log the frames nobody waits for. One body for both front ends, so
    they cannot drift apart in how a late answer or a pushed event is treated."""
    for event in events:
        if isinstance(event, Reply):
            if not event.waiter.done():
                event.waiter.set_result(event.answer)
        elif isinstance(event, Deliver):
            deliver((event.callback, event.args))
        elif isinstance(event, Ignored):
            log.log(logging.WARNING if event.warn else logging.DEBUG, "%s; ignored", event.reason)


@dataclass(slots=True, frozen=True)
class Opened:
    """What a new connection needs: frames to write before it is usable, callbacks to run once it is."""

    frames: list[Outgoing]
    deliveries: list[Deliver]


@dataclass(slots=True)
class _Pending(Generic[W]):
    method: str
    waiter: W | None  # None = internal (the resubscribe on reconnect): its answer is swallowed


# ------------------------------------------------------------------------------------------------- helpers


def arity(callback: Callback) -> int:
    """How a subscription callback wants its event: 1 -> ``callback(data)``; 2 -> ``callback(channel, data)``."""
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


def answer_result(answer: dict[str, Any]) -> Any:
    """The ``result`` of an answer object, or its ``error`` raised as ``RpcError``."""
    if "error" in answer:
        err = answer["error"] or {}
        if not isinstance(err, dict):
            err = {"message": str(err)}
        raise RpcError(_int(err.get("code")), str(err.get("message", "unknown error")), err.get("data"))
    return answer.get("result")


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return -32603


class Backoff:
    """Capped exponential back-off: 0.05 s, 0.1 s, ... 2 s, 2 s ... until ``reset()`` (a connection worked)."""

    def __init__(self, first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S) -> None:
        self.first_s, self.max_s = first_s, max_s
        self.attempts = 0

    def next_delay(self) -> float:
        """The pause before the next attempt; each call counts one failed attempt."""
        delay = min(self.max_s, self.first_s * 2 ** min(self.attempts, 30))
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0


# ------------------------------------------------------------------------------------------------- session


class ClientSession(Generic[W]):
    """One client's conversation with the engine across connections (see the module docstring)."""

    def __init__(self, *, reconnect: bool = True) -> None:
        self.reconnect = reconnect
        self.state = State.CONNECTING
        self.connections = 0
        self.backoff = Backoff()
        self._next_id = 1
        self._pending: dict[int, _Pending[W]] = {}
        self._subs: dict[str, list[tuple[Callback, int]]] = {}
        self._on_reconnect: list[Callable[[], Any]] = []

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def reconnects(self) -> int:
        """Connections made after the first one."""
        return max(0, self.connections - 1)

    @property
    def is_open(self) -> bool:
        return self.state is State.OPEN

    @property
    def wants_connection(self) -> bool:
        """True while the front end should (re)connect: not closed, and not given up (reconnect=False)."""
        return self.state in (State.CONNECTING, State.RECONNECTING)

    def check_call(self, url: str) -> None:
        """Raise what a call must raise in this state before it waits for a connection (nothing when it may)."""
        if self.state is State.CLOSED:
            raise UserError("this engine client is closed")
        if self.state is State.LOST:
            raise ConnectionLost(f"connection to the engine ({url}) was lost")

    def connection_made(self) -> Opened:
        """A (new) connection is up: the frame restoring every subscription, and on a reconnection the
        ``on_reconnect`` callbacks to run once that frame is written. Resets the back-off."""
        self.connections += 1
        self.state = State.OPEN
        self.backoff.reset()
        frames: list[Outgoing] = []
        if self._subs:
            frames.append(self._register("subscribe", {"channels": sorted(self._subs)}, None))
        deliveries = [Deliver(cb, ()) for cb in self._on_reconnect] if self.connections > 1 else []
        return Opened(frames, deliveries)

    def connection_lost(self) -> list[W]:
        """The connection is gone: the waiters to fail (their requests may or may not have run). The session
        then reconnects (``RECONNECTING``) unless it was closed or built with ``reconnect=False`` (``LOST``)."""
        if self.state is not State.CLOSED:
            self.state = State.RECONNECTING if self.reconnect else State.LOST
        return self._drain()

    def close(self) -> list[W]:
        """The user closed the client: the waiters to fail; no more connections."""
        self.state = State.CLOSED
        return self._drain()

    def _drain(self) -> list[W]:
        pending, self._pending = self._pending, {}
        return [p.waiter for p in pending.values() if p.waiter is not None]

    # -- requests --------------------------------------------------------------------------------------------
    def request(self, method: str, params: dict[str, Any] | None, waiter: W) -> Outgoing:
        """Register a request whose answer ``waiter`` waits for; returns the frame to write. Raises
        ``TypeError``/``ValueError`` (nothing registered) when ``params`` cannot be encoded as JSON."""
        return self._register(method, params or {}, waiter)

    def _register(self, method: str, params: dict[str, Any], waiter: W | None) -> Outgoing:
        request_id = self._next_id
        text = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        self._next_id += 1
        self._pending[request_id] = _Pending(method, waiter)
        return Outgoing(request_id, method, text)

    def forget(self, request_id: int) -> None:
        """Stop waiting for ``request_id`` (its caller timed out or the frame could not be written)."""
        self._pending.pop(request_id, None)

    @property
    def pending(self) -> int:
        """How many requests await an answer."""
        return len(self._pending)

    # -- subscriptions ---------------------------------------------------------------------------------------
    def add_callback(self, channel: str, callback: Callback) -> bool:
        """Register ``callback`` on ``channel``; True when the channel is new (the engine must be told)."""
        if not valid_channel(channel):
            raise UserError(f"bad channel name {channel!r}")
        new = channel not in self._subs
        self._subs.setdefault(channel, []).append((callback, arity(callback)))
        return new

    def drop_channel(self, channel: str) -> None:
        """Forget ``channel`` and its callbacks (its ``subscribe`` call failed)."""
        self._subs.pop(channel, None)

    def remove_callback(self, channel: str, callback: Callback | None = None) -> bool:
        """Remove ``callback`` (or every callback) from ``channel``; True when none remain (tell the engine)."""
        callbacks = self._subs.get(channel, [])
        remaining = [] if callback is None else [(c, a) for c, a in callbacks if c is not callback]
        if remaining:
            self._subs[channel] = remaining
            return False
        self._subs.pop(channel, None)
        return True

    @property
    def channels(self) -> list[str]:
        return sorted(self._subs)

    def on_reconnect(self, callback: Callable[[], Any]) -> None:
        self._on_reconnect.append(callback)

    # -- receive ---------------------------------------------------------------------------------------------
    def receive(self, frame: str | bytes) -> list[Event[W]]:
        """One incoming frame -> events. Never raises: anything unexpected becomes ``Ignored``."""
        try:
            msg = json.loads(frame)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return [Ignored("the engine sent a frame that is not JSON", warn=True)]
        if not isinstance(msg, dict):
            return [Ignored("the engine sent a frame that is not a JSON object", warn=True)]
        if msg.get("method") == "event":
            return list(self._deliveries(msg.get("params")))
        req_id = msg.get("id")
        pending = self._pending.pop(req_id, None) if type(req_id) is int else None
        if pending is None or type(req_id) is not int:
            return [Ignored(f"an answer nobody waits for (id {req_id!r})")]
        if pending.waiter is None:
            if "error" in msg:
                return [Ignored(f"the engine refused {pending.method} after reconnecting: {msg['error']!r}", warn=True)]
            return []
        return [Reply(req_id, pending.method, pending.waiter, msg)]

    def _deliveries(self, params: Any) -> list[Event[W]]:
        if not isinstance(params, dict) or not isinstance(params.get("channel", ""), str):
            return [Ignored("an event without a channel", warn=True)]
        channel, data = params.get("channel", ""), params.get("data")
        return [
            Deliver(cb, (channel, data) if n == 2 else (data,))
            for pattern, cbs in self._subs.items() if channel_matches(pattern, channel)
            for cb, n in cbs
        ]
