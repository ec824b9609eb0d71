"""Clock-aligned candles from market data: a pure builder (no clock, no I/O).

A candle covers ``[t, t + interval)``, ``t`` a multiple of the interval in exchange time (UTC). It is closed at
the first market event at or after ``t + interval`` (a trade, a chart bar of a later minute, or any other event
passed to ``on_event``), or by ``on_timer(now_ms)`` once ``now_ms >= t + interval + grace`` (1 s) when no event
came. Minutes without any trade repeat the previous close with zero volume, so the candle stream has no holes.
Events older than the forming candle are late (that candle was already emitted) and are counted, not applied.

Two inputs, use one per builder:
- ``on_trade(price, amount, ts_ms)`` for individual trades (Deribit ``trades.{inst}.raw``);
- ``on_bar(tick_ms, open, high, low, close, volume)`` for Deribit ``chart.trades.{inst}.1`` updates, which re-send
  the forming bar while it grows: the last update of a minute replaces the earlier ones.
Every method returns the list of candles it closed, oldest first (usually empty, one at a minute's end).
"""

from __future__ import annotations

from tradebaas.domain import Candle


class CandleBuilder:
    """Builds closed, clock-aligned OHLCV candles (exchange time) from trades or chart-bar updates."""

    __slots__ = ("interval_ms", "grace_ms", "late_events", "_start", "_has", "_o", "_h", "_l", "_c", "_v", "_last_close")

    def __init__(self, interval_ms: int = 60_000, grace_ms: int = 1_000) -> None:
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        self.interval_ms = interval_ms
        self.grace_ms = grace_ms
        self.late_events = 0
        self._start: int | None = None  # start of the forming candle (None before the first event)
        self._has = False  # whether the forming candle saw any trade/bar
        self._o = self._h = self._l = self._c = self._v = 0.0
        self._last_close: float | None = None

    # --- state -------------------------------------------------------------------------------------------------

    @property
    def forming(self) -> Candle | None:
        """The candle being built (not closed; strategies never see it), or None before any data."""
        if self._start is None:
            return None
        if self._has:
            return Candle(self._start, self._o, self._h, self._l, self._c, self._v)
        if self._last_close is None:
            return None
        p = self._last_close
        return Candle(self._start, p, p, p, p, 0.0)

    @property
    def next_close_ms(self) -> int | None:
        """When the forming candle's minute ends (exchange time); the timer closes it ``grace_ms`` later."""
        return None if self._start is None else self._start + self.interval_ms

    def align(self, ts_ms: int) -> int:
        return ts_ms - ts_ms % self.interval_ms

    def prime(self, last: Candle) -> None:
        """Continue after history (e.g. warm-up candles from ``get_tradingview_chart_data``): the next candle is the
        one after ``last``, and empty minutes repeat ``last.close``."""
        self._start = last.ts_ms + self.interval_ms
        self._has = False
        self._last_close = last.close

    # --- inputs ------------------------------------------------------------------------------------------------

    def on_trade(self, price: float, amount: float, ts_ms: int) -> list[Candle]:
        """One trade at exchange time ``ts_ms``; closes the candles that ended at or before it."""
        out = self._close_until(ts_ms)
        start = self._start
        if start is None:
            self._start = self.align(ts_ms)
        elif ts_ms < start:
            self.late_events += 1
            return out
        if self._has:
            if price > self._h:
                self._h = price
            elif price < self._l:
                self._l = price
            self._c = price
            self._v += amount
        else:
            self._o = self._h = self._l = self._c = price
            self._v = amount
            self._has = True
        return out

    def on_bar(self, tick_ms: int, open: float, high: float, low: float, close: float, volume: float) -> list[Candle]:
        """A ``chart.trades`` bar update for the bar starting at ``tick_ms``; the latest update of a bar wins."""
        tick_ms = self.align(tick_ms)
        out = self._close_until(tick_ms)
        start = self._start
        if start is None:
            self._start = tick_ms
        elif tick_ms < start:
            self.late_events += 1
            return out
        self._o, self._h, self._l, self._c, self._v = open, high, low, close, volume
        self._has = True
        return out

    def on_event(self, ts_ms: int) -> list[Candle]:
        """Any other market event (ticker, book) at exchange time ``ts_ms``: closes candles that ended by then."""
        return self._close_until(ts_ms)

    def on_timer(self, now_ms: int) -> list[Candle]:
        """A timer tick at ``now_ms`` (the runner's estimate of exchange time): closes a candle whose minute ended
        at least ``grace_ms`` ago although no event came."""
        return self._close_until(now_ms - self.grace_ms)

    # --- internals ---------------------------------------------------------------------------------------------

    def _close_until(self, ts_ms: int) -> list[Candle]:
        start = self._start
        if start is None or start + self.interval_ms > ts_ms:
            return []
        out: list[Candle] = []
        step = self.interval_ms
        while start + step <= ts_ms:
            if self._has:
                out.append(Candle(start, self._o, self._h, self._l, self._c, self._v))
                self._last_close = self._c
                self._has = False
            elif self._last_close is not None:
                p = self._last_close
                out.append(Candle(start, p, p, p, p, 0.0))
            start += step
        self._start = start
        return out
