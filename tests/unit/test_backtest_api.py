"""``tb.backtest(...)`` works even after a submodule of ``tradebaas.backtest`` was imported.

Importing ``tradebaas.backtest.data`` makes Python bind ``tradebaas.backtest`` to the package, shadowing the
lazily exported function; the package is callable so the documented usage keeps working.
"""

from __future__ import annotations

import tradebaas as tb
from tradebaas.backtest.backtester import BacktestResult
from tradebaas.backtest.data import load_default


def test_tb_backtest_is_callable_after_importing_a_submodule():
    result = tb.backtest("ema_cross", load_default().iloc[:2000], config={"fast": 5, "slow": 13})
    assert isinstance(result, BacktestResult) and len(result.trades) > 0
