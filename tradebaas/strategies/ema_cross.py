"""EMA cross: the simple reference strategy for teaching and for cross-checking the backtester.

EMA fast/slow (9/21) on closes, SMA-seeded. Always in the market once warm: on the first warm candle it takes the
side of ``fast - slow``; afterwards it goes long after a cross up and short after a cross down, flipping at the
next candle's open (``Exit`` then ``Enter`` in one decision). No brackets (``sl_pct``/``tp_pct`` are ``None``), no
cooldown, no daily limit. A tie (``fast == slow``) changes nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tradebaas.domain import Candle, Direction
from tradebaas.strategies.base import BaseStrategy, Decision, Enter, Exit, Param, StrategyContext
from tradebaas.strategies.indicators import EMA

PARAMS: tuple[Param, ...] = (
    Param("instrument", str, "BTC_USDC-PERPETUAL", help="Deribit instrument the strategy trades"),
    Param("fast", int, 9, 1, 1000, "fast EMA period (closes)"),
    Param("slow", int, 21, 1, 5000, "slow EMA period (closes)"),
    Param("tradeSize", float, 100.0, 0, 10_000_000, "position size in USD notional"),
)

_NO_SCORES: dict[str, float] = {}


class EmaCross(BaseStrategy):
    """EMA 9/21 crossover, always in the market once warm, no brackets."""

    name: ClassVar[str] = "ema_cross"
    params: ClassVar[tuple[Param, ...]] = PARAMS

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.fast = EMA(int(self.config["fast"]))
        self.slow = EMA(int(self.config["slow"]))
        self.trade_size = float(self.config["tradeSize"])

    @property
    def warm(self) -> bool:
        return self.fast.value is not None and self.slow.value is not None

    def on_candle(self, candle: Candle, context: StrategyContext) -> Decision:
        f = self.fast.update(candle.close)
        s = self.slow.update(candle.close)
        ts = candle.ts_ms
        if f is None or s is None or context.warming_up:
            return Decision(ts, "none", _NO_SCORES, _NO_SCORES, (), (), "warming up")
        if f > s:
            want = Direction.LONG
        elif f < s:
            want = Direction.SHORT
        else:
            return Decision(ts, "none", {"ema_fast": f, "ema_slow": s}, _NO_SCORES, ())
        pos = context.position
        if pos is not None and pos.direction is want:
            return Decision(ts, "none", {"ema_fast": f, "ema_slow": s}, _NO_SCORES, ())
        enter = Enter(want, self.trade_size, None, None, f"ema cross {want}")
        intents = (Exit("flip"), enter) if pos is not None else (enter,)
        return Decision(ts, str(want), {"ema_fast": f, "ema_slow": s}, _NO_SCORES, (f"fast {'>' if f > s else '<'} slow",), intents)
