"""Candle loading and resampling for backtests."""

from __future__ import annotations

import pandas as pd
import pytest

from tradebaas.backtest.data import DataError, interval_ms, load_candles, load_default, resample


def test_bundled_data_loads_as_utc_float_ohlcv():
    df = load_default()
    assert len(df) == 38_942 and str(df.index.tz) == "UTC"
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert all(str(t) == "float64" for t in df.dtypes)
    assert df.index[0] == pd.Timestamp("2025-01-07 00:01", tz="UTC") and interval_ms(df) == 60_000


def test_parquet_and_millisecond_timestamps_load_the_same(tmp_path):
    df = load_default().iloc[:100]
    raw = df.reset_index(drop=True).assign(timestamp=df.index.as_unit("ms").asi8)
    raw.to_parquet(tmp_path / "c.parquet")
    pd.testing.assert_frame_equal(load_candles(tmp_path / "c.parquet"), df)


def test_resample_to_five_minutes_aggregates_ohlcv():
    df = load_default().iloc[:20]
    r = resample(df, "5min")
    first = df.loc[:"2025-01-07 00:04:59"]
    assert r.iloc[0].tolist() == [first.open.iloc[0], first.high.max(), first.low.min(), first.close.iloc[-1],
                                  pytest.approx(first.volume.sum())]
    assert interval_ms(r) == 300_000


def test_resample_fills_empty_bins_with_the_previous_close():
    idx = pd.to_datetime(["2025-01-01 00:00", "2025-01-01 00:20"], utc=True)
    df = pd.DataFrame({"open": [1.0, 3.0], "high": [2.0, 3.0], "low": [1.0, 3.0], "close": [2.0, 3.0],
                       "volume": [1.0, 1.0]}, index=idx)
    r = resample(df, "5min")
    assert len(r) == 5 and r.iloc[1].tolist() == [2.0, 2.0, 2.0, 2.0, 0.0]


def test_nan_prices_are_refused():
    df = load_default().iloc[:5].copy()
    df.iloc[2, 3] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        load_candles(df)
