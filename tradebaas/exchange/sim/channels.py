"""The simulator's channel registry: who is subscribed to what, and which notification goes to whom.

Why apart from the transport: Deribit's channel grammar (``ticker.{instrument}.{interval}``, ``book.*``,
``trades.*``, ``chart.trades.{instrument}.{resolution}``, ``user.{orders|trades|changes}.{instrument|kind.currency}
.{interval}``, ``user.portfolio.{currency}``) and the routing of the matching core's ``SimEvent``s to the
``user.*`` channels of their account are rules of their own, independent of sockets. A subscriber is anything
with ``channels``, ``account_id`` and ``send`` (the transport's WebSocket connection).

Every notification is encoded once and the same bytes go to every subscriber (that is where the messages/s come
from); the public channels a tick publishes on are looked up by prefix, cached until the subscriptions change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from tradebaas.exchange.deribit import codes
from tradebaas.instruments import Instrument

from .codec import dumpb
from .errors import SimRefusal
from .events import SimEvent
from .marketdata import parse_resolution

INTERVALS = ("raw", "100ms", "agg2")


class Subscriber(Protocol):
    """One client connection as the registry sees it."""

    account_id: str | None
    channels: set[str]

    def send(self, text: str | bytes) -> None: ...


def notification(channel: str, body: bytes) -> bytes:
    """A Deribit subscription notification around an already-encoded ``data`` (encoded once per message)."""
    return b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":' + dumpb(channel) + b',"data":' + body + b"}}"


def _parse_user_channel(ch: str) -> tuple[str, tuple[str, ...]] | None:
    parts = ch.split(".")
    if len(parts) < 3 or parts[0] != "user":
        return None
    return parts[1], tuple(parts[2:])


class ChannelRegistry:
    """Subscriptions of every connection: public channels by name, ``user.*`` channels per account."""

    def __init__(self, instruments: dict[str, Instrument]) -> None:
        self.instruments = instruments
        self.subs: dict[str, set[Subscriber]] = {}
        self._prefix_cache: dict[str, list[str]] = {}  # cleared whenever self.subs changes
        self.user_subs: dict[str, dict[str, set[Subscriber]]] = {}

    # ---- subscribing ------------------------------------------------------------------------------------------

    def subscribe(self, conn: Subscriber, chans: Iterable[str], private: bool, account_id: str | None,
                  on_new: Callable[[Subscriber, str], None]) -> list[str]:
        """Subscribe ``conn`` to the valid channels among ``chans`` (others are left out of the answer, as Deribit
        does); ``on_new`` runs for each channel that is new to the connection. A raw public channel without
        authentication is refused (13778) after the channels before it were subscribed."""
        ok: list[str] = []
        for ch in chans:
            if self._valid_channel(ch, conn, private, account_id):
                if ch not in conn.channels:
                    self._sub(conn, ch, account_id)
                    on_new(conn, ch)
                ok.append(ch)
        return ok

    def unsubscribe(self, conn: Subscriber, chans: Iterable[str]) -> list[str]:
        """Drop the given channels of ``conn``; returns those it had."""
        removed = [ch for ch in chans if ch in conn.channels]
        for ch in removed:
            self._unsub(conn, ch)
        return removed

    def unsubscribe_all(self, conn: Subscriber) -> None:
        for ch in list(conn.channels):
            self._unsub(conn, ch)

    def drop_private(self, conn: Subscriber) -> None:
        """Drop the ``user.*`` channels of ``conn`` (it logged out)."""
        for ch in [c for c in conn.channels if c.startswith("user.")]:
            self._unsub(conn, ch)

    def _valid_channel(self, ch: str, conn: Subscriber, private: bool, account_id: str | None) -> bool:
        parts = ch.split(".")
        if parts[0] == "user":
            if not private:
                return False
            if parts[1] == "portfolio":
                return len(parts) == 3
            if parts[1] in ("orders", "trades", "changes"):
                if parts[-1] not in INTERVALS or len(parts) not in (4, 5):
                    return False
                return len(parts) == 5 or parts[2] in self.instruments
            return False
        if parts[0] == "chart" and len(parts) == 4 and parts[1] == "trades":
            if parts[2] not in self.instruments:
                return False
            try:
                parse_resolution(parts[3])
            except ValueError:
                return False
            return True
        if parts[0] in ("ticker", "trades", "book") and len(parts) == 3:
            if parts[1] not in self.instruments or parts[2] not in INTERVALS:
                return False
            if parts[2] == "raw" and conn.account_id is None and account_id is None:
                raise SimRefusal(codes.RAW_SUBSCRIPTIONS_NOT_AVAILABLE_FOR_UNAUTHORIZED)
            return True
        return False

    def _sub(self, conn: Subscriber, ch: str, account_id: str | None) -> None:
        conn.channels.add(ch)
        if ch.startswith("user."):
            acc = account_id or conn.account_id
            assert acc is not None
            self.user_subs.setdefault(acc, {}).setdefault(ch, set()).add(conn)
        else:
            self.subs.setdefault(ch, set()).add(conn)
            self._prefix_cache.clear()

    def _unsub(self, conn: Subscriber, ch: str) -> None:
        conn.channels.discard(ch)
        if ch.startswith("user."):
            for subs in self.user_subs.values():
                s = subs.get(ch)
                if s is not None:
                    s.discard(conn)
                    if not s:
                        del subs[ch]
        else:
            s = self.subs.get(ch)
            if s is not None:
                s.discard(conn)
                if not s:
                    del self.subs[ch]
                    self._prefix_cache.clear()

    # ---- public channels ----------------------------------------------------------------------------------------

    def has_prefix(self, prefix: str) -> bool:
        return bool(self.with_prefix(prefix))

    def with_prefix(self, prefix: str) -> list[str]:
        """Subscribed public channels starting with ``prefix``; cached until the subscriptions change (the feed
        asks this several times per tick and instrument)."""
        chans = self._prefix_cache.get(prefix)
        if chans is None:
            chans = self._prefix_cache[prefix] = [ch for ch in self.subs if ch.startswith(prefix)]
        return chans

    def publish_prefix(self, prefix: str, data: Any) -> None:
        """Send ``data`` on every subscribed channel starting with ``prefix`` (encoded once)."""
        chans = self.with_prefix(prefix)
        if not chans:
            return
        body = dumpb(data)
        for ch in chans:
            self._publish_raw(ch, body)

    def publish(self, channel: str, data: Any) -> None:
        self._publish_raw(channel, dumpb(data))

    def _publish_raw(self, channel: str, body: bytes) -> None:
        conns = self.subs.get(channel)
        if not conns:
            return
        text = notification(channel, body)
        for c in list(conns):
            c.send(text)

    # ---- user channels ------------------------------------------------------------------------------------------

    def portfolio_accounts(self) -> list[str]:
        """Accounts with at least one live ``user.portfolio.*`` subscription."""
        return [acct for acct, subs in self.user_subs.items()
                if any(ch.startswith("user.portfolio.") and conns for ch, conns in subs.items())]

    def route_events(self, events: list[SimEvent]) -> None:
        """Send each event of the matching core on every ``user.*`` channel of its account that selects it."""
        for ev in events:
            subs = self.user_subs.get(ev.account_id)
            if not subs:
                continue
            for ch, conns in list(subs.items()):
                data = self._event_data_for(ch, ev)
                if data is None or not conns:
                    continue
                text = notification(ch, dumpb(data))
                for c in list(conns):
                    c.send(text)

    def _event_data_for(self, ch: str, ev: SimEvent) -> Any:
        parsed = _parse_user_channel(ch)
        if parsed is None:
            return None
        kind, rest = parsed
        if kind == "portfolio":
            if ev.kind != "user.portfolio":
                return None
            cur = str(ev.data.get("currency", "")) if isinstance(ev.data, dict) else ""
            return ev.data if rest and rest[0].lower() == cur.lower() else None
        if f"user.{kind}" != ev.kind:
            return None
        interval = rest[-1]
        if not self._matches_instrument(rest[:-1], ev.instrument):
            return None
        if kind == "orders" and interval != "raw":
            return [ev.data]
        return ev.data

    def _matches_instrument(self, sel: tuple[str, ...], instrument: str | None) -> bool:
        if len(sel) == 1:
            return sel[0] == instrument
        if len(sel) != 2 or instrument is None:
            return False
        kind, cur = sel
        inst = self.instruments.get(instrument)
        if inst is None:
            return False
        if kind not in ("any", inst.kind):
            return False
        return cur.lower() == "any" or cur.upper() in (inst.base_currency, inst.settlement_currency)
