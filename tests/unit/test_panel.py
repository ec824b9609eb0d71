"""ControlPanel against a fake engine client: snapshot on start, pushed updates, actions, reconnects."""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator

import pytest

from tradebaas.notebook.panel import GLOBAL_CHANNELS, ControlPanel
from tradebaas.rpc.protocol import INVALID_PARAMS, METHOD_NOT_FOUND, RpcError

from .test_panel_fakes import FakeEngine, strategy_row, wait_for


@pytest.fixture
def eng() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def panel(eng: FakeEngine) -> Iterator[ControlPanel]:
    p = ControlPanel(eng, max_updates_per_second=20, ping_every_s=0.05)
    wait_for(lambda: p.state.connection == "connected" and p.form is not None, what="first snapshot")
    yield p
    p.close()


def test_construction_does_not_wait_for_the_engine() -> None:
    eng = FakeEngine()
    gate = threading.Event()
    real_call = eng.call

    def slow_call(method: str, **params: object) -> object:
        gate.wait(5.0)
        return real_call(method, **params)

    eng.call = slow_call  # type: ignore[method-assign]
    panel = ControlPanel(eng)  # must return while the engine has not answered anything
    try:
        assert "connecting" in panel.status_html.value
    finally:
        gate.set()
        panel.close()


def test_first_snapshot_fills_every_section(panel: ControlPanel, eng: FakeEngine) -> None:
    assert set(GLOBAL_CHANNELS) | {"strategy.razor-1"} <= set(eng.subscribers)
    wait_for(lambda: "razor-1" in panel.row("razor-1").html.value if "razor-1" in panel._rows else False,
             what="strategy row")
    assert panel.strategy_rows.children[0] is panel.row("razor-1").box
    assert "tb-connection-connected" in panel.status_html.value
    assert "ema_fast" in panel.decision_html.value
    assert "t1" in panel.trades_html.value
    assert "<svg" in panel.equity_html.value
    stop = panel.row("razor-1").stop
    assert stop.description == "Stop" and not stop.disabled


def test_pushed_events_update_the_panel(panel: ControlPanel, eng: FakeEngine) -> None:
    eng.push("positions", {"strategy_id": "razor-1", "trade_id": "t2", "instrument": "BTC_USDC-PERPETUAL",
                           "direction": "short", "amount": 0.002, "entry_price": 61000.0, "stop_price": 61305.0,
                           "take_price": 60603.5, "mark_price": 60900.0, "floating_pnl": 0.2, "currency": "USDC"})
    eng.push("strategy.razor-1", {"type": "decision", "decision": {
        "ts_ms": 1_700_000_120_000, "signal": "short", "indicators": {"rsi": 71.0}, "scores": {"short": 66},
        "reasons": ["RSI 71 > 60"], "skipped": ""}})
    eng.push("log", {"ts_ms": 1_700_000_120_000, "level": "info", "logger": "runner", "message": "entry sent"})
    eng.push("trades", {"trade_id": "t2", "strategy_id": "razor-1", "state": "open", "direction": "short",
                        "entry_ts_ms": 1_700_000_120_000})
    wait_for(lambda: "61,305.0" in panel.positions_html.value, what="position")
    wait_for(lambda: "RSI 71 &gt; 60" in panel.decision_html.value, what="decision")
    wait_for(lambda: "entry sent" in panel.log_html.value, what="log line")
    wait_for(lambda: "t2" in panel.trades_html.value, what="open trade")
    eng.push("positions", {"strategy_id": "razor-1", "instrument": "BTC_USDC-PERPETUAL", "amount": 0})
    wait_for(lambda: "no open position" in panel.positions_html.value, what="closed position")


def test_a_closed_trade_refreshes_the_equity_curve(panel: ControlPanel, eng: FakeEngine) -> None:
    before = len(eng.called("equity.history"))
    eng.push("trades", {"trade_id": "t3", "state": "closed", "exit_ts_ms": 1_700_000_400_000, "net_pnl": 1.0})
    wait_for(lambda: len(eng.called("equity.history")) > before, what="equity refetch")


def test_a_burst_of_events_is_coalesced(eng: FakeEngine) -> None:
    panel = ControlPanel(eng, max_updates_per_second=4, ping_every_s=60)
    try:
        wait_for(lambda: panel.state.connection == "connected", what="snapshot")
        values: list[str] = []
        panel.log_html.observe(lambda change: values.append(change["new"]), names="value")
        callbacks = eng.subscribers["log"]
        for i in range(500):
            for cb in callbacks:
                cb({"ts_ms": 1, "level": "info", "logger": "x", "message": f"line {i}"})
        wait_for(lambda: values and "line 499" in values[-1], what="last line")
        assert len(values) <= 3
    finally:
        panel.close()


def test_start_from_the_form_calls_the_engine_with_the_changed_config(panel: ControlPanel, eng: FakeEngine) -> None:
    assert panel.start("razor", rsiOversold=45, rsiOverbought=55) is True
    wait_for(lambda: eng.called("strategy.start"), what="strategy.start")
    assert eng.called("strategy.start")[0] == {"name": "razor", "instrument": "BTC_USDC-PERPETUAL",
                                               "config": {"rsiOversold": 45.0, "rsiOverbought": 55.0}}
    assert panel.form is not None
    wait_for(lambda: "started razor-2" in panel.form.message.value, what="confirmation")
    wait_for(lambda: "razor-2" in panel.state.strategies, what="new row")
    wait_for(lambda: "strategy.razor-2" in eng.subscribers, what="per-strategy channel")


def test_invalid_form_values_never_reach_the_engine(panel: ControlPanel, eng: FakeEngine) -> None:
    assert panel.start("razor", rsiOversold=400) is False
    assert panel.form is not None
    assert "out of range (allowed: a number in [0, 100])" in panel.form.errors["rsiOversold"].value
    assert eng.called("strategy.start") == []


def test_the_form_refuses_exactly_what_the_engine_refuses(panel: ControlPanel, eng: FakeEngine) -> None:
    """The same value, once through the form and once straight to the (fake, real-rules) engine: same words."""
    assert panel.start("razor", maxDailyTrades="2.5") is False
    assert panel.form is not None
    shown = panel.form.errors["maxDailyTrades"].value
    with pytest.raises(RpcError) as refused:
        eng.call("strategy.start", name="razor", config={"maxDailyTrades": "2.5"})
    assert refused.value.code == INVALID_PARAMS
    assert html.escape(refused.value.message) in shown


def test_the_engines_invalid_params_message_is_shown(panel: ControlPanel, eng: FakeEngine) -> None:
    eng.errors["strategy.start"] = RpcError(INVALID_PARAMS,
                                                 "config razor.rsiOversold=45: must be below rsiOverbought")
    panel.start("razor", rsiOversold=45)
    assert panel.form is not None
    wait_for(lambda: "must be below rsiOverbought" in panel.form.message.value, what="engine message")
    assert "must be below" in panel.form.errors["rsiOversold"].value


def test_stop_button_stops_that_strategy(panel: ControlPanel, eng: FakeEngine) -> None:
    wait_for(lambda: panel.strategy_rows.children, what="row")
    panel.row("razor-1").stop.click()
    wait_for(lambda: eng.called("strategy.stop"), what="strategy.stop")
    assert eng.called("strategy.stop")[0] == {"id": "razor-1", "flatten": False}
    wait_for(lambda: "tb-state-stopped" in panel.row("razor-1").html.value, what="stopped row")
    wait_for(lambda: panel.row("razor-1").stop.disabled, what="disabled Stop")
    assert panel.row("razor-1").edit.disabled  # a stopped strategy has no live parameters to change


def test_kill_needs_confirmation(panel: ControlPanel, eng: FakeEngine) -> None:
    panel.flatten.value = True
    panel.kill_button.click()
    assert eng.called("risk.kill") == []
    assert panel.kill_confirm_box.layout.display == "" and "CLOSE ALL POSITIONS" in panel.kill_confirm_text.value
    panel.kill_cancel_button.click()
    assert panel.kill_confirm_box.layout.display == "none"
    panel.kill_button.click()
    panel.kill_confirm_button.click()
    wait_for(lambda: eng.called("risk.kill"), what="risk.kill")
    assert eng.called("risk.kill") == [{"flatten": True}]
    wait_for(lambda: "stopped 1, cancelled 2" in panel.kill_result.value, what="kill result")


def test_engine_restart_shows_reconnecting_then_reloads_state(panel: ControlPanel, eng: FakeEngine) -> None:
    eng.up = False
    wait_for(lambda: "engine restarted/reconnecting" in panel.status_html.value, what="reconnecting banner")
    assert panel.kill_button.disabled
    eng.pid = 222
    eng.strategies = [strategy_row("razor-1", "running"), strategy_row("razor-9", "running")]
    eng.up = True
    wait_for(lambda: "tb-connection-connected" in panel.status_html.value, what="reconnected")
    wait_for(lambda: "razor-9" in panel.state.strategies, what="state reloaded")
    assert "engine restarted" in panel.status_html.value and "pid 222" in panel.status_html.value
    # the same render enables Kill a few assignments after the status line: wait for it, do not race it
    wait_for(lambda: not panel.kill_button.disabled, what="Kill enabled again")


def test_a_restart_is_announced_even_when_the_first_resync_fails_half_way(panel: ControlPanel,
                                                                         eng: FakeEngine) -> None:
    """The new engine answers engine.status, then fails a later call of the same resync (it is still starting): the
    next resync, which succeeds, must still say that the engine restarted."""
    eng.up = False
    wait_for(lambda: "engine restarted/reconnecting" in panel.status_html.value, what="reconnecting banner")
    eng.pid = 444
    real_call = eng.call
    failed = threading.Event()

    def starting_call(method: str, **params: object) -> object:
        if method == "strategy.list" and not failed.is_set():
            failed.set()
            raise ConnectionError("the engine is still starting")
        return real_call(method, **params)

    eng.call = starting_call  # type: ignore[method-assign]
    eng.up = True
    wait_for(failed.is_set, what="a resync that failed after engine.status")
    wait_for(lambda: "tb-connection-connected" in panel.status_html.value and "pid 444" in panel.status_html.value,
             what="reconnected to the new engine")
    assert "engine restarted — state reloaded" in panel.status_html.value


def test_a_restart_pushed_as_an_event_is_announced_by_the_resync_it_causes(panel: ControlPanel,
                                                                          eng: FakeEngine) -> None:
    eng.pid = 555
    eng.push("engine", {"type": "status", "status": eng.status()})
    wait_for(lambda: "pid 555" in panel.status_html.value and "engine restarted" in panel.status_html.value,
             what="the restart announced")


def test_a_second_resync_keeps_the_restart_announced(panel: ControlPanel, eng: FakeEngine) -> None:
    """After a restart both the reconnect and the ping may ask for a resync: the second one must not hide the
    announcement (the browser test once missed it that way), while a note about a lost link is cleared."""
    eng.up = False
    wait_for(lambda: "engine restarted/reconnecting" in panel.status_html.value, what="reconnecting banner")
    eng.pid = 666
    eng.up = True
    wait_for(lambda: "pid 666" in panel.status_html.value and "engine restarted — state reloaded" in
             panel.status_html.value, what="the restart announced")
    before = len(eng.called("engine.status"))
    panel._on_reconnected()  # what the client's reconnect hook calls
    wait_for(lambda: len(eng.called("engine.status")) > before, what="a second resync")
    wait_for(lambda: "tb-connection-connected" in panel.status_html.value, what="connected")
    assert "engine restarted — state reloaded" in panel.status_html.value
    assert "connection" not in panel.state.note


def test_engine_event_from_a_new_process_triggers_a_resync(panel: ControlPanel, eng: FakeEngine) -> None:
    before = len(eng.called("strategy.list"))
    eng.pid = 333
    eng.push("engine", {"type": "status", "status": eng.status()})
    wait_for(lambda: len(eng.called("strategy.list")) > before, what="resync")


def test_missing_live_loop_methods_do_not_break_the_panel(eng: FakeEngine) -> None:
    for method in ("positions.list", "orders.list", "trades.list", "equity.history"):
        eng.errors[method] = RpcError(METHOD_NOT_FOUND, f"method not found: {method}")
    panel = ControlPanel(eng)
    try:
        wait_for(lambda: panel.state.connection == "connected", what="connected despite missing methods")
        assert "no trades yet" in panel.trades_html.value
    finally:
        panel.close()


def test_close_stops_updates(eng: FakeEngine) -> None:
    panel = ControlPanel(eng)
    wait_for(lambda: panel.state.connection == "connected", what="snapshot")
    panel.close()
    assert not panel._pump.alive
