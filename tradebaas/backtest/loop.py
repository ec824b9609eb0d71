"""The backtester's candle loop, shared by the candle-by-candle run and the array run of an ``ArrayStrategy``.

One loop, so both runs fill, book and keep counters with the very same code (the semantics are in
``backtester.py``'s docstring). The candle-by-candle run calls ``on_candle`` on every candle. The array run
(``ArrayPlan``) has computed the strategy's declared series once with numpy and visits only the candles where
something can happen: intents to fill, a bracket or a wake level reached (``position_wake``), an entry signal
while flat (``signals``); it calls ``decide`` on those of them where the strategy may act (a wake level or a
signal). On every other candle nothing would happen: no fill, no exit, and by the
strategy's promises (``strategies/arrays.py``) no intent and no change of its state; the daily count rolls over
lazily, which ``roll_day`` (monotonic times) makes the same. So both runs make the same trades and keep the same
decisions with intents (tests/unit/test_backtest_arrays.py holds them to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tradebaas import fillmodel
from tradebaas.domain import Candle, Direction, Liquidity
from tradebaas.instruments import Instrument
from tradebaas.strategies.arrays import ArrayStrategy, ArrayValues
from tradebaas.strategies.base import (
    Decision,
    Enter,
    Exit,
    MoveStop,
    PositionView,
    StrategyContext,
    apply_move_stop,
    record_close,
    record_entry,
    roll_day,
)
from tradebaas.strategies.series import CandleArrays

NEVER_TS = 2**63 - 1


@dataclass(slots=True)
class CandleLists:
    """Candle columns as Python lists (indexing a list is what a per-candle loop can afford)."""

    ts: list[int]
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[float]

    @classmethod
    def from_arrays(cls, a: CandleArrays) -> CandleLists:
        return cls(a.ts_ms.tolist(), a.open.tolist(), a.high.tolist(), a.low.tolist(), a.close.tolist(),
                   a.volume.tolist())

    def __len__(self) -> int:
        return len(self.ts)

    def candle(self, i: int) -> Candle:
        return Candle(self.ts[i], self.open[i], self.high[i], self.low[i], self.close[i], self.volume[i])


class CandleRows:
    """Candles read one at a time from the arrays, for the array run that visits only some of them (turning
    every column of a million candles into Python objects would cost more than the visits)."""

    __slots__ = ("ts", "open", "high", "low", "close", "volume")

    def __init__(self, a: CandleArrays) -> None:
        self.ts, self.open, self.high, self.low, self.close, self.volume = (
            a.ts_ms, a.open, a.high, a.low, a.close, a.volume)

    def __len__(self) -> int:
        return len(self.ts)

    def candle(self, i: int) -> Candle:
        return Candle(self.ts.item(i), self.open.item(i), self.high.item(i), self.low.item(i), self.close.item(i),
                      self.volume.item(i))


class ArrayPlan:
    """The array run's knowledge before the loop: every declared value, and where ``decide`` may act.

    ``first``: the first candle the loop runs (earlier ones are the warm-up, which only feeds the arrays).
    ``cache`` (a ``vectorized.ArrayCache`` of these exact candles) shares series across the runs of a sweep.
    """

    def __init__(self, strat: ArrayStrategy, a: CandleArrays, first: int, cache: Any = None) -> None:
        n = len(a)
        full: dict[str, np.ndarray] = {}
        for name, s in strat.declared().items():
            arr = cache.series(s, a) if cache is not None else s.array(a)
            if len(arr) != n:
                raise ValueError(f"{type(strat).__name__}: series {name!r} has {len(arr)} values for {n} candles")
            full[name] = arr
        self.values = ArrayValues(full)
        sig = strat.signals(full, a)
        self.candidates: list[int] | None = None
        self.signal: np.ndarray | None = None
        if sig is not None:
            sig = np.asarray(sig)
            if sig.shape != (n,):
                raise ValueError(f"{type(strat).__name__}.signals gave shape {sig.shape} for {n} candles")
            self.signal = sig
            at = np.flatnonzero(sig)
            self.candidates = at[at >= first].tolist()
        self._k = 0
        self.n = n
        self.top = np.maximum(a.high, a.open).tolist()  # what a candle reaches, its open included (a gap)
        self.bottom = np.minimum(a.low, a.open).tolist()
        self._decide = strat.decide
        self._wake = strat.position_wake

    def decision(self, candle: Candle, i: int, ctx: StrategyContext) -> Decision:
        values = self.values
        values.i = i
        return self._decide(candle, values, ctx)

    def _levels(self, pos: PositionView) -> tuple[float, float] | None:
        """(up, down): a candle reaching either may need ``decide`` or exit ``pos``; None: every candle may."""
        wake = self._wake(pos)
        if wake is None:
            return None
        up, down = wake
        if pos.direction is Direction.LONG:
            hi, lo = pos.take_price, pos.stop_price
        else:
            hi, lo = pos.stop_price, pos.take_price
        if hi is not None and not hi >= up:
            up = hi
        if lo is not None and not lo <= down:
            down = lo
        return up, down

    def acts(self, i: int, pos: PositionView | None) -> bool:
        """Whether ``decide`` may act on candle ``i`` (visited anyway, e.g. to fill an order) given ``pos``."""
        if pos is None:
            return self.signal is None or bool(self.signal.item(i))
        levels = self._levels(pos)
        return levels is None or self.top[i] >= levels[0] or self.bottom[i] <= levels[1]

    def next_index(self, i: int, pos: PositionView | None) -> int:
        """The next candle after ``i`` on which anything can happen (``n``: none), with nothing pending."""
        if pos is None:
            cand = self.candidates
            if cand is None:
                return i + 1
            k, m = self._k, len(cand)
            while k < m and cand[k] <= i:
                k += 1
            self._k = k
            return cand[k] if k < m else self.n
        levels = self._levels(pos)
        if levels is None:
            return i + 1
        up, down = levels
        top, bottom, n = self.top, self.bottom, self.n
        j = i + 1
        while j < n and top[j] < up and bottom[j] > down:
            j += 1
        return j


def run_loop(strat: Any, cols: CandleLists | CandleRows, first: int, step: int, inst: Instrument, slip: float,
             strategy_id: str, keep: str, intrabar: str, swapper: Any = None, plan: ArrayPlan | None = None,
             ) -> tuple[list[dict[str, Any]], list[Decision], PositionView | None]:
    """Candles ``first..`` of ``cols``: fills, brackets, bookkeeping, decisions. Returns (trade rows, kept
    decisions, the open position at the end). ``plan``: the array run (``decide`` on the candles that need it)."""
    ctx = StrategyContext(inst)
    if keep != "all" and hasattr(strat, "verbose_skips"):
        strat.verbose_skips = False  # skipped decisions are not kept: do not compute their indicator values
    cooldown_ms = int(getattr(strat, "cooldown_ms", 0) or 0)
    strat.on_start(ctx)
    on_candle = strat.on_candle
    candle_exit = fillmodel.candle_exit
    fee = fillmodel.fee
    pnl = fillmodel.realized_pnl
    taker = Liquidity.TAKER
    currency = inst.settlement_currency
    trades: list[dict[str, Any]] = []
    kept: list[Decision] = []
    keep_all, keep_actions = keep == "all", keep == "actions"
    pending: tuple = ()
    sizing_price = 0.0
    entry_fee = 0.0
    seq = 0
    day = -1
    next_swap = swapper.next_ts if swapper is not None else NEVER_TS
    entry_generation = 0
    candle_at = cols.candle
    n = len(cols)

    def close(pos: PositionView, price: float, liquidity: Liquidity, reason: str, ts: int, book_ts: int) -> None:
        exit_fee = fee(inst, pos.amount, price, liquidity)
        trades.append({
            "trade_id": pos.trade_id, "strategy_id": strategy_id, "instrument": inst.name,
            "direction": pos.direction.value, "entry_ts_ms": pos.opened_ts_ms, "exit_ts_ms": ts,
            "entry_price": pos.entry_price, "exit_price": price, "amount": pos.amount,
            "pnl": pnl(inst, pos.direction.sign, pos.amount, pos.entry_price, price),
            "fees": entry_fee + exit_fee, "exit_reason": reason, "currency": currency,
        })
        record_close(ctx, book_ts, cooldown_ms)

    i = first if plan is None else plan.next_index(first - 1, None)
    while i < n:
        candle = candle_at(i)
        ts, o = candle.ts_ms, candle.open
        if pending:
            for intent in pending:
                pos = ctx.position
                if type(intent) is Exit:
                    if pos is not None:
                        px = fillmodel.apply_slippage(o, pos.direction.exit_side, slip)
                        close(pos, px, taker, intent.reason or "exit", ts, ts)
                elif type(intent) is Enter and pos is None:
                    d = intent.direction
                    px = fillmodel.apply_slippage(o, d.entry_side, slip)
                    amount = inst.amount_for_notional(intent.notional_usd, sizing_price)
                    sl = tp = None
                    if intent.sl_pct is not None or intent.tp_pct is not None:
                        sl, tp = fillmodel.bracket_prices(inst, d, px, intent.sl_pct or 0.0, intent.tp_pct or 0.0)
                        sl = sl if intent.sl_pct is not None else None
                        tp = tp if intent.tp_pct is not None else None
                    seq += 1
                    entry_fee = fee(inst, amount, px, taker)
                    record_entry(ctx, PositionView(d, amount, px, sl, tp, ts, f"bt-{seq}"), ts, cooldown_ms)
                    if swapper is not None:
                        swapper.trade_segments[f"bt-{seq}"] = entry_generation
            pending = ()
        pos = ctx.position
        if pos is not None and (pos.stop_price is not None or pos.take_price is not None):
            ex = candle_exit(pos.direction, pos.stop_price, pos.take_price, candle, intrabar)
            if ex is not None:
                # a gap through the order fills at the open's instant (live: the first tick); otherwise the exit is
                # booked at the candle's last millisecond, which gives cooldowns the effect of any moment inside it
                close(pos, ex.price, ex.liquidity, ex.kind, ts, ts if ex.at_open else ts + step - 1)
        now = ts + step
        if now // 86_400_000 != day:
            day = now // 86_400_000
            roll_day(ctx, now)
        if ts >= next_swap and swapper is not None:
            strat = swapper.swap(ts, ctx, inst, keep_all)
            on_candle = strat.on_candle
            cooldown_ms = int(getattr(strat, "cooldown_ms", 0) or 0)
            next_swap = swapper.next_ts
        if plan is None:
            decision = on_candle(candle, ctx)
        elif plan.acts(i, ctx.position):
            decision = plan.decision(candle, i, ctx)
        else:  # visited to fill or exit only: by the strategy's promises ``decide`` would not act here
            i = plan.next_index(i, ctx.position)
            continue
        intents = decision.intents
        if intents:
            market = []
            for intent in intents:
                if type(intent) is MoveStop:
                    apply_move_stop(ctx, intent)
                else:
                    market.append(intent)
            if market:
                pending = tuple(market)
                sizing_price = candle.close
                if swapper is not None:
                    entry_generation = swapper.generation
            if keep_actions:
                kept.append(decision)
        if keep_all:
            kept.append(decision)
        i = i + 1 if plan is None or pending else plan.next_index(i, ctx.position)
    return trades, kept, ctx.position
