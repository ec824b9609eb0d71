"""Performance statistics of a trades DataFrame and its equity curve (the analytics contract).

One definition per number, shared by live analytics, backtests and reports, so a backtest and the live session it
predicts are compared with the same ruler. Definitions and formulas are in docs/analytics.md; the short version:

- Trade statistics (win rate, averages, profit factor, expectancy) use ``net_pnl`` (after fees): a trade that
  wins before fees and loses after them is a loss to the account.
- Drawdown statistics use the realised equity curve at trade resolution (one point per closed trade), so the
  reported maximum drawdown is the one the drawdown plot shows, including troughs inside a day.
- Return-based ratios (Sharpe, Sortino, annual return, volatility) use *daily* returns of that equity sampled at
  the end of each UTC calendar day (forward-filled over days without a close), annualised with
  ``periods_per_year`` = 365 because crypto perpetuals trade every day. The formulas are empyrical's, so
  ``empyrical.sharpe_ratio(daily_returns(equity), annualization=365)`` agrees with ``stats(...)["sharpe"]``;
  the unit tests hold us to that.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tradebaas.analytics.frames import _utc_timestamp, equity_curve, settlement_currency

__all__ = ["STAT_NAMES", "stats", "stats_frame", "by_strategy", "by_day", "daily_returns"]

#: The rows of ``stats`` (and the columns of ``stats_frame``), in display order.
STAT_NAMES: tuple[str, ...] = (
    "start",
    "end",
    "days",
    "currency",
    "capital",
    "final_equity",
    "total_return",
    "net_pnl",
    "gross_pnl",
    "fees",
    "trades",
    "wins",
    "losses",
    "win_rate",
    "avg_win",
    "avg_loss",
    "profit_factor",
    "expectancy",
    "max_drawdown",
    "max_drawdown_ccy",
    "max_drawdown_duration",
    "annual_return",
    "volatility",
    "sharpe",
    "sortino",
    "calmar",
    "exposure",
    "trades_per_day",
)


def daily_returns(equity: pd.Series, *, capital: float | None = None, end: Any = None) -> pd.Series:
    """The return series behind Sharpe, Sortino, volatility, annual return and Calmar.

    Equity is sampled at the close of every UTC calendar day from the first point's day to the last (or to
    ``end``'s day), forward-filled over days without a trade, and turned into simple returns; the first day's
    return is measured from ``capital`` (default: the curve's first value, the starting capital). Calendar
    days rather than trades, because trades are irregular in time and a ratio per trade cannot be annualised;
    every calendar day rather than business days, because the market never closes. Index: the day (00:00 UTC).
    """
    if equity.empty:
        return pd.Series(
            [], index=pd.DatetimeIndex([], tz="UTC", name="day"), name="returns", dtype="float64"
        )
    base = float(equity.iloc[0]) if capital is None else float(capital)
    closes = equity.resample("1D").last()
    if end is not None:
        last_day = _utc_timestamp(end).floor("D")
        if last_day > closes.index[-1]:
            closes = closes.reindex(
                pd.date_range(closes.index[0], last_day, freq="D", name=closes.index.name)
            )
    closes = closes.ffill()
    previous = closes.shift(1, fill_value=base)
    return (closes / previous - 1.0).rename("returns").rename_axis("day")


def stats(
    trades: pd.DataFrame,
    equity: pd.Series | None = None,
    *,
    capital: float | None = None,
    end: Any = None,
    periods_per_year: int = 365,
    risk_free: float = 0.0,
) -> pd.Series:
    """The performance table of one trades frame and its equity curve, as a Series indexed by ``STAT_NAMES``.

    ``equity`` defaults to ``equity_curve(trades, capital)``; ``capital`` defaults to the curve's first value.
    ``end`` extends the period past the last close (e.g. "now" for a live strategy that is flat), which
    lowers exposure and trades/day and adds flat days to the return series. ``risk_free`` is an *annual*
    rate, applied per period as ``risk_free / periods_per_year`` (and used as Sortino's minimum acceptable
    return). Undefined values are NaN, never exceptions: see docs/analytics.md for each rule.
    """
    settlement_currency(trades)
    closed = trades[trades["exit_time"].notna()]
    if equity is None:
        if capital is None:
            raise ValueError("stats needs an equity curve or the starting capital")
        equity = equity_curve(closed, capital)
    capital_value = float(equity.iloc[0]) if capital is None and not equity.empty else capital
    capital_value = None if capital_value is None else float(capital_value)
    values: dict[str, Any] = {
        "currency": settlement_currency(closed),
        "capital": np.nan if capital_value is None else capital_value,
    }
    values |= _trade_stats(closed)
    values |= _curve_stats(equity, capital_value, end, periods_per_year, risk_free)
    values["exposure"] = _exposure(closed, values["start"], values["end"])
    values["trades_per_day"] = values["trades"] / values["days"] if values["days"] else np.nan
    return pd.Series(
        [values[name] for name in STAT_NAMES], index=list(STAT_NAMES), name="stats", dtype=object
    )


def stats_frame(
    trades: pd.DataFrame,
    capital: float,
    *,
    by: str = "strategy_id",
    total: bool = True,
    start: Any = None,
    end: Any = None,
    periods_per_year: int = 365,
    risk_free: float = 0.0,
) -> pd.DataFrame:
    """``stats`` per value of column ``by`` (one row each, plus an ``"(all)"`` row when ``total``).

    Every group is measured as if it alone had traded ``capital`` over the *same* period (from ``start``, default
    the first entry of any trade, to ``end``, default the last exit of any trade), so exposure, trades/day and
    the annualised figures of different groups are comparable side by side.
    """
    closed = trades[trades["exit_time"].notna()]
    settlement_currency(closed)
    if start is None and len(closed):
        start = min(closed["entry_time"].min(), closed["exit_time"].min())
    if end is None and len(closed):
        end = closed["exit_time"].max()
    kwargs = {"capital": capital, "end": end, "periods_per_year": periods_per_year, "risk_free": risk_free}
    rows: dict[Any, pd.Series] = {}
    for key, group in closed.groupby(by, sort=True, dropna=False):
        rows[key] = stats(group, equity_curve(group, capital, start=start), **kwargs)
    if total:
        rows["(all)"] = stats(closed, equity_curve(closed, capital, start=start), **kwargs)
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(STAT_NAMES)).rename_axis(by)
    return frame.infer_objects()


def by_strategy(
    trades: pd.DataFrame,
    capital: float,
    *,
    start: Any = None,
    end: Any = None,
    periods_per_year: int = 365,
    risk_free: float = 0.0,
) -> pd.DataFrame:
    """One ``stats`` row per ``strategy_id``, each on ``capital`` over the common period (no total row)."""
    return stats_frame(
        trades,
        capital,
        by="strategy_id",
        total=False,
        start=start,
        end=end,
        periods_per_year=periods_per_year,
        risk_free=risk_free,
    )


_DAY_COLUMNS = (
    "trades",
    "wins",
    "losses",
    "win_rate",
    "gross_pnl",
    "fees",
    "net_pnl",
    "best",
    "worst",
    "cum_net_pnl",
)


def by_day(trades: pd.DataFrame) -> pd.DataFrame:
    """Per UTC calendar day of exit: trade count, wins, losses, win rate, gross/fees/net PnL, best and worst
    trade, and cumulative net PnL. Days between the first and last exit without a trade are present with zero
    trades, so the table lines up with the daily return series.
    """
    settlement_currency(trades)
    closed = trades[trades["exit_time"].notna()]
    if closed.empty:
        index = pd.DatetimeIndex([], tz="UTC", name="day")
        return pd.DataFrame({c: pd.Series([], dtype="float64") for c in _DAY_COLUMNS}, index=index)
    net = closed["net_pnl"]
    work = pd.DataFrame(
        {
            "day": closed["exit_time"].dt.floor("D"),
            "win": (net > 0).astype("int64"),
            "loss": (net < 0).astype("int64"),
            "pnl": closed["pnl"],
            "fees": closed["fees"],
            "net": net,
        }
    )
    grouped = work.groupby(pd.Grouper(key="day", freq="D"))
    table = grouped.agg(
        trades=("net", "size"),
        wins=("win", "sum"),
        losses=("loss", "sum"),
        gross_pnl=("pnl", "sum"),
        fees=("fees", "sum"),
        net_pnl=("net", "sum"),
        best=("net", "max"),
        worst=("net", "min"),
    )
    table["win_rate"] = table["wins"] / table["trades"].where(table["trades"] > 0)
    table["cum_net_pnl"] = table["net_pnl"].cumsum()
    return table[list(_DAY_COLUMNS)]


def _trade_stats(closed: pd.DataFrame) -> dict[str, Any]:
    """Counts and per-trade figures on net PnL. Breakeven trades (net 0) count as trades, not as wins or losses."""
    net = closed["net_pnl"].astype("float64")
    wins, losses = net[net > 0], net[net < 0]
    n = len(net)
    gross_win, gross_loss = float(wins.sum()), float(-losses.sum())
    if n == 0 or (gross_win == 0 and gross_loss == 0):
        profit_factor = np.nan
    elif gross_loss == 0:
        profit_factor = np.inf
    else:
        profit_factor = gross_win / gross_loss
    return {
        "net_pnl": float(net.sum()),
        "gross_pnl": float(closed["pnl"].sum()),
        "fees": float(closed["fees"].sum()),
        "trades": n,
        "wins": len(wins),
        "losses": len(losses),
        "win_rate": len(wins) / n if n else np.nan,
        "avg_win": float(wins.mean()) if len(wins) else np.nan,
        "avg_loss": float(losses.mean()) if len(losses) else np.nan,
        "profit_factor": profit_factor,
        "expectancy": float(net.mean()) if n else np.nan,
    }


def _curve_stats(
    equity: pd.Series, capital: float | None, end: Any, periods_per_year: int, risk_free: float
) -> dict[str, Any]:
    """Drawdown figures at trade resolution; return ratios on the daily series (empyrical's formulas)."""
    nan_row: dict[str, Any] = {
        "start": pd.NaT,
        "end": pd.NaT,
        "days": 0,
        "final_equity": np.nan,
        "total_return": np.nan,
        "max_drawdown": np.nan,
        "max_drawdown_ccy": np.nan,
        "max_drawdown_duration": pd.NaT,
        "annual_return": np.nan,
        "volatility": np.nan,
        "sharpe": np.nan,
        "sortino": np.nan,
        "calmar": np.nan,
    }
    if equity.empty or capital is None:
        return nan_row
    start = equity.index[0]
    period_end = equity.index[-1] if end is None else max(equity.index[-1], _utc_timestamp(end))
    peak = equity.cummax()
    max_dd = float((equity / peak - 1.0).min())
    returns = daily_returns(equity, capital=capital, end=period_end)
    annual = _annual_return(returns, periods_per_year)
    rf = risk_free / periods_per_year
    return {
        "start": start,
        "end": period_end,
        "days": len(returns),
        "final_equity": float(equity.iloc[-1]),
        "total_return": float(equity.iloc[-1]) / capital - 1.0,
        "max_drawdown": max_dd,
        "max_drawdown_ccy": float((equity - peak).min()),
        "max_drawdown_duration": _max_underwater(equity, peak, period_end),
        "annual_return": annual,
        "volatility": float(returns.std(ddof=1) * np.sqrt(periods_per_year)) if len(returns) > 1 else np.nan,
        "sharpe": _sharpe(returns - rf, periods_per_year),
        "sortino": _sortino(returns - rf, periods_per_year),
        "calmar": _calmar(annual, max_dd),
    }


#: Spread of daily returns below which they count as constant (compounding leaves ~1e-16 of float noise).
_FLAT = 1e-12


def _annual_return(returns: pd.Series, periods_per_year: int) -> float:
    """Compound annual growth rate: ``prod(1 + r) ** (periods_per_year / n) - 1`` (empyrical.annual_return)."""
    if returns.empty:
        return np.nan
    growth = float((1.0 + returns).prod())
    return growth ** (periods_per_year / len(returns)) - 1.0 if growth >= 0 else np.nan


def _calmar(annual_return: float, max_drawdown: float) -> float:
    """Annual return over the magnitude of the max drawdown; NaN without a drawdown (empyrical.calmar_ratio)."""
    if not max_drawdown < 0:
        return np.nan
    ratio = annual_return / -max_drawdown
    return ratio if np.isfinite(ratio) else np.nan


def _sharpe(excess: pd.Series, periods_per_year: int) -> float:
    """``mean / std(ddof=1) * sqrt(periods_per_year)``; NaN with fewer than two returns or zero dispersion.

    empyrical returns +-inf (or a float-noise giant) for constant non-zero returns; a ratio that only says
    "no variance" is not a Sharpe, so we answer NaN when the returns spread by less than ``_FLAT`` (1e-12,
    far below any real daily return) and agree with empyrical everywhere else.
    """
    if len(excess) < 2 or float(excess.max() - excess.min()) <= _FLAT:
        return np.nan
    return float(excess.mean() / excess.std(ddof=1) * np.sqrt(periods_per_year))


def _sortino(excess: pd.Series, periods_per_year: int) -> float:
    """``mean * ppy / (sqrt(mean(min(r, 0) ** 2)) * sqrt(ppy))`` (empyrical.sortino_ratio).

    NaN with fewer than two returns or a zero mean and no downside; +inf when there is no downside at all and
    the mean is positive (like a profit factor without losses).
    """
    if len(excess) < 2:
        return np.nan
    mean = float(excess.mean())
    downside = float(np.sqrt((excess.clip(upper=0.0) ** 2).mean()) * np.sqrt(periods_per_year))
    if downside == 0.0:
        return np.nan if mean == 0.0 else float(np.copysign(np.inf, mean))
    return mean * periods_per_year / downside


def _max_underwater(equity: pd.Series, peak: pd.Series, period_end: pd.Timestamp) -> pd.Timedelta:
    """Longest time from a peak until equity is back at that peak (or until ``period_end`` if it never is)."""
    under = (equity < peak).to_numpy()
    if not under.any():
        return pd.Timedelta(0)
    times = pd.Series(equity.index, dtype=equity.index.dtype)
    at_peak = times.where(~under)
    since = at_peak.ffill()
    until = at_peak.bfill().fillna(period_end)
    return pd.Timedelta((until - since)[under].max())


def _exposure(closed: pd.DataFrame, start: Any, end: Any) -> float:
    """Fraction of [start, end] covered by at least one open trade (overlaps counted once).

    Union length of the sorted intervals: each interval adds what it reaches beyond every earlier one,
    ``max(0, reach_i - max(entry_i, reach_{i-1}))`` with ``reach`` the running maximum of exits.
    """
    if pd.isna(start) or pd.isna(end) or end <= start:
        return np.nan
    spans = closed[["entry_time", "exit_time"]].dropna()
    if spans.empty:
        return 0.0
    entry = spans["entry_time"].clip(lower=start, upper=end)
    exit_ = spans["exit_time"].clip(lower=start, upper=end)
    order = np.argsort(entry.to_numpy(), kind="stable")
    entry, exit_ = entry.iloc[order].reset_index(drop=True), exit_.iloc[order].reset_index(drop=True)
    reach = exit_.cummax()
    previous = reach.shift(1).fillna(entry.iloc[0])
    begins = entry.where(entry > previous, previous)
    covered = (reach - begins).clip(lower=pd.Timedelta(0)).sum()
    return float(covered / (end - start))
