"""Razor: the 1-minute BTC-perpetual scalper of docs/razor.md (v1), implemented exactly.

It scores RSI extremes, EMA trend, momentum and a few filters on every closed candle and enters at market with a
stop-loss and a take-profit; break-even moves the stop once per trade. Cooldowns, the daily limit and the open
position are read from ``StrategyContext`` (the runner keeps and persists them, see ``strategies/base.py``);
Razor itself keeps only its indicators, the last 150 candles and which trade it already moved to break-even.
Time comes only from the candles: a candle ``[ts, ts + 60 s)`` is decided at ``ts + 60 s``.

It is an ``ArrayStrategy`` (strategies/arrays.py): its indicators are declared series (live: the incremental
classes of ``indicators.py``; in a backtest: their bitwise-equal arrays), ``signals`` is its scoring over whole
arrays (where a flat Razor can enter), and ``position_wake`` the break-even level (the only thing it acts on while
a position is open). The decision itself is always ``decide``, the same code live and in a backtest.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from tradebaas.domain import Candle, Direction
from tradebaas.strategies import series as sr
from tradebaas.strategies.arrays import NEVER, ArrayStrategy
from tradebaas.strategies.base import (
    DAY_MS,
    Decision,
    Enter,
    MoveStop,
    Param,
    PositionView,
    StrategyContext,
)
from tradebaas.strategies.series import CandleArrays, Series

PARAMS: tuple[Param, ...] = (
    Param("instrument", str, "BTC_USDC-PERPETUAL", help="Deribit instrument the strategy trades"),
    Param("tradeSize", float, 100.0, 0, 10_000_000, "position size in USD notional per trade"),
    Param("stopLossPercent", float, 0.5, 0, 50, "stop-loss distance from the entry fill, percent"),
    Param("takeProfitPercent", float, 0.65, 0, 100, "take-profit distance from the entry fill, percent"),
    Param("maxConcurrentTrades", int, 1, 0, 10,
          "open positions per strategy; 0 disables entries (a strategy holds one net position per instrument)"),
    Param("maxDailyTrades", int, 150, 0, 100_000, "entries per UTC day"),
    Param("cooldownMinutes", float, 1.0, 0, 1440, "no new entry for this long after an entry and after a close"),
    Param("breakEvenEnabled", bool, True, help="move the stop to break-even once price covered part of the way to TP"),
    Param("breakEvenTriggerToTP", float, 0.5, 0, 1, "fraction of the entry->TP distance that triggers break-even"),
    Param("breakEvenOffsetTicks", int, 1, 0, 10_000, "break-even stop = entry +/- this many ticks (in profit)"),
    Param("minVolatility", float, 0.01, 0, 100, "no signal below this volatility, percent"),
    Param("maxVolatility", float, 5.0, 0, 100, "no signal above this volatility, percent"),
    Param("rsiOversold", float, 40.0, 0, 100, "RSI below this scores long"),
    Param("rsiOverbought", float, 60.0, 0, 100, "RSI above this scores short"),
    Param("pullbackPercent", float, 0.15, 0, 1, "pullback needed after a 10-candle move, as a fraction of it"),
    Param("advancedFiltersEnabled", bool, False, help="penalise entries without a pullback (-5 to both scores)"),
    Param("adaptiveRiskEnabled", bool, False, help="ATR% < 0.05: SL x 0.85; ATR% > 0.4: TP x 1.15"),
)

HISTORY = 150
SIGNAL_THRESHOLD = 58.0


class Razor(ArrayStrategy):
    """Razor v1: RSI-extreme scalper with EMA trend, momentum and volatility filters, SL/TP brackets and
    break-even (docs/razor.md)."""

    name: ClassVar[str] = "razor"
    params: ClassVar[tuple[Param, ...]] = PARAMS
    bracket_params: ClassVar[tuple[str, ...]] = ("stopLossPercent", "takeProfitPercent")

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        c = self.config
        self.trade_size = float(c["tradeSize"])
        self.sl_pct = float(c["stopLossPercent"])
        self.tp_pct = float(c["takeProfitPercent"])
        self.max_concurrent = int(c["maxConcurrentTrades"])
        self.max_daily = int(c["maxDailyTrades"])
        self.cooldown_ms = int(round(float(c["cooldownMinutes"]) * 60_000))
        self.be_enabled = bool(c["breakEvenEnabled"])
        self.be_trigger = float(c["breakEvenTriggerToTP"])
        self.be_ticks = int(c["breakEvenOffsetTicks"])
        self.min_vol = float(c["minVolatility"])
        self.max_vol = float(c["maxVolatility"])
        self.rsi_oversold = float(c["rsiOversold"])
        self.rsi_overbought = float(c["rsiOverbought"])
        self.pullback_pct = float(c["pullbackPercent"])
        self.advanced = bool(c["advancedFiltersEnabled"])
        self.adaptive = bool(c["adaptiveRiskEnabled"])

        self.candles: deque[Candle] = deque(maxlen=HISTORY)
        self._break_even_sent: str | int | None = None  # trade (id or open ts) already moved to break-even
        self.last_decision: Decision | None = None

    def indicators(self) -> dict[str, Series]:
        """The spec's indicators (names as in the journaled decisions)."""
        return {
            "ema_fast": sr.ema(8),
            "ema_slow": sr.ema(21),
            "rsi": sr.rsi(14),
            "volatility": sr.volatility(20),
            "momentum": sr.momentum(5),
            "atr_pct": sr.atr_pct(14),
            "pullback": sr.pullback(self.pullback_pct, 10, 20),
            "compression": sr.compression(12, 0.6),
        }

    def on_candle(self, candle: Candle, context: StrategyContext) -> Decision:
        self.candles.append(candle)
        decision = super().on_candle(candle, context)
        self.last_decision = decision
        return decision

    @staticmethod
    def _values(candle: Candle, v: Mapping[str, Any]) -> dict[str, Any]:
        """Indicator values for decisions and the control panel."""
        return {
            "close": candle.close,
            "ema_fast": v["ema_fast"],
            "ema_slow": v["ema_slow"],
            "rsi": v["rsi"],
            "volatility": v["volatility"],
            "momentum": v["momentum"],
            "atr_pct": v["atr_pct"],
            "pullback": v["pullback"],
            "compression": v["compression"],
        }

    def _skip(self, candle: Candle, v: Mapping[str, Any], why: str, intents: tuple = (),
              reasons: tuple[str, ...] = ()) -> Decision:
        ind = self._values(candle, v) if self.verbose_skips else {}
        return Decision(candle.ts_ms, "none", ind, {"long": 0.0, "short": 0.0}, reasons or (why,), intents, why)

    def decide(self, candle: Candle, v: Mapping[str, Any], ctx: StrategyContext) -> Decision:
        ts = candle.ts_ms
        if ctx.warming_up or math.isnan(v["ema_slow"]):  # warm once EMA slow is ready (21 closed candles)
            return Decision(ts, "none", {}, {"long": 0.0, "short": 0.0}, ("warming up",), (), "warming up")
        pos = ctx.position
        if pos is not None:
            move = self._break_even(candle, ctx)
            if move is not None:
                return self._skip(candle, v, "position open", (move,), ("position open", move.reason))
            return self._skip(candle, v, "position open")
        if self.max_concurrent <= 0:
            return self._skip(candle, v, "max concurrent trades")
        now = ts + self.interval_ms
        if now < ctx.cooldown_until_ms:
            return self._skip(candle, v, "cooldown")
        today = ctx.trades_today if ctx.trading_day == now // DAY_MS else 0
        if today >= self.max_daily:
            return self._skip(candle, v, "daily limit")
        return self._score(candle, v)

    def _break_even_level(self, pos: PositionView) -> float | None:
        """The price a candle must reach (high for a long, low for a short) to move ``pos`` to break-even; None
        when it will not move (disabled, done, already sent, no take-profit)."""
        if not self.be_enabled or pos.break_even_done or pos.take_price is None:
            return None
        if (pos.trade_id or pos.opened_ts_ms) == self._break_even_sent:
            return None
        entry, tp = pos.entry_price, pos.take_price
        if pos.direction is Direction.LONG:
            return entry + self.be_trigger * (tp - entry)
        return entry - self.be_trigger * (entry - tp)

    def position_wake(self, position: PositionView) -> tuple[float, float]:
        """Razor acts on an open position only by the break-even move, on a candle that reaches its level."""
        level = self._break_even_level(position)
        if level is None:
            return NEVER
        return (level, -math.inf) if position.direction is Direction.LONG else (math.inf, level)

    def _break_even(self, candle: Candle, ctx: StrategyContext) -> MoveStop | None:
        """MoveStop(entry +/- offset ticks) once per trade when this candle covered the trigger share of
        entry -> TP. The runner applies it from the next candle on."""
        pos = ctx.position
        if pos is None:
            return None
        level = self._break_even_level(pos)
        if level is None:
            return None
        entry = pos.entry_price
        inst = ctx.instrument
        if pos.direction is Direction.LONG:
            if candle.high < level:
                return None
            stop = inst.round_price(entry + self.be_ticks * inst.tick_size)
            if pos.stop_price is not None and stop <= pos.stop_price:
                return None
        else:
            if candle.low > level:
                return None
            stop = inst.round_price(entry - self.be_ticks * inst.tick_size)
            if pos.stop_price is not None and stop >= pos.stop_price:
                return None
        self._break_even_sent = pos.trade_id or pos.opened_ts_ms
        return MoveStop(stop, f"break-even: {self.be_trigger:g} of the way to TP reached", break_even=True)

    def signals(self, v: Mapping[str, np.ndarray], a: CandleArrays) -> np.ndarray:
        """``_score``'s verdict on every candle at once: +1 long, -1 short, 0 none (same float operations, so
        the same verdict; tests/unit/test_razor_arrays.py compares the two on every candle)."""
        vol, rsi, mom, atr = v["volatility"], v["rsi"], v["momentum"], v["atr_pct"]
        fast, slow = v["ema_fast"], v["ema_slow"]
        n = len(vol)
        if self.max_concurrent <= 0:
            return np.zeros(n, dtype=np.int8)
        zero = np.zeros(n)
        with np.errstate(invalid="ignore", divide="ignore"):
            both = np.where((vol >= 0.08) & (vol <= 0.6), 8.0, 0.0)
            long, short = zero + both, zero + both
            pts = np.minimum(35 + (self.rsi_oversold - rsi), 48.0) + np.where(fast > slow, 20.0, 5.0)
            long = long + np.where(rsi < self.rsi_oversold, pts, 0.0)
            pts = np.minimum(35 + (rsi - self.rsi_overbought), 48.0) + np.where(fast < slow, 20.0, 5.0)
            short = short + np.where(rsi > self.rsi_overbought, pts, 0.0)
            long = long + np.where(mom > 0.05, 15.0, 0.0)
            short = short + np.where(~(mom > 0.05) & (mom < -0.05), 15.0, 0.0)
            both = np.where((atr >= 0.03) & (atr <= 0.8), 6.0, 0.0)
            long, short = long + both, short + both
            pb = v["pullback"].astype(bool)
            if self.advanced:
                long = np.where(pb, long + 5.0, np.maximum(long - 5.0, 0.0))
                short = np.where(pb, short + 5.0, np.maximum(short - 5.0, 0.0))
            else:
                long, short = long + np.where(pb, 5.0, 0.0), short + np.where(pb, 5.0, 0.0)
            both = np.where(v["compression"].astype(bool), 4.0, 0.0)
            long, short = long + both, short + both
            quiet = (long < 20) & (short < 20) & (np.abs(fast - slow) / fast * 100 > 0.02)
            long = long + np.where(quiet & (fast > slow), 25.0, 0.0)
            short = short + np.where(quiet & (fast < slow), 25.0, 0.0)
            gate = (vol >= self.min_vol) & (vol <= self.max_vol)
            out = np.where((long > short) & (long >= SIGNAL_THRESHOLD), 1, 0)
            out = np.where((short > long) & (short >= SIGNAL_THRESHOLD), -1, out)
        return np.where(gate, out, 0).astype(np.int8)

    def _score(self, candle: Candle, v: Mapping[str, Any]) -> Decision:
        ts = candle.ts_ms
        ind = self._values(candle, v)
        vol = ind["volatility"]
        rsi = ind["rsi"]
        mom = ind["momentum"]
        atr = ind["atr_pct"]
        fast = ind["ema_fast"]
        slow = ind["ema_slow"]
        pullback = ind["pullback"]
        long = short = 0.0
        reasons: list[str] = []

        # 1. volatility gate (NaN: not ready, outside)
        if not self.min_vol <= vol <= self.max_vol:
            reasons.append(f"volatility {_f(vol)} outside [{self.min_vol:g}, {self.max_vol:g}]: no signal")
            return Decision(ts, "none", ind, {"long": 0.0, "short": 0.0}, tuple(reasons))
        if 0.08 <= vol <= 0.6:
            long += 8
            short += 8
            reasons.append(f"volatility {vol:.3f} in [0.08, 0.6]: +8 both")
        # 2. RSI extremes, then the EMA trend (comparisons with NaN are false: not ready scores nothing)
        if rsi < self.rsi_oversold:
            pts = min(35 + (self.rsi_oversold - rsi), 48)
            trend = 20 if fast > slow else 5
            long += pts + trend
            reasons.append(f"RSI {rsi:.1f} < {self.rsi_oversold:g}: long +{pts:.1f}, EMA trend +{trend}")
        if rsi > self.rsi_overbought:
            pts = min(35 + (rsi - self.rsi_overbought), 48)
            trend = 20 if fast < slow else 5
            short += pts + trend
            reasons.append(f"RSI {rsi:.1f} > {self.rsi_overbought:g}: short +{pts:.1f}, EMA trend +{trend}")
        # 3. momentum
        if mom > 0.05:
            long += 15
            reasons.append(f"momentum {mom:.3f}% > 0.05: long +15")
        elif mom < -0.05:
            short += 15
            reasons.append(f"momentum {mom:.3f}% < -0.05: short +15")
        # 4. ATR
        if 0.03 <= atr <= 0.8:
            long += 6
            short += 6
            reasons.append(f"ATR {atr:.3f}% in [0.03, 0.8]: +6 both")
        # 5. pullback
        if self.advanced and not pullback:
            long = max(long - 5, 0.0)
            short = max(short - 5, 0.0)
            reasons.append("no pullback (advanced filters): -5 both")
        elif pullback:
            long += 5
            short += 5
            reasons.append("pullback: +5 both")
        # 6. compression
        if ind["compression"]:
            long += 4
            short += 4
            reasons.append("compression: +4 both")
        # 7. EMA trend bonus when nothing else spoke
        if long < 20 and short < 20:
            gap = abs(fast - slow) / fast * 100
            if gap > 0.02:
                if fast > slow:
                    long += 25
                    reasons.append(f"EMA gap {gap:.3f}% > 0.02, uptrend: long +25")
                elif fast < slow:
                    short += 25
                    reasons.append(f"EMA gap {gap:.3f}% > 0.02, downtrend: short +25")
        # 8. signal
        scores = {"long": long, "short": short}
        if long > short and long >= SIGNAL_THRESHOLD:
            direction, score = Direction.LONG, long
        elif short > long and short >= SIGNAL_THRESHOLD:
            direction, score = Direction.SHORT, short
        else:
            reasons.append(f"no signal (long {long:g}, short {short:g}, need >= {SIGNAL_THRESHOLD:g} and ahead)")
            return Decision(ts, "none", ind, scores, tuple(reasons))
        strength = min(score, 100.0)
        confidence = min(score / 80 * 100, 100.0)
        sl, tp = self.sl_pct, self.tp_pct
        if self.adaptive:
            if atr < 0.05:
                sl *= 0.85
                reasons.append(f"adaptive risk: ATR {atr:.3f}% < 0.05: SL x 0.85")
            elif atr > 0.4:
                tp *= 1.15
                reasons.append(f"adaptive risk: ATR {atr:.3f}% > 0.4: TP x 1.15")
        reasons.append(f"{direction} signal: score {score:g}")
        enter = Enter(direction, self.trade_size, sl, tp, f"razor {direction} score {score:g}")
        return Decision(ts, str(direction), ind, scores, tuple(reasons), (enter,), "", strength, confidence)


def _f(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"
