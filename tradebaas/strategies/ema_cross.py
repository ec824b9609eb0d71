"""EMA cross: the simple reference strategy for teaching and for cross-checking the backtester.

EMA fast/slow (9/21) on closes, SMA-seeded. Always in the market once warm: on the first warm candle it takes the
side of ``fast - slow``; afterwards it goes long after a cross up and short after a cross down, flipping at the
next candle's open (``Exit`` then ``Enter`` in one decision). No brackets (``sl_pct``/``tp_pct`` are ``None``), no
cooldown, no daily limit. A tie (``fast == slow``) changes nothing.

``EmaCross.vectorized`` is the backtester's array fast path for this strategy (the same trades as driving
``on_candle`` candle by candle; tests/unit/test_backtest_vectorized.py proves it trade for trade).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tradebaas.domain import Candle, Direction
from tradebaas.strategies.base import BaseStrategy, Decision, Enter, Exit, Param, StrategyContext
from tradebaas.strategies.indicators import EMA, ema_error_bound

if TYPE_CHECKING:
    import pandas as pd

    from tradebaas.backtest.vectorized import ArrayCache, VectorizedRun
    from tradebaas.instruments import Instrument

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
    uses_brackets: ClassVar[bool] = False  # exits by the opposite crossover

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

    @classmethod
    def vectorized(
        cls,
        candles: pd.DataFrame,
        config: dict[str, Any],
        instrument: Instrument,
        slippage: float,
        *,
        live_from: int = 0,
        strategy_id: str | None = None,
        decisions: str = "none",
        cache: ArrayCache | None = None,
    ) -> VectorizedRun:
        """The whole backtest on arrays: what ``on_candle`` would decide on every candle, and the trades.

        ``config`` is validated (as the constructor does); ``instrument`` carries the fees (the runner folds
        ``fees=`` into it); candles before ``live_from`` only warm the EMAs up (``start=`` in ``backtest``).
        ``decisions``: ``"none"`` or ``"actions"`` (the decisions with intents, equal to the event-driven ones).
        ``cache`` shares the EMAs of one data set across calls (sweeps).

        Why it is exact: ``want`` is the sign of ``fast - slow``. The fast EMAs (pandas' compiled recursion) can
        differ from ``EMA.update`` by a few ulps, which only matters where ``|fast - slow|`` is within that
        error; if any candle is that close, this run uses the bitwise-exact EMAs instead. Decisions carry the
        EMA values, so ``"actions"`` always uses the exact ones.
        """
        from tradebaas.backtest.vectorized import ArrayCache, VectorizedRun, candle_arrays, flip_trades
        from tradebaas.strategies.base import Decision, Enter, Exit

        strat = cls(config)  # validates the config exactly as the event-driven path does
        pf, ps = strat.fast.period, strat.slow.period
        arrays = candle_arrays(candles)
        if cache is None:
            cache = ArrayCache(arrays["close"])
        exact = decisions == "actions"
        f, s = cache.ema(pf, exact=exact), cache.ema(ps, exact=exact)
        with np.errstate(invalid="ignore"):
            diff = f - s
            if not exact:
                tol = ema_error_bound(pf, cache.scale) + ema_error_bound(ps, cache.scale)
                if np.any(np.abs(diff) <= tol):  # a near-tie the fast EMAs cannot call: recompute exactly
                    f, s = cache.ema(pf, exact=True), cache.ema(ps, exact=True)
                    diff = f - s
            want = np.sign(diff)  # NaN (not warm) -> NaN; ties -> 0
        want = np.nan_to_num(want, nan=0.0).astype(np.int8)
        if live_from:
            want[:live_from] = 0  # warming up: no intents
        name = strategy_id or cls.name
        rows, open_pos, chg = flip_trades(arrays["ts"], arrays["open"], arrays["close"], want,
                                          instrument=instrument, notional_usd=strat.trade_size,
                                          slippage=slippage, strategy_id=name, cache=cache,
                                          exit_reason="flip")
        kept: list[Decision] = []
        if decisions == "actions":
            ts = arrays["ts"]
            for j, i in enumerate(chg.tolist()):
                fi, si = float(f[i]), float(s[i])
                d = Direction.LONG if want[i] > 0 else Direction.SHORT
                enter = Enter(d, strat.trade_size, None, None, f"ema cross {d}")
                kept.append(Decision(int(ts[i]), str(d), {"ema_fast": fi, "ema_slow": si}, _NO_SCORES,
                                     (f"fast {'>' if fi > si else '<'} slow",),
                                     (Exit("flip"), enter) if j else (enter,)))
        return VectorizedRun(rows, kept, open_pos)
