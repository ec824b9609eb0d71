"""The array run of an ``ArrayStrategy`` makes exactly the candle-by-candle run's trades, and the checks bite.

Every strategy that uses the array API is checked here with ``causality.check_strategy`` (causal series and
signals, live values equal to the arrays, the signals promise, trade identity): Razor and the docs' example.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tradebaas.backtest import backtester
from tradebaas.backtest.backtester import Swap, backtest
from tradebaas.backtest.data import load_default
from tradebaas.backtest.sweep import sweep
from tradebaas.instruments import BTC_USDC_PERPETUAL
from tradebaas.strategies import series
from tradebaas.strategies.arrays import NEVER, ArrayStrategy
from tradebaas.strategies.base import StrategyContext
from tradebaas.strategies.causality import check_strategy
from tradebaas.strategies.razor import Razor
from tradebaas.strategies.series import CandleArrays

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "array_crossover.py"


def load_example() -> type[ArrayStrategy]:
    spec = importlib.util.spec_from_file_location("array_crossover", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ArrayCrossover


@pytest.fixture(scope="module")
def month() -> pd.DataFrame:
    return load_default()


def assert_same_run(strategy: Any, df: pd.DataFrame, **kwargs: Any) -> backtester.BacktestResult:
    fast = backtest(strategy, df, **kwargs)
    slow = backtest(strategy, df, vectorized=False, **kwargs)
    pd.testing.assert_frame_equal(fast.trades, slow.trades, check_exact=True)
    pd.testing.assert_series_equal(fast.equity, slow.equity, check_exact=True)
    assert fast.decisions == slow.decisions
    assert fast.open_position == slow.open_position
    return fast


@pytest.mark.parametrize("kwargs", [
    {},
    {"config": {"advancedFiltersEnabled": True, "adaptiveRiskEnabled": True, "pullbackPercent": 0.3}},
    {"config": {"breakEvenEnabled": False, "cooldownMinutes": 7}, "slippage": 0.0002},
    {"config": {"maxDailyTrades": 12, "rsiOversold": 45.0, "rsiOverbought": 55.0}},
    {"config": {"breakEvenTriggerToTP": 0.2, "breakEvenOffsetTicks": 40}, "intrabar": "pessimistic"},
    {"start": "2025-01-10", "warmup_candles": 240},
    {"start": "2025-01-20", "decisions": "none", "fees": {"maker": -0.0001, "taker": 0.0007}},
    {"instrument": "BTC-PERPETUAL", "slippage": 0.0001},
])
def test_razor_array_run_is_trade_for_trade_the_candle_by_candle_run(month, kwargs):
    r = assert_same_run("razor", month, **kwargs)
    assert len(r.trades) > 100


def test_razor_passes_every_array_check(month):
    check_strategy(Razor, month).raise_for_problems()
    check_strategy(Razor, month.iloc[:8000], {"advancedFiltersEnabled": True, "minVolatility": 0.05}
                   ).raise_for_problems()


@pytest.mark.parametrize("config", [{}, {"advancedFiltersEnabled": True, "maxVolatility": 0.3},
                                    {"rsiOversold": 48.0, "rsiOverbought": 52.0}])
def test_razor_signals_are_its_scoring_on_every_candle(month, config):
    # flat, no cooldown, no limit: decide scores every warm candle; the array verdict must be the same everywhere
    df = month.iloc[:12_000]
    a = CandleArrays.from_frame(df)
    strat = Razor(config)
    sig = strat.signals({k: s.array(a) for k, s in strat.declared().items()}, a)
    ctx = StrategyContext(BTC_USDC_PERPETUAL)
    live = Razor(config)
    scored = [live.on_candle(a.candle(i), ctx).signal for i in range(len(a))]
    want = np.array([{"long": 1, "short": -1, "none": 0}[s] for s in scored])
    warm = 20  # decisions from the 21st candle on
    np.testing.assert_array_equal(sig[warm:], want[warm:])
    assert (want != 0).sum() > 100


def test_the_docs_example_passes_every_array_check_and_trades(month):
    cls = load_example()
    report = check_strategy(cls, month).raise_for_problems()
    assert any("trades" in c for c in report.checks)
    assert len(backtest(cls, month).trades) > 100


def test_the_docs_show_the_example_file_verbatim():
    text = (ROOT / "docs" / "strategies.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert EXAMPLE.read_text() in blocks


def test_the_array_run_is_taken_unless_every_decision_or_a_swap_is_wanted(month, monkeypatch):
    def no_loop(*a: Any, **k: Any) -> Any:
        raise AssertionError("candle-by-candle run used")

    df = month.iloc[:3000]
    monkeypatch.setattr(backtester, "_run", no_loop)
    assert len(backtest("razor", df).trades) > 0
    assert len(backtest(Razor, df, start="2025-01-08", warmup_candles=100).trades) > 0
    with pytest.raises(AssertionError, match="candle-by-candle"):
        backtest("razor", df, decisions="all")
    with pytest.raises(AssertionError, match="candle-by-candle"):
        backtest("razor", df, swaps=[Swap(int(df.index[1000].value // 10**6), "razor")])
    with pytest.raises(AssertionError, match="candle-by-candle"):
        backtest(Razor(), df)  # an instance may have seen candles already: it runs as given


class _Broken(ArrayStrategy):
    """Enters long whenever flat and warm; what it declares is wrong in the way ``flaw`` says."""

    name = "broken"
    flaw = ""

    def indicators(self) -> dict[str, series.Series]:
        if self.flaw == "peek":
            return {"ema": series.Declared("peek", lambda a: np.append(a.close[1:], np.nan),
                                           lambda: series.ema(1).stream())}
        return {"ema": series.ema(5)}

    def signals(self, v: Any, a: CandleArrays) -> np.ndarray:
        if self.flaw == "signals":
            return (np.arange(len(a)) % 50 == 0).astype(np.int8)  # claims decide acts on 1 candle in 50
        return np.ones(len(a), dtype=np.int8)

    def position_wake(self, position: Any) -> tuple[float, float] | None:
        return NEVER

    def decide(self, candle: Any, v: Any, context: StrategyContext) -> Any:
        from tradebaas.domain import Direction
        from tradebaas.strategies.base import Decision, Enter, Exit

        if context.warming_up or math.isnan(v["ema"]):
            return Decision(candle.ts_ms, "none", {}, {}, ())
        if context.position is not None:
            if self.flaw == "wake" and candle.close > context.position.entry_price * 1.001:
                return Decision(candle.ts_ms, "none", {}, {}, ("take it",), (Exit("profit"),))
            return Decision(candle.ts_ms, "none", {}, {}, ())
        return Decision(candle.ts_ms, "long", {}, {}, (), (Enter(Direction.LONG, 100.0, 0.3, 0.6),))


@pytest.mark.parametrize(("flaw", "problem"), [
    ("peek", "looks ahead"),
    ("signals", "signals is 0"),
    ("wake", "array run differs"),
])
def test_a_strategy_that_breaks_a_promise_is_caught(month, flaw, problem):
    cls = type(f"Broken_{flaw}", (_Broken,), {"flaw": flaw})
    report = check_strategy(cls, month.iloc[:6000])
    assert not report.ok and any(problem in p for p in report.problems), report.problems
    assert check_strategy(_Broken, month.iloc[:6000]).ok


def test_a_razor_sweep_equals_its_single_candle_by_candle_backtests(month):
    df = month.iloc[:10_000]
    grid = {"stopLossPercent": [0.3, 0.6], "rsiOversold": [35.0, 42.0]}
    rows = sweep("razor", df, grid, processes=1, progress=False)
    for row in rows.itertuples():
        cfg = {"stopLossPercent": row.stopLossPercent, "rsiOversold": row.rsiOversold}
        ref = backtest("razor", df, config=cfg, vectorized=False).stats
        assert row.trades == ref["trades"] and row.net_pnl == ref["net_pnl"]
