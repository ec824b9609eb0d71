"""The simulator's market feed: each tick of the simulated clock goes to the public views, the matching core and
the subscribers, instrument by instrument.

Why apart from the transport: the feed is the one place that decides when a tick happens (the simulated clock),
in which order its consequences are applied (view, core, then the tick's public publications and after them the
user events it caused, per instrument: a client sees the price move before the fill it triggered, so a candle that
the tick closes is closed before the fill that belongs to the next one) and what a restart replays (``prime``). The transport only serves requests and connections.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from .channels import ChannelRegistry
from .clock import SimClock
from .faults import Faults
from .market import MarketTick
from .marketdata import MarketData, PriceTick, parse_resolution, quote_for
from .public import PublicViews, public_amount

log = logging.getLogger("tradebaas.sim")

#: Periodic ``user.portfolio``: on market moves, at most once per simulated second and 10 times per real second.
PORTFOLIO_INTERVAL_MS = 1000
PORTFOLIO_MIN_REAL_S = 0.1


class MarketFeed:
    """Ticks in simulated time -> views, core (``exchange``, may be None) and channels; ``on_change`` is called
    once per tick that changed the core's state, after every instrument had it (the server journals the change:
    a record then always holds every instrument's market at the same tick, which is what ``prime`` relies on)."""

    _next_ts: int  # the first tick time ``run`` emits (set by ``prime``)

    def __init__(self, exchange: Any, data: MarketData, clock: SimClock, faults: Faults, views: PublicViews,
                 channels: ChannelRegistry, on_change: Callable[[], None]) -> None:
        self.exchange = exchange
        self.data = data
        self.clock = clock
        self.faults = faults
        self.views = views
        self.channels = channels
        self.on_change = on_change
        self.ticks_emitted = 0
        self._portfolio_ms = 0  # simulated and real time of the last periodic user.portfolio push
        self._portfolio_real = 0.0

    def prime(self) -> None:
        """Replay the last minutes before the clock without publishing, so tickers, trades and the forming bar
        exist from the first request (and the core has a price for market orders).

        Ticks the core has already seen (its markets' ``ts_ms``, restored from the snapshot and journal) only
        rebuild the server's view: restored orders must not fire again at old prices. Ticks after that but not after
        the restored clock are ones the core never saw (the feed was behind the clock), or saw without any effect
        worth a journal record (a tick that changed orders or balances is journaled with the markets it left, so it
        is never given twice; one that changed nothing but prices gives the same nothing again): they go to the
        core in order, so an order the market reached in that gap still fills.
        """
        now = self.clock.now_ms()
        seen = self._core_seen_ms()
        expected: int | None = None  # the tick that follows the core's last one
        if seen is not None and seen > now:
            # The clock went back past the core's last tick (``--start`` earlier, or a state of ``--clock
            # present`` replayed with its own timestamps): the core follows the new clock, from a jump.
            seen = now - 10 * 60_000 - 1
        elif seen is not None:
            nxt = next(iter(self.data.ticks_from(seen + 1)), None)
            expected = nxt.ts_ms if nxt is not None else None
        first = True
        last: PriceTick | None = None
        for tick in self.data.ticks_from(now - 10 * 60_000):
            if tick.ts_ms > now:
                break
            to_core = seen is not None and tick.ts_ms > seen
            if to_core and first:
                first = False
                if tick.ts_ms != expected and tick.continuous:  # a jump from the core's last price (--start)
                    tick = dataclasses.replace(tick, continuous=False)
            self.apply_tick(tick, publish=False, to_exchange=to_core)
            last = tick
        if last is None:
            last = self.data.last_tick_before(now + 1) or next(iter(self.data.ticks_from(now)), None)
            if last is not None:
                self.apply_tick(last, publish=False, to_exchange=False)
        if last is not None and not (seen is not None and last.ts_ms > seen):
            # The price at the restored clock becomes the core's current market (a jump, never a path).
            self._feed_exchange(dataclasses.replace(last, continuous=False))
        self._next_ts = now + 1

    def _core_seen_ms(self) -> int | None:
        """The time of the last tick the matching core has processed (None without a core)."""
        markets = getattr(self.exchange, "markets", None)
        if not isinstance(markets, dict) or not markets:
            return None
        return min(int(getattr(m, "ts_ms", 0)) for m in markets.values())

    async def run(self) -> None:
        """Emit ticks as the simulated clock reaches them; yield to requests regularly when catching up."""
        n = 0
        try:
            for tick in self.data.ticks_from(self._next_ts):
                while tick.ts_ms > self.clock.now_ms():
                    if self.clock.finished:
                        return
                    await asyncio.sleep(min(0.25, max(0.0005, self.clock.wall_delay_s(tick.ts_ms))))
                self.apply_tick(tick, publish=True)
                n += 1
                if n % 32 == 0:
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - the feed must be visible when it dies
            log.exception("market feed failed")

    def apply_tick(self, tick: PriceTick, publish: bool, to_exchange: bool = True) -> None:
        """One tick, instrument by instrument: view, core (its user events routed at once), publications."""
        self.ticks_emitted += 1
        self.views.chart.on_tick(tick)
        ts = tick.ts_ms
        send = publish and not self.faults.stalled(time.monotonic())
        channels = self.channels
        changed = False
        for name, m in self.views.markets.items():
            q = quote_for(tick, m.inst)
            trade, changes = self.views.instrument_tick(m, tick, q, send and channels.has_prefix(f"book.{name}."))
            events = []
            if self.exchange is not None and to_exchange:
                mt = MarketTick(name, ts, q.last_price, q.mark_price, q.index_price, q.best_bid, q.best_ask,
                                trade["amount"] if trade else 0.0, tick.continuous)
                events = self.exchange.on_market(mt, ts)
                changed = changed or bool(events)
            if not send:
                if events:
                    channels.route_events(events)
                continue
            channels.publish_prefix(f"ticker.{name}.", m.ticker)
            if trade is not None:
                channels.publish_prefix(f"trades.{name}.", [trade])
            if changes is not None:
                bids, asks = changes
                if bids or asks:
                    channels.publish_prefix(f"book.{name}.", {
                        "type": "change", "timestamp": ts, "instrument_name": name, "change_id": m.change_id,
                        "prev_change_id": m.change_id - 1, "bids": bids, "asks": asks})
            prefix = f"chart.trades.{name}."
            for ch in channels.with_prefix(prefix):
                try:
                    bar = self.views.chart.current_bar(parse_resolution(ch[len(prefix):]), ts)
                except ValueError:
                    continue
                if bar is not None:
                    channels.publish(ch, bar.to_deribit())
            if events:  # what the tick caused (fills, triggered orders) after the tick itself, as on an exchange
                channels.route_events(events)
        if changed:  # before the loop writes anything queued above to a socket (``Conn.flush`` commits too)
            self.on_change()
        if send and self.exchange is not None and ts - self._portfolio_ms >= PORTFOLIO_INTERVAL_MS:
            self._push_portfolios(ts)

    def _push_portfolios(self, now_ms: int) -> None:
        """Periodic ``user.portfolio`` to its subscribers (Deribit sends it on a timer, not only on fills), so a
        client sees equity and margins follow the mark. Throttled to one per simulated second and at most
        1/PORTFOLIO_MIN_REAL_S per real second (a fast replay must not flood clients)."""
        real = time.monotonic()
        if real - self._portfolio_real < PORTFOLIO_MIN_REAL_S:
            return
        accounts = self.channels.portfolio_accounts()
        if not accounts:
            return
        self._portfolio_ms, self._portfolio_real = now_ms, real
        self.channels.route_events(self.exchange.portfolio_events(accounts))

    def _feed_exchange(self, tick: PriceTick) -> None:
        """Give one tick to the matching core only (no public trade, chart or publication)."""
        if self.exchange is None:
            return
        changed = False
        for name, m in self.views.markets.items():
            q = quote_for(tick, m.inst)
            amount = public_amount(m.inst, tick.amount_btc, q.last_price) if tick.amount_btc > 0 else 0.0
            mt = MarketTick(name, tick.ts_ms, q.last_price, q.mark_price, q.index_price, q.best_bid, q.best_ask,
                            amount, tick.continuous)
            events = self.exchange.on_market(mt, tick.ts_ms)
            if events:
                self.channels.route_events(events)
                changed = True
        if changed:
            self.on_change()
