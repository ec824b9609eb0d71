"""Declared series: the array form equals the incremental (live) form to the last bit, and never looks ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradebaas.backtest.data import load_default
from tradebaas.strategies import indicators, series
from tradebaas.strategies.causality import check_series, cut_points, stream_values
from tradebaas.strategies.series import CandleArrays, Declared

T0 = 1_736_208_000_000
M = 60_000

LIBRARY = {
    "ema8": series.ema(8),
    "ema21": series.ema(21),
    "ema_high": series.ema(5, "high"),
    "rsi": series.rsi(14),
    "volatility": series.volatility(20),
    "momentum": series.momentum(5),
    "atr_pct": series.atr_pct(14),
    "pullback": series.pullback(0.15, 10, 20),
    "pullback_big": series.pullback(0.5, 10, 20),
    "compression": series.compression(12, 0.6),
}


@pytest.fixture(scope="module")
def month() -> CandleArrays:
    return CandleArrays.from_frame(load_default())


def walk(seed: int, n: int, tick: float) -> CandleArrays:
    """Random candles with flat stretches and coarse ticks (ties, zero ranges, equal closes are common)."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 3, n) * (rng.random(n) < 0.7)
    closes = 1000.0 + np.cumsum(steps)
    if tick:
        closes = np.round(closes / tick) * tick
    opens = np.concatenate(([closes[0]], closes[:-1]))
    wick = np.abs(rng.normal(0, 1, n)) * (rng.random(n) < 0.5)
    df = pd.DataFrame({"open": opens, "high": np.maximum(opens, closes) + wick,
                       "low": np.minimum(opens, closes) - wick, "close": closes, "volume": 1.0},
                      index=pd.to_datetime(T0 + np.arange(n) * M, unit="ms", utc=True))
    return CandleArrays.from_frame(df)


@pytest.mark.parametrize("name", list(LIBRARY))
def test_every_library_series_is_causal_and_live_equal_on_the_bundled_month(month, name):
    assert check_series(name, LIBRARY[name], month, cut_points(len(month))) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), tick=st.sampled_from([0.0, 0.5, 2.0]))
def test_every_library_series_is_live_equal_on_random_candles(seed, n, tick):
    a = walk(seed, n, tick)
    for name, s in LIBRARY.items():
        np.testing.assert_array_equal(np.asarray(s.array(a), dtype="float64"), stream_values(s, a), err_msg=name)


def exact_loop(closes: np.ndarray, period: int) -> np.ndarray:
    ema = indicators.EMA(period)
    return np.array([np.nan if v is None else v for v in (ema.update(c) for c in closes.tolist())])


@pytest.mark.parametrize("period", [2, 9, 21, 60])
def test_the_blocked_exact_ema_equals_the_incremental_one_bit_for_bit(period):
    rng = np.random.default_rng(period)
    closes = 50_000.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, 400_000)))
    k = 2.0 / (period + 1)
    w = indicators.ema_overlap(k)
    assert len(closes) >= 60 * (w + max(4 * w, 512))  # the blocked path, not the plain loop, is what runs
    np.testing.assert_array_equal(indicators.ema_array(closes, period, exact=True), exact_loop(closes, period))


def test_a_block_that_does_not_meet_its_predecessor_is_recomputed_exactly(monkeypatch):
    # an overlap of one step cannot forget the approximate start: (almost) every block must fall back
    closes = 50_000.0 * np.exp(np.cumsum(np.random.default_rng(7).normal(0, 1e-3, 200_000)))
    seed, k = float(np.cumsum(closes[:9])[-1]) / 9, 0.2
    calls = []
    loop = indicators._ema_loop
    monkeypatch.setattr(indicators, "_ema_loop", lambda x, v, kk: calls.append(len(x)) or loop(x, v, kk))
    got = indicators._ema_recursion(closes[9:], seed, k, overlap=1)
    assert len(calls) > 10
    np.testing.assert_array_equal(got, [seed, *loop(closes[9:], seed, k)])


def test_rolling_runs_any_window_function_live_on_its_window(month):
    def high_low(a: CandleArrays) -> np.ndarray:
        out = np.full(len(a), np.nan)
        if len(a) >= 5:
            win = np.lib.stride_tricks.sliding_window_view(a.high - a.low, 5)
            out[4:] = win.max(axis=1)
        return out

    s = series.rolling("range5", high_low, 5)
    assert check_series("range5", s, month.head(3000), cut_points(3000)) == []


def test_a_series_that_reads_the_next_candle_is_reported(month):
    peek = Declared("peek", lambda a: np.append(a.close[1:], np.nan), lambda: series.ema(1).stream())
    problems = check_series("peek", peek, month.head(2000), cut_points(2000))
    assert any("looks ahead" in p for p in problems)
    assert any("live (incremental) values differ" in p for p in problems)


def cumsum_mean(a: CandleArrays) -> np.ndarray:
    """A 20-close mean from a running sum: fast, but its rounding depends on every close since the first."""
    cs = np.concatenate(([0.0], np.cumsum(a.close)))
    out = np.full(len(a), np.nan)
    out[19:] = (cs[20:] - cs[:-20]) / 20
    return out


def test_a_running_sum_mean_is_not_exact_over_its_window():
    # over the window alone the running sum starts elsewhere, so its last bits differ: rolling() is exact live
    # only for functions of the window alone, and the check says so (or accepts a stated tolerance)
    a = walk(1, 5000, 0.0)  # closes that are not whole numbers: sums of them round
    mean = series.rolling("mean20", cumsum_mean, 20)
    problems = check_series("mean20", mean, a, cut_points(5000))
    assert problems and "live (incremental) values differ" in problems[0]
    assert check_series("mean20", mean, a, cut_points(5000), tolerance=1e-9) == []


def test_bad_declarations_fail_at_once():
    with pytest.raises(ValueError, match="source"):
        series.ema(9, "hlc3")
    with pytest.raises(ValueError, match="period"):
        series.ema(0)
    with pytest.raises(ValueError, match="window"):
        series.rolling("x", lambda a: a.close, 0)
