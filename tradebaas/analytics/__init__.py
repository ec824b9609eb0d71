"""Analytics of the contract's pandas objects: trades frame, equity and drawdown, stats table, plots.

Knows nothing of the engine (DESIGN: analytics depend on pandas only), so the same calls work on
``eng.trades()``/``eng.equity()`` and on a backtest's result. Plots import matplotlib lazily, on first use,
so the engine and kernels that only compute stats do not pay for it. Definitions: docs/analytics.md.
"""

from __future__ import annotations

from typing import Any

from tradebaas.analytics.frames import TRADE_COLUMNS, drawdown, empty_trades_frame, equity_curve, trades_frame
from tradebaas.analytics.stats import STAT_NAMES, by_day, by_strategy, daily_returns, stats, stats_frame

__all__ = [
    "TRADE_COLUMNS",
    "STAT_NAMES",
    "trades_frame",
    "empty_trades_frame",
    "equity_curve",
    "drawdown",
    "daily_returns",
    "stats",
    "stats_frame",
    "by_strategy",
    "by_day",
    "plot_equity",
    "plot_trades",
    "plot_pnl_distribution",
]

_PLOTS = ("plot_equity", "plot_trades", "plot_pnl_distribution")


def __getattr__(name: str) -> Any:
    if name in _PLOTS:
        from tradebaas.analytics import plots

        return getattr(plots, name)
    raise AttributeError(f"module 'tradebaas.analytics' has no attribute {name!r}")
