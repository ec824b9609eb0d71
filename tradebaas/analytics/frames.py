"""The pandas objects of the analytics contract: the trades DataFrame, the equity curve and its drawdown.

Live analytics (rows from the journal over RPC) and backtests (rows from the backtester) both go through
``trades_frame`` so that every downstream function (``stats``, the plots, the reports) sees one shape, whatever
produced the rows. The contract is fixed in docs/architecture.md ("Analytics contract"); docs/analytics.md
explains the definitions.

Invariants promised here:

- ``trades_frame`` returns exactly the contract columns first (then any extra keys the rows carried), timestamps
  as UTC ``datetime64``, prices/amounts/PnL as ``float64``, ``net_pnl == pnl - fees`` recomputed (never trusted
  from the input), and rows ordered by ``exit_time`` (ties keep input order).
- ``equity_curve`` is ``capital + cumsum(net_pnl)`` over closed trades in exit order, with one leading point
  at the start carrying ``capital``: the equity is *realised* equity, it moves only when a trade closes.
- ``drawdown`` is ``equity / running_peak - 1``: a fraction, always ``<= 0``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "TRADE_COLUMNS",
    "TIME_COLUMNS",
    "FLOAT_COLUMNS",
    "TEXT_COLUMNS",
    "trades_frame",
    "empty_trades_frame",
    "equity_curve",
    "drawdown",
    "settlement_currency",
]

#: The contract columns, in order (docs/architecture.md, "Analytics contract").
TRADE_COLUMNS: tuple[str, ...] = (
    "trade_id",
    "strategy_id",
    "instrument",
    "direction",
    "entry_time",
    "exit_time",
    "entry_price",
    "exit_price",
    "amount",
    "pnl",
    "fees",
    "net_pnl",
    "exit_reason",
    "currency",
)
TIME_COLUMNS: tuple[str, ...] = ("entry_time", "exit_time")
FLOAT_COLUMNS: tuple[str, ...] = ("entry_price", "exit_price", "amount", "pnl", "fees", "net_pnl")
TEXT_COLUMNS: tuple[str, ...] = (
    "trade_id",
    "strategy_id",
    "instrument",
    "direction",
    "exit_reason",
    "currency",
)

#: One resolution for every time column, so frames from the journal and from backtests concatenate cleanly.
TIME_DTYPE = "datetime64[us, UTC]"
TEXT_DTYPE = "str"

# Alternative spellings that journal/backtest rows may use for a contract column. Millisecond fields are the
# exchange's clock (Deribit timestamps are ms since the epoch).
_ALIASES = {
    "entry_time": ("entry_ts_ms",),
    "exit_time": ("exit_ts_ms",),
    "fees": ("fee",),
    "instrument": ("instrument_name",),
    "pnl": ("gross_pnl",),
}
_DIRECTIONS = {"long": "long", "buy": "long", "short": "short", "sell": "short"}


def empty_trades_frame() -> pd.DataFrame:
    """A trades frame with no rows but the contract's columns and dtypes, so code downstream never branches."""
    columns: dict[str, pd.Series] = {}
    for col in TRADE_COLUMNS:
        if col in TIME_COLUMNS:
            columns[col] = pd.Series([], dtype=TIME_DTYPE)
        elif col in FLOAT_COLUMNS:
            columns[col] = pd.Series([], dtype="float64")
        else:
            columns[col] = pd.Series([], dtype=TEXT_DTYPE)
    return pd.DataFrame(columns)


def _to_utc(values: pd.Series) -> pd.Series:
    """Timestamps of any usual spelling -> UTC. Numbers are milliseconds since the epoch (the exchange clock)."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        out = pd.to_datetime(values, utc=True)
    elif pd.api.types.is_numeric_dtype(values.dtype):
        out = pd.to_datetime(values, unit="ms", utc=True)
    else:
        # Mixed objects (str, datetime, Timestamp, int ms, None): numbers are ms, the rest is parsed;
        # naive values are taken as UTC (the engine and the exchange never use local time).
        numeric = pd.to_numeric(values, errors="coerce")
        parsed = pd.to_datetime(values.where(numeric.isna()), utc=True, format="mixed")
        out = parsed.where(numeric.isna(), pd.to_datetime(numeric, unit="ms", utc=True))
    return out.astype(TIME_DTYPE)


def _column(raw: pd.DataFrame, col: str) -> pd.Series | None:
    """The raw values of a contract column, row by row from its first present spelling; None if never given."""
    names = [name for name in (col, *_ALIASES.get(col, ())) if name in raw.columns]
    if not names:
        return None
    values = raw[names[0]]
    for name in names[1:]:
        values = values.astype(object).where(values.notna(), raw[name].astype(object))
    return values


def trades_frame(
    records: Iterable[Mapping[str, Any]] | pd.DataFrame, *, include_open: bool = False
) -> pd.DataFrame:
    """Normalise journal or backtest trade rows into the contract DataFrame (one row per closed trade).

    Accepted spellings: ``entry_time``/``exit_time`` as Timestamps, datetimes, ISO strings or ms integers
    (or ``entry_ts_ms``/``exit_ts_ms``); ``direction`` as long/short or buy/sell (or a ``Direction``);
    ``fee`` for ``fees``; ``instrument_name`` for ``instrument``. Missing fees count as 0; a missing
    ``currency`` stays missing. ``net_pnl`` is always recomputed as ``pnl - fees`` so that a stale or
    differently-defined input value can never disagree with the contract.

    Rows without an ``exit_time`` are open trades and are dropped unless ``include_open`` (they then sort last
    with ``NaT`` exit and NaN PnL as given). Keys outside the contract are kept, after the contract columns.
    """
    raw = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    if raw.empty:
        return empty_trades_frame()
    if _column(raw, "pnl") is None:
        raise ValueError("trade rows need a 'pnl' (gross PnL in the settlement currency)")

    out: dict[str, pd.Series] = {}
    for col in TRADE_COLUMNS:
        values = _column(raw, col)
        if col in TIME_COLUMNS:
            out[col] = (
                _to_utc(values)
                if values is not None
                else pd.Series(pd.NaT, index=raw.index, dtype=TIME_DTYPE)
            )
        elif col in FLOAT_COLUMNS:
            if col == "net_pnl":
                continue
            default = 0.0 if col == "fees" else np.nan
            series = pd.Series(default, index=raw.index) if values is None else values
            series = pd.to_numeric(series, errors="coerce").astype("float64")
            out[col] = series.fillna(0.0) if col == "fees" else series
        else:
            series = pd.Series(None, index=raw.index, dtype=object) if values is None else values
            # str() of a StrEnum is its value; None/NaN stay missing rather than becoming the text "None".
            text = series.map(lambda v: v.value if hasattr(v, "value") else v, na_action="ignore")
            out[col] = text.astype(TEXT_DTYPE)
    out["direction"] = out["direction"].str.lower().map(_DIRECTIONS).astype(TEXT_DTYPE)
    out["net_pnl"] = out["pnl"] - out["fees"]

    frame = pd.DataFrame(out, columns=list(TRADE_COLUMNS))
    consumed = set(TRADE_COLUMNS) | {a for v in _ALIASES.values() for a in v}
    extras = [c for c in raw.columns if c not in consumed]
    if extras:
        frame = pd.concat([frame, raw[extras]], axis=1)
    if not include_open:
        frame = frame[frame["exit_time"].notna()]
    frame = frame.sort_values("exit_time", kind="stable", na_position="last").reset_index(drop=True)
    if frame.empty:
        return empty_trades_frame()
    return frame


def settlement_currency(trades: pd.DataFrame) -> str | None:
    """The one settlement currency of ``trades`` (None if not recorded).

    Sums across BTC- and USDC-settled trades are meaningless, so every function that adds PnL refuses a mix:
    filter with ``trades[trades.currency == "BTC"]`` first.
    """
    if "currency" not in trades.columns:
        return None
    currencies = trades["currency"].dropna().unique()
    if len(currencies) > 1:
        raise ValueError(
            f"trades settle in several currencies {sorted(map(str, currencies))}; analyse one at a time "
            "(e.g. trades[trades.currency == 'BTC'])"
        )
    return str(currencies[0]) if len(currencies) else None


def equity_curve(trades: pd.DataFrame, capital: float, start: Any = None) -> pd.Series:
    """Realised equity: ``capital`` at ``start``, then ``capital + cumulative net_pnl`` at each trade's exit.

    ``start`` defaults to the first entry time (so the leading point precedes every close); a start after the
    first exit is refused rather than silently reordering history. With no trades the curve is the single
    starting point, or empty when there is no ``start`` either. Only closed trades count (open rows, with
    ``NaT`` exit, are ignored). The result is named ``equity`` with a UTC DatetimeIndex named ``time``.
    """
    settlement_currency(trades)
    closed = trades[trades["exit_time"].notna()].sort_values("exit_time", kind="stable")
    exits = pd.DatetimeIndex(closed["exit_time"]).tz_convert("UTC")
    if start is None:
        start_ts = pd.DatetimeIndex(closed["entry_time"]).min() if len(closed) else None
        if start_ts is not None and (pd.isna(start_ts) or start_ts > exits[0]):
            start_ts = exits[0]
    else:
        start_ts = _utc_timestamp(start)
        if len(closed) and start_ts > exits[0]:
            raise ValueError(f"start {start_ts} is after the first trade exit {exits[0]}")
    if start_ts is None or pd.isna(start_ts):
        return pd.Series(
            [],
            index=pd.DatetimeIndex([], tz="UTC", name="time").as_unit("us"),
            name="equity",
            dtype="float64",
        )

    values = np.concatenate(
        [[float(capital)], float(capital) + closed["net_pnl"].to_numpy(dtype="float64").cumsum()]
    )
    index = pd.DatetimeIndex([start_ts]).append(exits).as_unit("us").rename("time")
    return pd.Series(values, index=index, name="equity")


def drawdown(equity: pd.Series) -> pd.Series:
    """Fraction of equity below its running peak (``<= 0``; -0.25 means 25 % below the best equity so far).

    A fraction rather than currency so that curves of different sizes compare; the currency drop is
    ``equity - equity.cummax()``.
    """
    peak = equity.cummax()
    return (equity / peak - 1.0).clip(upper=0.0).rename("drawdown")


def _utc_timestamp(value: Any) -> pd.Timestamp:
    """A Timestamp in UTC from a Timestamp/datetime/ISO string (naive means UTC) or ms integer."""
    if _is_number(value):
        return pd.Timestamp(int(value), unit="ms", tz="UTC")
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
