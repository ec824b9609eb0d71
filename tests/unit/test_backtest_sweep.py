"""Sweeps: one row per grid point, the same results on a local pool, in-process and on a Dask cluster."""

from __future__ import annotations

import pandas as pd
import pytest

from tradebaas.backtest.backtester import BacktestError, backtest
from tradebaas.backtest.data import load_default
from tradebaas.backtest.sweep import grid_points, sweep
from tradebaas.strategies.params import ConfigError

GRID = {"fast": [5, 9], "slow": [21, 30]}


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return load_default().iloc[:5000]


def test_grid_points_vary_the_first_key_slowest():
    assert grid_points({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]


def test_sweep_rows_equal_single_backtests(data):
    out = sweep("ema_cross", data, GRID, processes=2, progress=False)
    assert list(out[["fast", "slow"]].itertuples(index=False, name=None)) == [(5, 21), (5, 30), (9, 21), (9, 30)]
    single = backtest("ema_cross", data, config={"fast": 9, "slow": 30}).stats
    assert out.iloc[3]["net_pnl"] == single["net_pnl"] and out.iloc[3]["trades"] == single["trades"]


def test_local_pool_and_in_process_give_identical_results(data):
    a = sweep("ema_cross", data, GRID, processes=2, progress=False)
    b = sweep("ema_cross", data, GRID, processes=1, progress=False)
    pd.testing.assert_frame_equal(a, b)


def test_dask_client_gives_identical_results(data):
    import distributed  # a pinned dependency: its absence must fail the test, not skip it
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        d = sweep("ema_cross", data, GRID, client=client, progress=False)
        # sweeps one after the other on the same data and client (a notebook does this): each scatters the data
        # under a key of its own, so none finds the key the previous one is releasing ("lost dependencies")
        razor = [sweep("razor", data, {"stopLossPercent": [0.3, 0.6]}, client=client, progress=False)
                 for _ in range(3)]
    pd.testing.assert_frame_equal(d, sweep("ema_cross", data, GRID, processes=1, progress=False))
    for r in razor:
        pd.testing.assert_frame_equal(r, sweep("razor", data, {"stopLossPercent": [0.3, 0.6]}, processes=1,
                                               progress=False))


def test_a_bad_grid_value_fails_before_any_work(data):
    with pytest.raises(ConfigError, match="fast"):
        sweep("ema_cross", data, {"fast": [5, -1]}, progress=False)


def test_a_bad_intrabar_mode_fails_before_any_work(data):
    with pytest.raises(BacktestError, match="intrabar must be 'path' or 'pessimistic'"):
        sweep("ema_cross", data, GRID, progress=False, intrabar="optimistic")


def test_intrabar_reaches_every_backtest_of_a_sweep(data):
    grid = {"stopLossPercent": [0.1], "takeProfitPercent": [0.1, 0.12]}
    for mode in ("path", "pessimistic"):
        out = sweep("razor", data, grid, processes=1, progress=False, intrabar=mode)
        single = backtest("razor", data, config={"stopLossPercent": 0.1, "takeProfitPercent": 0.12},
                          intrabar=mode).stats
        assert out.iloc[1]["net_pnl"] == single["net_pnl"] and out.iloc[1]["trades"] == single["trades"]
    path = sweep("razor", data, grid, processes=1, progress=False)
    pessimistic = sweep("razor", data, grid, processes=1, progress=False, intrabar="pessimistic")
    assert (path["net_pnl"] != pessimistic["net_pnl"]).all()  # the data has candles where both lie inside
