"""EMA trend with exchange brackets, written with the array API (docs/strategies.md, "Array speed")."""

import numpy as np

from tradebaas.domain import Direction
from tradebaas.strategies import series
from tradebaas.strategies.arrays import NEVER, ArrayStrategy
from tradebaas.strategies.base import Decision, Enter, Param


class ArrayCrossover(ArrayStrategy):
    """Flat and warm: enter on the side of fast - slow, with a stop-loss and a take-profit."""

    name = "array_crossover"
    params = (
        Param("fast", int, 9, 2, 200, "fast EMA period"),
        Param("slow", int, 21, 3, 500, "slow EMA period"),
        Param("tradeSize", float, 100.0, 1.0, 1e6, "USD notional per trade"),
        Param("stopLossPercent", float, 0.5, 0.05, 20.0, "stop-loss distance from the fill, percent"),
        Param("takeProfitPercent", float, 1.0, 0.05, 50.0, "take-profit distance from the fill, percent"),
    )
    bracket_params = ("stopLossPercent", "takeProfitPercent")

    def indicators(self):  # declared once: arrays in a backtest, incremental live
        return {"fast": series.ema(self.config["fast"]), "slow": series.ema(self.config["slow"])}

    def signals(self, v, a):  # where decide may enter while flat (NaN: not warm, no signal)
        return np.nan_to_num(np.sign(v["fast"] - v["slow"]))

    def position_wake(self, position):  # nothing to decide while a position is open: its brackets act
        return NEVER

    def decide(self, candle, v, context):
        f, s = v["fast"], v["slow"]
        if context.warming_up or context.position is not None or not (f > s or f < s):
            return Decision(candle.ts_ms, "none", {"fast": f, "slow": s}, {}, ("waiting",))
        side = Direction.LONG if f > s else Direction.SHORT
        c = self.config
        enter = Enter(side, c["tradeSize"], c["stopLossPercent"], c["takeProfitPercent"], "crossover")
        return Decision(candle.ts_ms, side.value, {"fast": f, "slow": s}, {}, ("trend",), (enter,))
