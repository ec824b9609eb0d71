"""Candle data for backtests: load CSV / Parquet / DataFrame into one normalised shape, and resample.

The normalised frame has a UTC ``DatetimeIndex`` named ``time`` (each bar's *start*), float columns ``open, high,
low, close, volume``, sorted, without duplicate bars. Timestamps may be a ``timestamp``/``time``/``date`` column
in Unix seconds (the Bitstamp file), milliseconds, or ISO strings, or the index itself.
"""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tradebaas.errors import UserError

if TYPE_CHECKING:
    from tradebaas.home import Home

COLUMNS = ("open", "high", "low", "close", "volume")
DEFAULT_FILE = "bitstamp_btcusd_1min_20250107-20250203.csv.gz"
_TIME_COLUMNS = ("timestamp", "time", "date", "datetime", "ts", "ts_ms", "open_time")


class DataError(UserError):
    """A candle file or frame cannot be used (missing, unreadable, wrong columns, bad values)."""


def default_path() -> Path:
    """The bundled real data: Bitstamp BTC/USD 1-minute candles, 2025-01-07 .. 2025-02-03 (CC BY 4.0)."""
    return Path(str(resources.files("tradebaas") / "data" / DEFAULT_FILE))


def load_default() -> pd.DataFrame:
    return load_candles(default_path())


def read_parquet_once(path: Path) -> pd.DataFrame:
    """A Parquet file read from one open of it: the engine replaces day files (atomic rename) while notebooks read
    them, and ``pd.read_parquet(path)`` opens the path more than once, so a replace between two opens reads the
    halves of two files ("Unexpected end of stream")."""
    return pd.read_parquet(io.BytesIO(Path(path).read_bytes()))


def load_candles(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """A CSV (optionally gzipped) or Parquet file, or a DataFrame -> the normalised candle frame."""
    if isinstance(source, pd.DataFrame):
        return normalise(source, "DataFrame")
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"candle file not found: {path}")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            raw = read_parquet_once(path)
        else:
            raw = pd.read_csv(path)
    except Exception as exc:  # pandas raises many kinds; the user needs one line
        raise DataError(f"cannot read candle file {path}: {exc}") from None
    return normalise(raw, str(path))


def _to_utc_index(values: pd.Series | pd.Index, where: str) -> pd.DatetimeIndex:
    if isinstance(values, pd.DatetimeIndex):
        idx = values
    elif pd.api.types.is_datetime64_any_dtype(values):
        idx = pd.DatetimeIndex(values)
    elif pd.api.types.is_numeric_dtype(values):
        arr = np.asarray(values, dtype="float64")
        if len(arr) and np.nanmax(np.abs(arr)) > 1e11:  # milliseconds (1e11 s is the year 5138)
            idx = pd.DatetimeIndex(pd.to_datetime(arr.astype("int64"), unit="ms", utc=True))
        else:
            idx = pd.DatetimeIndex(pd.to_datetime((arr * 1000).round().astype("int64"), unit="ms", utc=True))
    else:
        try:
            idx = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
        except Exception as exc:
            raise DataError(f"{where}: cannot parse timestamps ({exc})") from None
    if idx.tz is None:
        idx = idx.tz_localize("UTC")
    else:
        idx = idx.tz_convert("UTC")
    return idx.as_unit("ms")


def normalise(raw: pd.DataFrame, where: str = "data") -> pd.DataFrame:
    """Any reasonable OHLCV frame -> the normalised candle frame; clear errors for what cannot be fixed."""
    df = raw.copy()
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in ("open", "high", "low", "close") if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)} (have: {', '.join(df.columns)})")
    time_col = next((c for c in _TIME_COLUMNS if c in df.columns), None)
    if time_col is not None:
        index = _to_utc_index(df[time_col], where)
    elif isinstance(df.index, pd.DatetimeIndex) or pd.api.types.is_numeric_dtype(df.index):
        if not isinstance(df.index, pd.DatetimeIndex) and isinstance(df.index, pd.RangeIndex):
            raise DataError(f"{where}: no timestamp column (expected one of {', '.join(_TIME_COLUMNS)})")
        index = _to_utc_index(df.index, where)
    else:
        raise DataError(f"{where}: no timestamp column (expected one of {', '.join(_TIME_COLUMNS)})")
    if "volume" not in df.columns:
        df["volume"] = 0.0
    try:
        out = pd.DataFrame({c: pd.to_numeric(df[c], errors="raise").to_numpy(dtype="float64") for c in COLUMNS},
                           index=index)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{where}: non-numeric OHLCV values ({exc})") from None
    out.index.name = "time"
    if out[list(COLUMNS[:4])].isna().any().any():
        raise DataError(f"{where}: missing (NaN) prices in {int(out[list(COLUMNS[:4])].isna().any(axis=1).sum())} rows")
    if len(out) == 0:
        raise DataError(f"{where}: no candles")
    out["volume"] = out["volume"].fillna(0.0)
    if not out.index.is_monotonic_increasing:
        out = out.sort_index(kind="stable")
    if out.index.has_duplicates:
        out = out[~out.index.duplicated(keep="last")]
    return out


def resample(df: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Aggregate candles to a coarser interval (``"5min"``, ``"1h"``): bars labelled by their start, empty bars
    repeat the previous close with zero volume (as the live candle builder does)."""
    r = df.resample(rule, label="left", closed="left")
    out = pd.DataFrame({
        "open": r["open"].first(),
        "high": r["high"].max(),
        "low": r["low"].min(),
        "close": r["close"].last(),
        "volume": r["volume"].sum(),
    })
    close = out["close"].ffill()
    for col in ("open", "high", "low"):
        out[col] = out[col].fillna(close)
    out["close"] = close
    out["volume"] = out["volume"].fillna(0.0)
    out.index.name = "time"
    return out.dropna()


def interval_ms(df: pd.DataFrame) -> int:
    """The bar interval of a normalised frame (the most common spacing), in ms; 60 000 if it cannot tell."""
    if len(df) < 2:
        return 60_000
    ts = df.index.asi8 if df.index.unit == "ns" else df.index.as_unit("ns").asi8
    diffs = np.diff(ts) // 1_000_000
    diffs = diffs[diffs > 0]
    if len(diffs) == 0:
        return 60_000
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)])


def load_recorded(home: Home | str | Path | None = None, instrument: str = "BTC_USDC-PERPETUAL", start: object = None,
                  end: object = None) -> pd.DataFrame:
    """The candles the engine recorded for ``instrument`` (``TRADEBAAS_HOME/data/candles/<instrument>/*.parquet``,
    see ``tradebaas.engine.live.recorder``) as the normalised frame; ``start``/``end`` (times, inclusive) cut it.

    ``home`` is a ``Home``, a path, or None for ``TRADEBAAS_HOME``. Only the day files that can hold the range are
    read. Minutes the engine was not running are missing (no candles are invented).
    """
    from tradebaas.home import Home, get_home

    root = home.root if isinstance(home, Home) else get_home(home).root
    folder = Path(root) / "data" / "candles" / instrument
    files = sorted(folder.glob("*.parquet"))
    lo = _utc(start)
    hi = _utc(end)
    if lo is not None:
        files = [f for f in files if f.stem >= lo.strftime("%Y-%m-%d")]
    if hi is not None:
        files = [f for f in files if f.stem <= hi.strftime("%Y-%m-%d")]
    if not files:
        raise DataError(f"no recorded candles of {instrument} under {folder}"
                        + (f" between {lo} and {hi}" if lo is not None or hi is not None else ""))
    df = normalise(pd.concat([read_parquet_once(f) for f in files], ignore_index=True), str(folder))
    if lo is not None:
        df = df[df.index >= lo]
    if hi is not None:
        df = df[df.index <= hi]
    if len(df) == 0:
        raise DataError(f"no recorded candles of {instrument} between {lo} and {hi}")
    return df


def load_recorded_trades(home: Home | str | Path | None = None, instrument: str = "BTC_USDC-PERPETUAL", start: object = None,
                         end: object = None) -> pd.DataFrame:
    """The exchange's public trades the engine recorded for ``instrument`` (``data/trades/<instrument>/*.parquet``):
    a frame indexed by UTC time with ``trade_id, price, amount, direction``; ``start``/``end`` cut it (inclusive)."""
    from tradebaas.home import Home, get_home

    root = home.root if isinstance(home, Home) else get_home(home).root
    folder = Path(root) / "data" / "trades" / instrument
    lo, hi = _utc(start), _utc(end)
    files = [f for f in sorted(folder.glob("*.parquet"))
             if (lo is None or f.stem >= lo.strftime("%Y-%m-%d")) and (hi is None or f.stem <= hi.strftime("%Y-%m-%d"))]
    if not files:
        raise DataError(f"no recorded trades of {instrument} under {folder}")
    df = pd.concat([read_parquet_once(f) for f in files], ignore_index=True).sort_values(["timestamp", "trade_id"])
    df.index = pd.to_datetime(df.pop("timestamp"), unit="ms", utc=True)
    df.index.name = "time"
    if lo is not None:
        df = df[df.index >= lo]
    if hi is not None:
        df = df[df.index <= hi]
    return df


def _utc(t: object) -> pd.Timestamp | None:
    if t is None:
        return None
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
