"""The cockpit parts of the ControlPanel (issue 14a) against the fake engine: numbers that move with the pushed
positions, Stop that asks what to do with an open position, the live chart (history on attach, then pushed
candles, ticks, trades and positions, redrawn a bounded number of times), and the equity curve from the first
trade on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tradebaas.analytics.chart import CANDLES, LONG_ENTRY, SHORT_ENTRY, STOP_LINE
from tradebaas.notebook.panel import ControlPanel

from .test_panel_fakes import FakeEngine, wait_for

INSTRUMENT = "BTC_USDC-PERPETUAL"


def position(floating: float, stop: float = 59_700.0, amount: float = 0.002) -> dict[str, Any]:
    return {"strategy_id": "razor-1", "trade_id": "t2", "instrument": INSTRUMENT, "direction": "long",
            "amount": amount, "entry_price": 60_000.0, "stop_price": stop, "take_price": 60_390.0,
            "mark_price": 60_000.0 + floating / 0.002, "floating_pnl": floating, "currency": "USDC",
            "opened_ts_ms": 1_699_999_940_000}


@pytest.fixture
def eng() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def panel(eng: FakeEngine) -> Iterator[ControlPanel]:
    p = ControlPanel(eng, max_updates_per_second=20, ping_every_s=0.05)
    wait_for(lambda: p.state.connection == "connected" and "razor-1" in p._rows, what="first snapshot")
    yield p
    p.close()


def test_pushed_marks_move_the_floating_pnl_of_the_position_and_of_its_strategy(panel: ControlPanel,
                                                                               eng: FakeEngine) -> None:
    eng.push("positions", position(0.2))
    wait_for(lambda: "+0.20 USDC" in panel.row("razor-1").html.value, what="the strategy's floating PnL")
    assert "+0.20 USDC" in panel.positions_html.value and "60,100.0" in panel.positions_html.value  # the mark
    eng.push("positions", position(-1.5))
    wait_for(lambda: "-1.50 USDC" in panel.row("razor-1").html.value, what="the floating PnL moving")
    assert "-1.50 USDC" in panel.positions_html.value
    assert "mark 59,250.0" in panel.row("razor-1").html.value
    eng.push("positions", {**position(0.0), "amount": 0.0})  # closed
    wait_for(lambda: "flat" in panel.row("razor-1").html.value, what="the row flat again")
    assert "floating <span style=\"color:inherit\">+0.00 USDC" in panel.row("razor-1").html.value


def test_stop_with_an_open_position_asks_leave_with_brackets_or_flatten(panel: ControlPanel,
                                                                       eng: FakeEngine) -> None:
    eng.push("positions", position(0.2))
    wait_for(lambda: panel.state.position_of("razor-1"), what="the position")
    row = panel.row("razor-1")
    keep, flatten, cancel = row.stop_box.children[1:]
    row.stop.click()
    assert row.stop_box.layout.display == "" and "holds long 0.0020" in row.stop_text.value
    assert eng.called("strategy.stop") == []  # nothing happens before an answer
    cancel.click()
    assert row.stop_box.layout.display == "none" and eng.called("strategy.stop") == []
    row.stop.click()
    flatten.click()
    wait_for(lambda: eng.called("strategy.stop"), what="strategy.stop")
    assert eng.called("strategy.stop") == [{"id": "razor-1", "flatten": True}]
    assert row.stop_box.layout.display == "none"
    assert keep.description == "Leave it with its brackets"


def test_stop_leaving_the_position_keeps_its_brackets(panel: ControlPanel, eng: FakeEngine) -> None:
    eng.push("positions", position(0.2))
    wait_for(lambda: panel.state.position_of("razor-1"), what="the position")
    row = panel.row("razor-1")
    row.stop.click()
    row.stop_box.children[1].click()
    wait_for(lambda: eng.called("strategy.stop"), what="strategy.stop")
    assert eng.called("strategy.stop") == [{"id": "razor-1", "flatten": False}]


def test_the_chart_shows_the_strategys_history_then_follows_pushed_events(panel: ControlPanel,
                                                                          eng: FakeEngine) -> None:
    chart = panel.chart
    wait_for(lambda: chart.strategy_id == "razor-1" and len(chart.model.candles) == 10, what="history on attach")
    assert eng.called("market.candles")[-1]["instrument"] == INSTRUMENT
    assert {f"candles.{INSTRUMENT}", f"ticker.{INSTRUMENT}"} <= set(eng.subscribers)
    wait_for(lambda: len(chart.figure.data[CANDLES].x) == 10, what="the candles drawn")
    assert list(chart.figure.data[LONG_ENTRY].y) == [60_000.0]  # t1's entry, from trades.list

    last = max(chart.model.candles)
    eng.push(f"candles.{INSTRUMENT}", {"instrument": INSTRUMENT, "ts_ms": last + 60_000, "open": 1.0, "high": 2.0,
                                       "low": 0.5, "close": 1.5, "volume": 1.0})
    wait_for(lambda: len(chart.figure.data[CANDLES].x) == 11, what="a closed candle drawn")
    eng.push(f"ticker.{INSTRUMENT}", {"instrument": INSTRUMENT, "ts_ms": last + 120_000 + 5_000,
                                      "last_price": 3.0, "mark_price": 3.1})
    wait_for(lambda: list(chart.figure.data[CANDLES].close)[-1] == 3.0, what="the forming candle from a tick")
    eng.push("positions", position(0.2))
    wait_for(lambda: list(chart.figure.data[STOP_LINE].y) == [59_700.0, 59_700.0], what="the stop line")
    eng.push("positions", position(0.4, stop=60_006.0))  # break-even moved the stop
    wait_for(lambda: list(chart.figure.data[STOP_LINE].y) == [60_006.0, 60_006.0], what="the stop line moved")
    eng.push("trades", {"trade_id": "t2", "strategy_id": "razor-1", "direction": "short", "state": "open",
                        "entry_ts_ms": last + 60_000, "entry_price": 1.2})
    wait_for(lambda: list(chart.figure.data[SHORT_ENTRY].y) == [1.2], what="a new entry marker")


def test_a_storm_of_ticks_costs_a_few_redraws(eng: FakeEngine) -> None:
    panel = ControlPanel(eng, max_updates_per_second=4, ping_every_s=60)
    try:
        chart = panel.chart
        wait_for(lambda: len(chart.figure.data[CANDLES].x) == 10, what="history drawn")
        before = chart.redraws
        last = max(chart.model.candles)
        for i in range(300):
            eng.push(f"ticker.{INSTRUMENT}", {"instrument": INSTRUMENT, "ts_ms": last + 60_000 + i,
                                              "last_price": 100.0 + i, "mark_price": 100.0 + i})
        wait_for(lambda: list(chart.figure.data[CANDLES].close)[-1] == 399.0, what="the last tick drawn")
        assert chart.redraws - before <= 4
    finally:
        panel.close()


def test_choosing_another_strategy_charts_its_instrument(eng: FakeEngine) -> None:
    from .test_panel_fakes import strategy_row

    eng.strategies.append(strategy_row("razor-7", "stopped", instrument="BTC-PERPETUAL", created_ts_ms=1))
    panel = ControlPanel(eng, max_updates_per_second=20, ping_every_s=0.05)
    try:
        chart = panel.chart
        wait_for(lambda: chart.strategy_id == "razor-1", what="the running strategy charted first")
        assert [v for _label, v in chart.choice.options] == ["razor-1", "razor-7"]
        chart.choice.value = "razor-7"
        wait_for(lambda: chart.instrument == "BTC-PERPETUAL", what="the other instrument")
        wait_for(lambda: "ticker.BTC-PERPETUAL" in panel._subscribed, what="its market channels")
        assert f"ticker.{INSTRUMENT}" not in panel._subscribed
    finally:
        panel.close()


def test_the_equity_curve_starts_with_the_first_closed_trade(eng: FakeEngine) -> None:
    eng_answer = eng._answer

    def one_trade(method: str, params: dict[str, Any]) -> Any:
        if method == "equity.history":
            return [{"ts_ms": 1_700_000_300_000, "equity": 0.36, "currency": "USDC"}]
        return eng_answer(method, params)

    eng._answer = one_trade  # type: ignore[method-assign]
    panel = ControlPanel(eng, max_updates_per_second=20)
    try:
        wait_for(lambda: "<svg" in panel.equity_html.value, what="a curve after one trade")
        assert "0.36" in panel.equity_html.value
    finally:
        panel.close()
