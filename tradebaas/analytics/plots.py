"""Matplotlib figures of the analytics contract: equity and drawdown, trades on price, PnL distribution.

Every function builds a ``matplotlib.figure.Figure`` directly (never ``pyplot``): no global figure registry,
no backend switching, safe in the engine's report subprocess, in threads and on headless machines (Agg). In
Jupyter the returned figure displays itself; elsewhere call ``fig.savefig(path)``. Figures carry labelled
artists (``ax.get_legend_handles_labels()``) so tests and notebooks can find what was drawn.

Times are plotted in UTC (the exchange's clock); the axis says so.
"""

from __future__ import annotations

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from tradebaas.analytics.frames import drawdown as drawdown_of
from tradebaas.analytics.palette import COLORS

__all__ = ["plot_equity", "plot_trades", "plot_pnl_distribution", "COLORS"]


_OHLC = ("open", "high", "low", "close")


def _date_nums(times: pd.Series | pd.Index) -> np.ndarray:
    """UTC timestamps -> matplotlib date numbers (days), so bar widths and limits are plain floats."""
    index = pd.DatetimeIndex(times)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return mdates.date2num(index.to_numpy())


def _format_time_axis(ax: Axes) -> None:
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)")


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color=COLORS["flat"])


def plot_equity(
    equity: pd.Series,
    *,
    title: str | None = None,
    currency: str | None = None,
    figsize: tuple[float, float] = (10, 6),
) -> Figure:
    """Two panels sharing the time axis: realised equity (a step line, since it moves only when a trade
    closes) and its drawdown in percent below the running peak (line plus shaded area).
    """
    fig = Figure(figsize=figsize, layout="constrained")
    ax_eq, ax_dd = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax_eq.set_title(title or "Equity and drawdown")
    ax_eq.set_ylabel(f"equity ({currency})" if currency else "equity")
    ax_dd.set_ylabel("drawdown (%)")
    ax_eq.grid(True, alpha=0.3)
    ax_dd.grid(True, alpha=0.3)
    if equity.empty:
        _no_data(ax_eq, "no equity yet")
        return fig
    x = _date_nums(equity.index)
    dd = drawdown_of(equity).to_numpy() * 100.0
    ax_eq.plot(x, equity.to_numpy(), drawstyle="steps-post", color=COLORS["equity"], label="equity")
    ax_dd.plot(x, dd, drawstyle="steps-post", color=COLORS["drawdown"], linewidth=1.0, label="drawdown")
    ax_dd.fill_between(x, dd, 0.0, step="post", color=COLORS["drawdown"], alpha=0.25)
    ax_dd.set_ylim(top=0.0, bottom=min(float(dd.min()) * 1.1, -1.0))
    _format_time_axis(ax_dd)
    return fig


def _price_frame(prices: pd.Series | pd.DataFrame) -> pd.DataFrame:
    """Prices as a frame with a UTC DatetimeIndex and at least ``close`` (a Series is a close line)."""
    frame = prices.rename("close").to_frame() if isinstance(prices, pd.Series) else prices.copy()
    if not isinstance(frame.index, pd.DatetimeIndex):
        if "ts_ms" in frame.columns:
            frame.index = pd.to_datetime(frame["ts_ms"], unit="ms", utc=True)
        elif "time" in frame.columns:
            frame.index = pd.to_datetime(frame["time"], utc=True)
        else:
            raise ValueError("prices need a DatetimeIndex or a 'ts_ms'/'time' column")
    if "close" not in frame.columns:
        raise ValueError("prices need a 'close' column (or pass a Series of closes)")
    return frame.sort_index()


def plot_trades(
    trades: pd.DataFrame,
    prices: pd.Series | pd.DataFrame,
    *,
    instrument: str | None = None,
    title: str | None = None,
    max_candles: int = 600,
    figsize: tuple[float, float] = (12, 6),
) -> Figure:
    """Trades drawn on the price: candles (when ``prices`` has OHLC and at most ``max_candles`` rows, else a
    close line), entry markers by direction (▲ long, ▼ short) and exit markers by outcome on net PnL (green
    win, red loss, grey breakeven), joined by a thin line in the outcome's color.

    Labelled artists: ``close`` or the candle bodies, ``long entry``, ``short entry``, ``win exit``,
    ``loss exit``, ``flat exit`` (each present only when it has points).
    """
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    ax.set_title(title or (f"Trades on {instrument}" if instrument else "Trades on price"))
    ax.set_ylabel("price")
    ax.grid(True, alpha=0.3)
    frame = _price_frame(prices)
    if instrument is not None and "instrument" in trades.columns:
        trades = trades[trades["instrument"] == instrument]
    closed = trades.dropna(subset=["entry_time", "exit_time"])

    x = _date_nums(frame.index)
    if set(_OHLC) <= set(frame.columns) and 0 < len(frame) <= max_candles:
        width = float(np.median(np.diff(x))) * 0.7 if len(x) > 1 else 1.0 / 1440
        up = (frame["close"] >= frame["open"]).to_numpy()
        colors = [COLORS["win"] if u else COLORS["loss"] for u in up]
        ax.vlines(x, frame["low"], frame["high"], colors=colors, linewidth=0.8)
        body_low = np.minimum(frame["open"], frame["close"]).to_numpy()
        body = np.abs(frame["close"] - frame["open"]).to_numpy()
        ax.bar(x, body, width=width, bottom=body_low, color=colors, label="candles")
    elif len(frame):
        ax.plot(x, frame["close"].to_numpy(), color=COLORS["price"], linewidth=1.0, label="close")
    else:
        _no_data(ax, "no prices")

    if len(closed):
        entry_x, exit_x = _date_nums(closed["entry_time"]), _date_nums(closed["exit_time"])
        entry_y, exit_y = closed["entry_price"].to_numpy(), closed["exit_price"].to_numpy()
        net = closed["net_pnl"].to_numpy()
        outcome = np.where(net > 0, "win", np.where(net < 0, "loss", "flat"))
        # one (2, 2) array per trade: [[entry x, entry y], [exit x, exit y]]
        segments = list(np.stack([np.column_stack([entry_x, entry_y]), np.column_stack([exit_x, exit_y])], axis=1))
        ax.add_collection(
            LineCollection(segments, colors=[COLORS[o] for o in outcome], linewidths=0.8, linestyles="dotted")
        )
        direction = closed["direction"].to_numpy()
        for side, marker in (("long", "^"), ("short", "v")):
            mask = direction == side
            if mask.any():
                ax.plot(
                    entry_x[mask],
                    entry_y[mask],
                    linestyle="none",
                    marker=marker,
                    markersize=8,
                    color=COLORS[side],
                    label=f"{side} entry",
                )
        for kind, marker in (("win", "o"), ("loss", "X"), ("flat", "s")):
            mask = outcome == kind
            if mask.any():
                ax.plot(
                    exit_x[mask],
                    exit_y[mask],
                    linestyle="none",
                    marker=marker,
                    markersize=7,
                    color=COLORS[kind],
                    markeredgecolor="black",
                    markeredgewidth=0.5,
                    label=f"{kind} exit",
                )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    _format_time_axis(ax)
    return fig


def plot_pnl_distribution(
    trades: pd.DataFrame,
    *,
    bins: int = 30,
    title: str | None = None,
    currency: str | None = None,
    figsize: tuple[float, float] = (8, 5),
) -> Figure:
    """Histogram of net PnL per trade, wins and losses in their colors on shared bin edges, with reference lines
    at zero and at the expectancy (mean net PnL), so skew (many small wins, few big losses) is visible at a glance.
    """
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    net = trades["net_pnl"].dropna().to_numpy(dtype="float64") if "net_pnl" in trades else np.array([])
    ax.set_title(title or f"Net PnL per trade ({len(net)} trades)")
    ax.set_xlabel(f"net PnL ({currency})" if currency else "net PnL")
    ax.set_ylabel("trades")
    ax.grid(True, alpha=0.3)
    if len(net) == 0:
        _no_data(ax, "no trades")
        return fig
    edges: list[float] = np.histogram_bin_edges(net, bins=bins).tolist()  # every class shares these edges
    for kind, mask in (("win", net > 0), ("loss", net < 0), ("flat", net == 0)):
        if mask.any():
            ax.hist(net[mask], bins=edges, color=COLORS[kind], alpha=0.8, label=f"{kind} ({int(mask.sum())})")
    ax.axvline(0.0, color="black", linewidth=0.8, label="zero")
    ax.axvline(float(net.mean()), color=COLORS["long"], linestyle="--", linewidth=1.2, label="expectancy")
    ax.legend(loc="best", fontsize="small")
    return fig
