"""Pure rendering of RPC answers into the control panel's HTML, and the panel's merged state."""

from __future__ import annotations

from tradebaas.notebook import widgets as render
from tradebaas.notebook.panel import PanelState

from .test_panel_fakes import strategy_row


def test_strategy_row_shows_state_uptime_trades_and_pnl() -> None:
    html = render.strategy_row_html(strategy_row(state="running"), uptime_s=125)
    assert "razor-1" in html and "BTC_USDC-PERPETUAL" in html
    assert ">running<" in html and "tb-state-running" in html
    assert "up 2m 05s" in html
    assert "2 trades" in html
    assert "+1.40 USDC" in html and "-0.25 USDC" in html


def test_strategy_row_explains_needs_attention() -> None:
    html = render.strategy_row_html(strategy_row(state="needs_attention", state_reason="unknown position 0.1"))
    assert "needs_attention" in html and "unknown position 0.1" in html


def test_strategy_row_escapes_engine_text() -> None:
    html = render.strategy_row_html(strategy_row(state_reason="<script>x</script>"))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_strategy_uptime_counts_only_while_running() -> None:
    assert render.strategy_uptime(strategy_row(state="running", uptime_s=10), 5) == 15
    assert render.strategy_uptime(strategy_row(state="stopped", uptime_s=10), 5) == 10


def test_btc_money_keeps_satoshi_precision() -> None:
    assert render.fmt_money(0.00012345, "BTC") == "+0.00012345 BTC"
    assert render.fmt_money(-3.5, "USDC") == "-3.50 USDC"


def test_durations() -> None:
    assert render.fmt_duration(5) == "5s"
    assert render.fmt_duration(3600 + 65) == "1h 01m"
    assert render.fmt_duration(2 * 86400 + 3 * 3600) == "2d 3h"
    assert render.fmt_duration(None) == "-"


def test_status_shows_engine_and_exchange_links() -> None:
    status = {"version": "0.1.0", "pid": 42, "uptime_s": 61,
              "exchange": {"name": "sim", "connected": False, "reconnects": 3, "last_error": "refused"},
              "strategies": {"total": 2, "running": 1}}
    html = render.status_html(status, "connected")
    assert "tb-connection-connected" in html and "pid 42" in html and "up 1m 01s" in html
    assert "tb-exchange-disconnected" in html and "3 reconnects" in html and "refused" in html
    assert "1/2 running" in html


def test_status_while_engine_is_away_says_reconnecting() -> None:
    assert "engine restarted/reconnecting" in render.status_html(None, "reconnecting")


def test_positions_show_protection_and_skip_closed_ones() -> None:
    html = render.positions_html([
        {"strategy_id": "razor-1", "instrument": "BTC_USDC-PERPETUAL", "direction": "long", "amount": 0.002,
         "entry_price": 60000.0, "stop_price": 59700.0, "take_price": 60390.0, "mark_price": 60100.0,
         "floating_pnl": 0.2, "currency": "USDC"},
        {"strategy_id": "razor-2", "instrument": "BTC_USDC-PERPETUAL", "direction": "short", "amount": 0},
    ])
    assert "59,700.0" in html and "60,390.0" in html and "+0.20 USDC" in html
    assert "razor-2" not in html
    assert "no open position" in render.positions_html([])


def test_decision_shows_checkpoints() -> None:
    html = render.decision_html("razor-1", {
        "ts_ms": 1_700_000_060_000, "signal": "long", "indicators": {"rsi": 28.123456, "pullback": True},
        "scores": {"long": 63, "short": 8}, "reasons": ["RSI 28.1 < 40: long +47"], "skipped": ""})
    assert "tb-signal-long" in html and "rsi <b>28.1235</b>" in html and "pullback <b>yes</b>" in html
    assert "long 63.0" in html and "RSI 28.1 &lt; 40: long +47" in html
    assert "no decision yet" in render.decision_html("razor-1", None)
    assert "skipped: warming up" in render.decision_html("x", {"signal": "none", "skipped": "warming up"})


def test_trades_newest_first_and_limited() -> None:
    trades = [{"trade_id": f"t{i}", "state": "closed", "exit_ts_ms": 1_700_000_000_000 + i * 60_000,
               "net_pnl": 1.0, "currency": "USDC"} for i in range(15)]
    html = render.trades_html(trades, limit=10)
    assert html.index("t14") < html.index("t13")
    assert "t4<" not in html and "t5<" in html
    assert "no trades yet" in render.trades_html([])


def test_sparkline_svg() -> None:
    html = render.sparkline_svg([100.0, 101.0, 99.5, 102.0], label="equity")
    assert "<svg" in html and "polyline" in html and "102.00" in html and "(+2.00)" in html
    assert "not enough points" in render.sparkline_svg([100.0])
    flat = render.sparkline_svg([5.0, 5.0])  # no division by zero on a flat curve
    assert "<svg" in flat


def test_log_tail_keeps_newest_lines() -> None:
    lines = [{"ts_ms": 1_700_000_000_000, "level": "info", "logger": "engine", "message": f"m{i}"}
             for i in range(30)]
    html = render.log_html(lines, limit=5)
    assert "m29" in html and "m25" in html and "m24" not in html


def test_kill_confirmation_spells_out_flatten() -> None:
    assert "CLOSE ALL POSITIONS" in render.kill_confirm_html(True, 2)
    assert "keep their stops" in render.kill_confirm_html(False, 2)


def test_state_merges_events_and_drops_closed_positions_and_done_orders() -> None:
    state = PanelState()
    state.set_strategies([strategy_row("a", "running")], now=0.0)
    state.apply_event("strategies", {"type": "state", "strategy": strategy_row("a", "stopped")}, now=1.0)
    assert state.strategies["a"]["state"] == "stopped"
    state.apply_event("strategy.a", {"type": "decision", "decision": {"ts_ms": 5, "signal": "short"}}, now=1.0)
    assert state.decisions["a"]["signal"] == "short"
    pos = {"strategy_id": "a", "instrument": "X", "amount": 1.0}
    state.apply_event("positions", pos, 1.0)
    assert len(state.positions) == 1
    state.apply_event("positions", {**pos, "amount": 0}, 1.0)
    assert state.positions == {}
    state.apply_event("orders", {"order_id": "o1", "state": "open"}, 1.0)
    state.apply_event("orders", {"order_id": "o1", "state": "filled"}, 1.0)
    assert state.orders == {}


def test_state_detects_an_engine_restart_from_its_identity() -> None:
    state = PanelState()
    assert not state.set_status({"pid": 1, "started_ts_ms": 10}, 0.0)
    assert not state.set_status({"pid": 1, "started_ts_ms": 10}, 1.0)
    assert state.apply_event("engine", {"type": "status", "status": {"pid": 2, "started_ts_ms": 20}}, 2.0) \
        == "restarted"


def test_uptime_keeps_counting_between_events() -> None:
    state = PanelState()
    state.set_strategies([strategy_row("a", "running", uptime_s=60)], now=100.0)
    assert state.uptime_of("a", now=130.0) == 90


def test_active_strategies_decisions_come_first() -> None:
    state = PanelState()
    state.set_strategies([strategy_row("old", "stopped"), strategy_row("live", "running")], 0.0)
    state.decisions = {"old": {"ts_ms": 9}, "live": {"ts_ms": 1}}
    assert [sid for sid, _ in state.latest_decisions(2)] == ["live", "old"]


def _run(run_id: str, status: str, queued: int, **extra: object) -> dict[str, object]:
    return {"run_id": run_id, "name": "daily", "status": status, "trigger": "schedule", "queued_ts_ms": queued,
            "finished_ts_ms": queued + 1_000, "html_path": f"/h/reports/daily/{run_id}/daily.html",
            "notebook_path": f"/h/reports/daily/{run_id}/daily.ipynb", "error": "", **extra}


def test_report_runs_show_newest_first_with_status_and_links() -> None:
    html = render.reports_html([_run("r1", "ok", 1_000), _run("r2", "failed", 2_000, error="bad parameter x")])
    assert html.index("tb-report-failed") < html.index("tb-report-ok")
    assert 'href="file:///h/reports/daily/r1/daily.html"' in html
    assert "/h/reports/daily/r2/daily.html" not in html  # a failed run has no HTML, only its kept notebook
    assert 'href="file:///h/reports/daily/r2/daily.ipynb"' in html
    assert "bad parameter x" in html


def test_no_report_runs_says_so() -> None:
    assert "no report runs yet" in render.reports_html([])


def test_pushed_report_runs_replace_their_earlier_status() -> None:
    state = PanelState()
    state.set_reports([_run("r1", "running", 1_000)])
    state.apply_event("reports", _run("r1", "ok", 1_000), now=0.0)
    assert [r["status"] for r in state.reports.values()] == ["ok"]
