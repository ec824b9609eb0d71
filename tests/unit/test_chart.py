"""The one market chart (``tradebaas.analytics.chart``): candles, trade markers and the open position's lines from
plain data, live updates that touch only what changed, and the same picture for a backtest result."""

from __future__ import annotations

import pytest

from tradebaas.analytics.chart import (
    CANDLES,
    ENTRY_LINE,
    EXIT,
    LONG_ENTRY,
    SHORT_ENTRY,
    STOP_LINE,
    TAKE_LINE,
    TRACES,
    ChartModel,
    figure,
    update_figure,
    utc_text,
)

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
M = 60_000


def bars(n: int, start: int = T0, price: float = 100.0) -> list[dict[str, float]]:
    return [{"ts_ms": start + i * M, "open": price + i, "high": price + i + 2, "low": price + i - 2,
             "close": price + i + 1, "volume": 1.0} for i in range(n)]


def position(stop: float = 95.0, amount: float = 0.01) -> dict[str, object]:
    return {"strategy_id": "s1", "trade_id": "t2", "instrument": "X", "direction": "long", "amount": amount,
            "entry_price": 103.0, "stop_price": stop, "take_price": 110.0, "mark_price": 104.0,
            "floating_pnl": 0.01, "currency": "USDC", "opened_ts_ms": T0 + 3 * M}


def test_candles_markers_and_lines_from_plain_rpc_data() -> None:
    model = ChartModel("BTC_USDC-PERPETUAL")
    model.set_candles(bars(5))
    model.set_trades([
        {"trade_id": "t1", "direction": "short", "entry_ts_ms": T0 + M, "entry_price": 101.5, "exit_ts_ms": T0 + 2 * M,
         "exit_price": 100.5, "net_pnl": 0.4, "exit_reason": "tp", "state": "closed"},
        {"trade_id": "t2", "direction": "long", "entry_ts_ms": T0 + 3 * M, "entry_price": 103.0, "exit_ts_ms": None,
         "exit_price": None, "net_pnl": None, "state": "open"},
        {"trade_id": "t0", "direction": "long", "entry_ts_ms": T0 - 10 * M, "entry_price": 90.0},  # before the chart
    ])
    model.set_position(position())
    traces = model.traces()
    assert [t["name"].split(" ")[0] for t in traces] == ["candles", "long", "short", "exit", "entry", "stop", "take-profit"]
    assert traces[CANDLES]["x"][0] == "2026-01-01 00:00:00" and traces[CANDLES]["close"] == [101, 102, 103, 104, 105]
    assert traces[LONG_ENTRY]["y"] == [103.0] and traces[SHORT_ENTRY]["y"] == [101.5]
    assert traces[EXIT]["y"] == [100.5] and traces[EXIT]["marker"]["color"] == ["#2ca02c"]  # a win
    # the lines run from the position's opening to the end of the newest candle
    assert traces[ENTRY_LINE]["x"] == [utc_text(T0 + 3 * M), utc_text(T0 + 5 * M)]
    assert traces[STOP_LINE]["y"] == [95.0, 95.0] and traces[TAKE_LINE]["y"] == [110.0, 110.0]
    assert traces[STOP_LINE]["name"] == "stop 95.0"


def test_flat_means_no_lines() -> None:
    model = ChartModel()
    model.set_candles(bars(3))
    model.set_position(position())
    model.set_position(position(amount=0.0))  # the positions channel says amount 0 when it closed
    assert all(model.trace(i)["x"] == [] for i in (ENTRY_LINE, STOP_LINE, TAKE_LINE))


def test_ticks_move_the_forming_candle_and_a_closed_candle_replaces_it() -> None:
    model = ChartModel(max_candles=3)
    model.set_candles(bars(3))
    model.take_dirty()
    model.on_tick(T0 + 3 * M + 5_000, 200.0)
    model.on_tick(T0 + 3 * M + 9_000, 190.0)
    assert model.candles[T0 + 3 * M] == (200.0, 200.0, 190.0, 190.0)
    assert len(model.candles) == 3 and min(model.candles) == T0 + M  # bounded: the oldest left
    assert CANDLES in model.take_dirty()
    model.on_tick(T0 + 2 * M, 500.0)  # older than the newest bar: ignored
    model.on_tick(T0 + 3 * M + 10_000, 195.0)
    model.on_tick(T0 + 3 * M + 11_000, 195.0)  # the same price again changes nothing
    model.take_dirty()
    model.on_tick(T0 + 3 * M + 12_000, 195.0)
    assert model.take_dirty() == set()
    model.add_candle({"ts_ms": T0 + 3 * M, "open": 199, "high": 201, "low": 189, "close": 194})
    assert model.candles[T0 + 3 * M] == (199, 201, 189, 194)


def test_only_changed_traces_are_dirty_and_a_moved_stop_moves_its_line() -> None:
    model = ChartModel()
    model.set_candles(bars(5))
    model.set_position(position())
    assert model.take_dirty() == set(range(len(TRACES)))
    model.set_position(position())  # the same again: nothing to redraw
    assert model.take_dirty() == set()
    model.set_position(position(stop=103.1))  # break-even moved the stop
    assert model.take_dirty() == {ENTRY_LINE, STOP_LINE, TAKE_LINE}
    assert model.trace(STOP_LINE)["y"] == [103.1, 103.1]
    model.update_trade({"trade_id": "t9", "direction": "long", "entry_ts_ms": T0 + 4 * M, "entry_price": 104.0})
    assert model.take_dirty() == {LONG_ENTRY, SHORT_ENTRY, EXIT}


def test_a_live_figure_gets_one_batched_update_with_only_the_changed_traces() -> None:
    model = ChartModel("X")
    model.set_candles(bars(5))
    fig = figure(model, widget=True)
    assert [t.name for t in fig.data][:4] == ["candles", "long entry", "short entry", "exit"]
    assert update_figure(fig, model) == 0  # nothing changed since the figure was built
    model.set_position(position())
    assert update_figure(fig, model) == 3
    assert list(fig.data[STOP_LINE].y) == [95.0, 95.0]
    model.on_tick(T0 + 5 * M + 1, 120.0)
    assert update_figure(fig, model) == 4  # the candles and the lines that end at the newest candle
    assert list(fig.data[CANDLES].close)[-1] == 120.0


def test_a_backtest_result_plots_the_same_chart() -> None:
    from tradebaas.backtest.backtester import backtest
    from tradebaas.backtest.data import load_default

    result = backtest("razor", load_default().iloc[:3000], config={"rsiOversold": 48, "rsiOverbought": 52, "cooldownMinutes": 0,
                                                    "stopLossPercent": 0.2, "takeProfitPercent": 0.2})
    fig = result.plot(max_candles=500)
    assert [t.name.split(" ")[0] for t in fig.data][:4] == ["candles", "long", "short", "exit"]
    assert len(fig.data[CANDLES].x) == 500
    shown = len(fig.data[LONG_ENTRY].x) + len(fig.data[SHORT_ENTRY].x)
    in_window = (result.trades["entry_time"] >= result.candles.index[-500]).sum()
    assert shown >= in_window > 0
    equity_fig, trades_fig = result.plot(static=True)  # the matplotlib figures, for reports
    assert equity_fig.axes and trades_fig.axes


def test_a_bad_trace_index_is_refused() -> None:
    with pytest.raises(IndexError):
        ChartModel().trace(99)
