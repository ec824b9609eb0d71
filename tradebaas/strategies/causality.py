"""Checks for an ``ArrayStrategy``: no look-ahead, live equals backtest, the array run equals the candle-by-candle run.

Why: the array run is only worth having if it is exactly what the strategy does live. ``check_strategy`` verifies,
on the candles given:

- *causality* of every declared series and of ``signals``: computed over the first ``k`` candles (several cut
  points), they equal the first ``k`` values of the computation over all candles: nothing reads a later candle;
- *live agreement* of every series: its stream, fed candle by candle as the live runner does, gives the array's
  values, bit for bit (``tolerance`` > 0 allows a documented relative difference instead);
- *the signals promise*: a fresh instance fed every candle through ``on_candle`` with a flat context never returns
  intents on a candle where ``signals`` is 0;
- *trade identity*: the array backtest and the candle-by-candle backtest (``vectorized=False``) make the same
  trades (every column exactly), the same equity and the same decisions with intents.

Tests run it for every strategy that uses the array API (tests/unit/test_backtest_arrays.py); a user runs it on
their own strategy: ``check_strategy(MyStrategy, load_default()).raise_for_problems()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tradebaas.instruments import get_instrument
from tradebaas.strategies.arrays import ArrayStrategy
from tradebaas.strategies.base import StrategyContext
from tradebaas.strategies.series import CandleArrays, Series


@dataclass
class CheckReport:
    """What ``check_strategy`` found: one line per check that failed (empty: all passed)."""

    strategy: str
    candles: int
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> CheckReport:
        if self.problems:
            raise AssertionError(f"{self.strategy}: " + "; ".join(self.problems))
        return self


def _same(a: np.ndarray, b: np.ndarray, tolerance: float = 0.0) -> bool:
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    if tolerance <= 0:
        return bool(np.array_equal(a, b, equal_nan=True))
    ok = ~np.isnan(a)
    return bool(np.all(np.abs(a[ok] - b[ok]) <= tolerance * np.maximum(np.abs(a[ok]), np.abs(b[ok]))))


def cut_points(n: int, cuts: int = 6) -> list[int]:
    """``cuts`` prefix lengths spread over ``n`` candles (the shortest ones included: warm-up matters)."""
    return sorted({max(1, int(x)) for x in np.linspace(1, n - 1, cuts)} | {min(n - 1, 25)})


def stream_values(s: Series, a: CandleArrays) -> np.ndarray:
    """The series' stream fed every candle in order: its value after each one (floats; False/True as 0/1)."""
    st = s.stream()
    out = np.empty(len(a))
    for i in range(len(a)):
        st.update(a.candle(i))
        out[i] = float(st.value)
    return out


def check_series(name: str, s: Series, a: CandleArrays, cuts: Sequence[int], tolerance: float = 0.0) -> list[str]:
    """Causality over ``cuts`` and live agreement of one series; the problems found."""
    problems = []
    full = s.array(a)
    for k in cuts:
        if not _same(s.array(a.head(k)), full[:k]):
            problems.append(f"series {name!r} looks ahead: over the first {k} candles it differs from the full run")
            break
    live = stream_values(s, a)
    if not _same(full, live, tolerance):
        diff = np.flatnonzero(~np.isclose(np.asarray(full, dtype="float64"), live, rtol=0, atol=0, equal_nan=True))
        problems.append(f"series {name!r}: live (incremental) values differ from the array's "
                        f"(first at candle {int(diff[0]) if len(diff) else '?'})")
    return problems


def check_strategy(strategy: type[ArrayStrategy], candles: pd.DataFrame, config: dict[str, Any] | None = None,
                   *, cuts: int = 6, tolerance: float = 0.0) -> CheckReport:
    """Every check of the module docstring, for ``strategy`` with ``config`` on ``candles``."""
    from tradebaas.backtest.backtester import backtest
    from tradebaas.backtest.data import load_candles

    df = load_candles(candles)
    a = CandleArrays.from_frame(df)
    n = len(a)
    strat = strategy(config)
    report = CheckReport(strategy.name or strategy.__name__, n)
    points = cut_points(n, cuts)
    declared = strat.declared()
    for name, s in declared.items():
        report.problems += check_series(name, s, a, points, tolerance)
        report.checks.append(f"series {name}: causal at {len(points)} cuts, live equal")
    full = {name: s.array(a) for name, s in declared.items()}
    sig = strat.signals(full, a)
    if sig is not None:
        sig = np.asarray(sig)
        for k in points:
            head = a.head(k)
            part = strat.signals({name: s.array(head) for name, s in declared.items()}, head)
            if part is None or not _same(np.asarray(part), sig[:k]):
                report.problems.append(f"signals look ahead: over the first {k} candles they differ from the full run")
                break
        flat = strategy(config)
        ctx = StrategyContext(get_instrument(str(flat.config.get("instrument", "BTC_USDC-PERPETUAL"))))
        for i in range(n):
            d = flat.on_candle(a.candle(i), ctx)
            if d.intents and not sig[i]:
                report.problems.append(f"signals is 0 at candle {i} ({d.ts_ms}) but decide acted there (flat)")
                break
        report.checks.append("signals: causal, no intent where 0")
    fast = backtest(strategy, df, config=config)
    slow = backtest(strategy, df, config=config, vectorized=False)
    try:
        pd.testing.assert_frame_equal(fast.trades, slow.trades, check_exact=True)
        pd.testing.assert_series_equal(fast.equity, slow.equity, check_exact=True)
        if fast.decisions != slow.decisions or fast.open_position != slow.open_position:
            raise AssertionError("decisions with intents or the open position differ")
    except AssertionError as exc:
        report.problems.append(f"the array run differs from the candle-by-candle run: {str(exc).splitlines()[0]}")
    report.checks.append(f"array run = candle-by-candle run: {len(slow.trades)} trades")
    return report
