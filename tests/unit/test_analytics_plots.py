"""Plots: built without pyplot or a display, and containing the artists they promise (not pixels)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from tradebaas.analytics import (
    equity_curve,
    plot_equity,
    plot_pnl_distribution,
    plot_trades,
    trades_frame,
)

START = pd.Timestamp("2025-01-01", tz="UTC")


@pytest.fixture
def candles() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    idx = pd.date_range(START, periods=240, freq="1min")
    close = 100_000 + np.cumsum(rng.normal(0, 20, len(idx)))
    frame = pd.DataFrame({"open": np.r_[close[0], close[:-1]], "close": close}, index=idx)
    frame["high"] = frame[["open", "close"]].max(axis=1) + 5
    frame["low"] = frame[["open", "close"]].min(axis=1) - 5
    return frame


@pytest.fixture
def trades(candles: pd.DataFrame) -> pd.DataFrame:
    """Six trades on the candles: 4 long, 2 short; outcomes 3 wins, 2 losses, 1 breakeven (by net PnL)."""
    spec = [  # (entry bar, exit bar, direction, net pnl)
        (5, 20, "long", 12.0),
        (30, 45, "short", -8.0),
        (50, 90, "long", 30.0),
        (100, 130, "long", -4.0),
        (140, 150, "short", 6.0),
        (200, 230, "long", 0.0),
    ]
    close = candles["close"]
    return trades_frame([
        {
            "trade_id": str(i),
            "strategy_id": "razor",
            "instrument": "BTC-PERPETUAL" if i < 5 else "ETH-PERPETUAL",
            "direction": d,
            "entry_time": close.index[a],
            "exit_time": close.index[b],
            "entry_price": close.iloc[a],
            "exit_price": close.iloc[b],
            "amount": 100.0,
            "pnl": net + 1.0,
            "fees": 1.0,
            "exit_reason": "tp",
            "currency": "USDC",
        }
        for i, (a, b, d, net) in enumerate(spec)
    ])  # fmt: skip


def _line(fig: Figure, label: str, ax_index: int = 0) -> Line2D:
    matches = [ln for ln in fig.axes[ax_index].get_lines() if ln.get_label() == label]
    assert len(matches) == 1, f"expected one line labelled {label!r}"
    return matches[0]


def _renders(fig: Figure) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue().startswith(b"\x89PNG")


def test_equity_figure_has_equity_and_drawdown_panels(trades: pd.DataFrame) -> None:
    equity = equity_curve(trades, 1000.0)
    fig = plot_equity(equity, currency="USDC")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(_line(fig, "equity", 0).get_xdata()) == len(equity)
    dd_line = _line(fig, "drawdown", 1)
    assert len(dd_line.get_xdata()) == len(equity)
    assert max(dd_line.get_ydata()) <= 0.0
    assert any(isinstance(c, PolyCollection) for c in fig.axes[1].collections)  # the shaded area
    assert fig.axes[0].get_ylabel() == "equity (USDC)"
    _renders(fig)


def test_trades_on_candles_mark_entries_by_direction_and_exits_by_outcome(
    trades: pd.DataFrame, candles: pd.DataFrame
) -> None:
    fig = plot_trades(trades, candles)
    ax = fig.axes[0]
    assert len(ax.patches) == len(candles)  # one body per candle
    assert any(
        isinstance(c, LineCollection) and len(c.get_segments()) == len(candles) for c in ax.collections
    )
    assert len(_line(fig, "long entry").get_xdata()) == 4
    assert len(_line(fig, "short entry").get_xdata()) == 2
    assert len(_line(fig, "win exit").get_xdata()) == 3
    assert len(_line(fig, "loss exit").get_xdata()) == 2
    assert len(_line(fig, "flat exit").get_xdata()) == 1
    assert _line(fig, "long entry").get_marker() == "^"
    assert _line(fig, "short entry").get_marker() == "v"
    connectors = [c for c in ax.collections if isinstance(c, LineCollection) and len(c.get_segments()) == 6]
    assert len(connectors) == 1
    _renders(fig)


def test_trades_on_a_close_series_and_on_too_many_candles_use_a_close_line(
    trades: pd.DataFrame, candles: pd.DataFrame
) -> None:
    fig = plot_trades(trades, candles["close"])
    assert len(_line(fig, "close").get_xdata()) == len(candles)
    assert not fig.axes[0].patches
    many = plot_trades(trades, candles, max_candles=100)
    assert len(_line(many, "close").get_xdata()) == len(candles)


def test_trades_can_be_filtered_by_instrument(trades: pd.DataFrame, candles: pd.DataFrame) -> None:
    fig = plot_trades(trades, candles, instrument="ETH-PERPETUAL")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "long entry" in labels and "short entry" not in labels
    assert len(_line(fig, "flat exit").get_xdata()) == 1


def test_prices_with_a_ts_ms_column_are_accepted(trades: pd.DataFrame, candles: pd.DataFrame) -> None:
    frame = candles.reset_index(drop=True)
    frame["ts_ms"] = (candles.index - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    fig = plot_trades(trades, frame)
    assert len(fig.axes[0].patches) == len(candles)


def test_pnl_distribution_splits_wins_losses_and_marks_zero_and_expectancy(trades: pd.DataFrame) -> None:
    fig = plot_pnl_distribution(trades, bins=10)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert len(ax.patches) == 3 * 10  # win, loss and flat histograms on the same 10 edges
    assert sum(heights) == len(trades)
    vlines = [ln for ln in ax.get_lines() if ln.get_label() in ("zero", "expectancy")]
    assert len(vlines) == 2
    assert _line(fig, "expectancy").get_xdata()[0] == pytest.approx(trades["net_pnl"].mean())
    _renders(fig)


def test_figures_without_data_are_still_figures(candles: pd.DataFrame) -> None:
    empty = trades_frame([])
    for fig in (
        plot_equity(equity_curve(empty, 1000.0)),
        plot_pnl_distribution(empty),
        plot_trades(empty, candles),
    ):
        assert isinstance(fig, Figure)
        _renders(fig)
    assert plot_pnl_distribution(empty).axes[0].texts[0].get_text() == "no trades"
