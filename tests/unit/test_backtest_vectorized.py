"""The ema_cross array fast path makes exactly the event-driven run's trades, equity and decisions.

Trade-for-trade equality is checked with ``check_exact``: prices, fees and PnL come from the same fillmodel
functions on arrays, so they must be bitwise equal, not merely close.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradebaas.backtest import backtester
from tradebaas.backtest.backtester import backtest
from tradebaas.backtest.data import load_default
from tradebaas.backtest.vectorized import ArrayCache, sizes_for_sorted_prices
from tradebaas.instruments import BTC_PERPETUAL, BTC_USDC_PERPETUAL
from tradebaas.strategies.indicators import EMA, ema_array, ema_error_bound

T0 = 1_736_208_000_000
M = 60_000


@pytest.fixture(scope="module")
def month() -> pd.DataFrame:
    return load_default()


def incremental(closes: np.ndarray, period: int) -> np.ndarray:
    ema = EMA(period)
    return np.array([np.nan if v is None else v for v in (ema.update(c) for c in closes.tolist())])


def frame(closes: np.ndarray, spread: np.ndarray | None = None) -> pd.DataFrame:
    """Candles whose open is the previous close (plus noise when ``spread`` is given)."""
    closes = np.asarray(closes, dtype="float64")
    opens = np.concatenate(([closes[0]], closes[:-1])) if len(closes) else closes
    if spread is not None:
        opens = opens + spread
    idx = pd.to_datetime(T0 + np.arange(len(closes)) * M, unit="ms", utc=True)
    return pd.DataFrame({"open": opens, "high": np.maximum(opens, closes) + 1, "low": np.minimum(opens, closes) - 1,
                         "close": closes, "volume": 1.0}, index=idx)


def assert_same_run(df: pd.DataFrame, **kwargs) -> backtester.BacktestResult:
    fast = backtest("ema_cross", df, **kwargs)
    slow = backtest("ema_cross", df, vectorized=False, **kwargs)
    pd.testing.assert_frame_equal(fast.trades, slow.trades, check_exact=True)
    pd.testing.assert_series_equal(fast.equity, slow.equity, check_exact=True)
    assert fast.decisions == slow.decisions
    assert fast.open_position == slow.open_position
    return fast


@pytest.mark.parametrize("period", [1, 2, 9, 21, 200])
def test_ema_array_equals_the_incremental_indicator(month, period):
    closes = month["close"].to_numpy()
    ref = incremental(closes, period)
    exact = ema_array(closes, period, exact=True)
    np.testing.assert_array_equal(exact, ref)  # bitwise, NaN where not ready
    fast = ema_array(closes, period)
    assert np.isnan(fast[: period - 1]).all()
    assert np.nanmax(np.abs(fast - ref)) <= ema_error_bound(period, float(np.abs(closes).max()))


def test_ema_array_shorter_than_the_period_is_all_nan():
    assert np.isnan(ema_array(np.array([1.0, 2.0]), 3)).all()


@pytest.mark.parametrize("kwargs", [
    {},
    {"slippage": 0.0003, "fees": {"maker": -0.0001, "taker": 0.0007}},
    {"config": {"fast": 3, "slow": 8, "tradeSize": 2500.0}, "slippage": 0.001},
    {"config": {"fast": 21, "slow": 9}},  # "fast" slower than "slow": just the other sign
    {"start": "2025-01-10", "decisions": "none"},
    {"instrument": "BTC-PERPETUAL", "slippage": 0.0002},  # inverse: PnL and fees in BTC
])
def test_bundled_month_trade_for_trade(month, kwargs):
    r = assert_same_run(month, **kwargs)
    assert len(r.trades) > 100


def test_fast_path_is_taken_unless_every_decision_is_wanted(month, monkeypatch):
    def no_loop(*a, **k):
        raise AssertionError("event-driven loop used")

    monkeypatch.setattr(backtester, "_run", no_loop)
    assert len(backtest("ema_cross", month.iloc[:3000]).trades) > 0
    with pytest.raises(AssertionError, match="event-driven"):
        backtest("ema_cross", month.iloc[:3000], decisions="all")


def test_flat_prices_tie_and_trade_like_the_event_loop():
    # ties (fast == slow on flat stretches) take the exact-EMA fallback; both paths must agree on them
    closes = np.repeat([100.0, 100.0, 101.0, 101.0, 99.0, 99.0, 99.0, 100.0], 30)
    r = assert_same_run(frame(closes), config={"fast": 2, "slow": 5})
    assert len(r.trades) >= 2
    cache = ArrayCache(closes)
    backtest("ema_cross", frame(closes), config={"fast": 2, "slow": 5}, decisions="none", cache=cache)
    assert ("exact", 2) in cache._arrays and ("exact", 5) in cache._arrays


@pytest.mark.parametrize("notional", [100.0, 2500.0, 1e6])
@pytest.mark.parametrize("inst", [BTC_USDC_PERPETUAL, BTC_PERPETUAL])
def test_sizes_by_bisection_equal_the_scalar_method(inst, notional):
    # prices from 1 to 1e6 cross many rounding steps: every price is sized as amount_for_notional sizes it
    prices = np.unique(np.round(np.exp(np.random.default_rng(3).uniform(0, np.log(1e6), 20_000)), 2))
    got = sizes_for_sorted_prices(inst, notional, prices)
    np.testing.assert_array_equal(got, [inst.amount_for_notional(notional, p) for p in prices.tolist()])


def test_a_cache_gives_the_same_result_and_is_reused(month):
    cache = ArrayCache(month["close"].to_numpy())
    a = backtest("ema_cross", month, decisions="none", cache=cache)
    b = backtest("ema_cross", month, decisions="none", config={"fast": 9, "slow": 30}, cache=cache)
    assert {("fast", 9), ("fast", 21), ("fast", 30)} <= set(cache._arrays)
    pd.testing.assert_frame_equal(a.trades, backtest("ema_cross", month, vectorized=False).trades)
    pd.testing.assert_frame_equal(b.trades, backtest("ema_cross", month, config={"fast": 9, "slow": 30},
                                                     vectorized=False).trades)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    fast=st.integers(1, 12),
    slow=st.integers(1, 30),
    tick=st.sampled_from([0.0, 0.5, 1.0]),
    slippage=st.sampled_from([0.0, 0.0005]),
    taker=st.sampled_from([0.0, 0.0005]),
)
def test_random_walks_trade_for_trade(seed, n, fast, slow, tick, slippage, taker):
    rng = np.random.default_rng(seed)
    closes = 1000.0 + np.cumsum(rng.normal(0, 2, n))
    if tick:
        closes = np.round(closes / tick) * tick  # coarse ticks make equal EMAs (ties) and repeated prices common
    df = frame(closes, spread=np.round(rng.normal(0, 1, n)))
    assert_same_run(df, config={"fast": fast, "slow": slow}, slippage=slippage,
                    fees={"maker": 0.0, "taker": taker})
