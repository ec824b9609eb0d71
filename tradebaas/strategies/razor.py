"""Razor: the 1-minute BTC-perpetual scalper of docs/razor.md (v1), implemented exactly.

It scores RSI extremes, EMA trend, momentum and a few filters on every closed candle and enters at market with a
stop-loss and a take-profit; break-even moves the stop once per trade. Cooldowns, the daily limit and the open
position are read from ``StrategyContext`` (the runner keeps and persists them, see ``strategies/base.py``);
Razor itself keeps only its indicators, the last 150 candles and which trade it already moved to break-even.
Time comes only from the candles: a candle ``[ts, ts + 60 s)`` is decided at ``ts + 60 s``.
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from tradebaas.domain import Candle, Direction
from tradebaas.strategies.base import (
    DAY_MS,
    BaseStrategy,
    Decision,
    Enter,
    MoveStop,
    Param,
    StrategyContext,
)
from tradebaas.strategies.indicators import (
    EMA,
    RSI,
    ATRPercent,
    Compression,
    Momentum,
    Pullback,
    Volatility,
)

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


class Razor(BaseStrategy):
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
        self.advanced = bool(c["advancedFiltersEnabled"])
        self.adaptive = bool(c["adaptiveRiskEnabled"])

        self.candles: deque[Candle] = deque(maxlen=HISTORY)
        self.ema_fast = EMA(8)
        self.ema_slow = EMA(21)
        self.rsi = RSI(14)
        self.volatility = Volatility(20)
        self.momentum = Momentum(5)
        self.atr = ATRPercent(14)
        self.pullback = Pullback(float(c["pullbackPercent"]), 10, 20)
        self.compression = Compression(12, 0.6)
        self._break_even_sent: str | int | None = None  # trade (id or open ts) already moved to break-even
        self.last_decision: Decision | None = None

    @property
    def warm(self) -> bool:
        """Warm once EMA slow is ready (21 closed candles); never trades before."""
        return self.ema_slow.value is not None

    def indicators(self) -> dict[str, Any]:
        """Current indicator values (None until ready) for decisions and the control panel."""
        return {
            "close": self.candles[-1].close if self.candles else None,
            "ema_fast": self.ema_fast.value,
            "ema_slow": self.ema_slow.value,
            "rsi": self.rsi.value,
            "volatility": self.volatility.value,
            "momentum": self.momentum.value,
            "atr_pct": self.atr.value,
            "pullback": self.pullback.value,
            "compression": self.compression.value,
        }

    def _update(self, candle: Candle) -> None:
        self.candles.append(candle)
        c = candle.close
        self.ema_fast.update(c)
        self.ema_slow.update(c)
        self.rsi.update(c)
        self.volatility.update(c)
        self.momentum.update(c)
        self.atr.update(candle.high, candle.low, c)
        self.pullback.update(c)
        self.compression.update(candle.high, candle.low)

    def on_candle(self, candle: Candle, context: StrategyContext) -> Decision:
        self._update(candle)
        decision = self._decide(candle, context)
        self.last_decision = decision
        return decision

    def _skip(self, ts_ms: int, why: str, intents: tuple = (), reasons: tuple[str, ...] = ()) -> Decision:
        ind = self.indicators() if self.verbose_skips else {}
        return Decision(ts_ms, "none", ind, {"long": 0.0, "short": 0.0}, reasons or (why,), intents, why)

    def _decide(self, candle: Candle, ctx: StrategyContext) -> Decision:
        ts = candle.ts_ms
        if ctx.warming_up or not self.warm:
            return Decision(ts, "none", {}, {"long": 0.0, "short": 0.0}, ("warming up",), (), "warming up")
        pos = ctx.position
        if pos is not None:
            move = self._break_even(candle, ctx)
            if move is not None:
                return self._skip(ts, "position open", (move,), ("position open", move.reason))
            return self._skip(ts, "position open")
        if self.max_concurrent <= 0:
            return self._skip(ts, "max concurrent trades")
        now = ts + self.interval_ms
        if now < ctx.cooldown_until_ms:
            return self._skip(ts, "cooldown")
        today = ctx.trades_today if ctx.trading_day == now // DAY_MS else 0
        if today >= self.max_daily:
            return self._skip(ts, "daily limit")
        return self._score(candle, ctx)

    def _break_even(self, candle: Candle, ctx: StrategyContext) -> MoveStop | None:
        """MoveStop(entry +/- offset ticks) once per trade when this candle covered the trigger share of
        entry -> TP. The runner applies it from the next candle on."""
        pos = ctx.position
        if not self.be_enabled or pos is None or pos.break_even_done or pos.take_price is None:
            return None
        key = pos.trade_id or pos.opened_ts_ms
        if key == self._break_even_sent:
            return None
        entry, tp = pos.entry_price, pos.take_price
        inst = ctx.instrument
        if pos.direction is Direction.LONG:
            if candle.high < entry + self.be_trigger * (tp - entry):
                return None
            stop = inst.round_price(entry + self.be_ticks * inst.tick_size)
            if pos.stop_price is not None and stop <= pos.stop_price:
                return None
        else:
            if candle.low > entry - self.be_trigger * (entry - tp):
                return None
            stop = inst.round_price(entry - self.be_ticks * inst.tick_size)
            if pos.stop_price is not None and stop >= pos.stop_price:
                return None
        self._break_even_sent = key
        return MoveStop(stop, f"break-even: {self.be_trigger:g} of the way to TP reached", break_even=True)

    def _score(self, candle: Candle, ctx: StrategyContext) -> Decision:
        ts = candle.ts_ms
        ind = self.indicators()
        vol = self.volatility.value
        rsi = self.rsi.value
        mom = self.momentum.value
        atr = self.atr.value
        fast = self.ema_fast.value
        slow = self.ema_slow.value
        assert fast is not None and slow is not None
        long = short = 0.0
        reasons: list[str] = []

        # 1. volatility gate
        if vol is None or vol < self.min_vol or vol > self.max_vol:
            reasons.append(f"volatility {_f(vol)} outside [{self.min_vol:g}, {self.max_vol:g}]: no signal")
            return Decision(ts, "none", ind, {"long": 0.0, "short": 0.0}, tuple(reasons))
        if 0.08 <= vol <= 0.6:
            long += 8
            short += 8
            reasons.append(f"volatility {vol:.3f} in [0.08, 0.6]: +8 both")
        # 2. RSI extremes, then the EMA trend
        if rsi is not None and rsi < self.rsi_oversold:
            pts = min(35 + (self.rsi_oversold - rsi), 48)
            trend = 20 if fast > slow else 5
            long += pts + trend
            reasons.append(f"RSI {rsi:.1f} < {self.rsi_oversold:g}: long +{pts:.1f}, EMA trend +{trend}")
        if rsi is not None and rsi > self.rsi_overbought:
            pts = min(35 + (rsi - self.rsi_overbought), 48)
            trend = 20 if fast < slow else 5
            short += pts + trend
            reasons.append(f"RSI {rsi:.1f} > {self.rsi_overbought:g}: short +{pts:.1f}, EMA trend +{trend}")
        # 3. momentum
        if mom is not None and mom > 0.05:
            long += 15
            reasons.append(f"momentum {mom:.3f}% > 0.05: long +15")
        elif mom is not None and mom < -0.05:
            short += 15
            reasons.append(f"momentum {mom:.3f}% < -0.05: short +15")
        # 4. ATR
        if atr is not None and 0.03 <= atr <= 0.8:
            long += 6
            short += 6
            reasons.append(f"ATR {atr:.3f}% in [0.03, 0.8]: +6 both")
        # 5. pullback
        if self.advanced and not self.pullback.value:
            long = max(long - 5, 0.0)
            short = max(short - 5, 0.0)
            reasons.append("no pullback (advanced filters): -5 both")
        elif self.pullback.value:
            long += 5
            short += 5
            reasons.append("pullback: +5 both")
        # 6. compression
        if self.compression.value:
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
        if self.adaptive and atr is not None:
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
    return "n/a" if x is None else f"{x:.3f}"
