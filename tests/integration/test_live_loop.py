"""The live loop end to end: real ``tradebaas sim`` and ``tradebaas engine`` processes, an accelerated market and
Razor trading on real signals (issue 4's required integration tests).

Every test has its own TRADEBAAS_HOME (the simulator and the engine share it, so ``--exchange sim`` finds the
simulator through ``sim/sim.json``) and free ports. Nothing sleeps to synchronise: each step waits for the
condition it needs (``wait_for``) with a timeout. The exchange side is always checked on the simulator itself,
over its HTTP API with the engine's own paper key, never only through the engine's answers.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import PYTHON, cli_env, wait_for
from tests.integration.conftest import EngineProc, SimProc
from tradebaas.home import Home
from tradebaas.rpc.client import EngineClient
from tradebaas.rpc.protocol import RpcError

pytestmark = pytest.mark.integration

INSTRUMENT = "BTC_USDC-PERPETUAL"
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS

#: Razor tuned to trade often on the replayed Bitstamp data, with tight brackets: trades open and close within a
#: few simulated minutes.
RAZOR_FAST: dict[str, Any] = {"rsiOversold": 48, "rsiOverbought": 52, "stopLossPercent": 0.05,
                              "takeProfitPercent": 0.05, "cooldownMinutes": 0}
#: Razor that enters soon but whose position stays open for a while (wide brackets, no break-even edit).
RAZOR_HOLD: dict[str, Any] = {"rsiOversold": 48, "rsiOverbought": 52, "stopLossPercent": 1.5,
                              "takeProfitPercent": 1.5, "breakEvenEnabled": False}


# ------------------------------------------------------------------------------------------------------ helpers


def start_razor(c: EngineClient, config: dict[str, Any], instrument: str | None = None) -> dict[str, Any]:
    info = c.call("strategy.start", name="razor", config=config, **({"instrument": instrument} if instrument else {}))
    # running once the engine's exchange link is up (under load the engine may still be connecting)
    return dict(wait_for(lambda: (i := c.call("strategy.get", id=info["id"]))["state"] == "running" and i,
                         timeout=60, what="razor running"))


def trades_of(c: EngineClient, sid: str) -> list[dict[str, Any]]:
    return list(c.call("trades.list", strategy=sid))


def open_position(c: EngineClient, sid: str) -> dict[str, Any] | None:
    return next((p for p in c.call("positions.list") if p["strategy_id"] == sid), None)


def orders_by_label(sim: SimProc, instrument: str = INSTRUMENT) -> dict[str, dict[str, Any]]:
    return {o["label"]: o for o in sim.open_orders(instrument) if o.get("label")}


def our_fills(sim: SimProc, sid: str, instrument: str = INSTRUMENT) -> list[dict[str, Any]]:
    """The simulator's fills for orders labelled by strategy ``sid``."""
    return [t for t in sim.user_trades(instrument) if str(t.get("label", "")).startswith(f"tb:{sid}:")]


def trade_id_of(label: str) -> str:
    return label.split(":")[2]


def journal_fills(home: Home, sid: str) -> list[dict[str, Any]]:
    """The journal's fills of ``sid`` (read-only SQLite connection; the engine may be writing)."""
    conn = sqlite3.connect(f"file:{home.root / 'journal.sqlite'}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM fills WHERE strategy_id = ? ORDER BY ts_ms, trade_id", (sid,)).fetchall()
        return [dict(r) for r in rows]
    finally:
        conn.close()


def status(c: EngineClient) -> dict[str, Any]:
    return dict(c.call("engine.status")["exchange"])


def resumed(eng: EngineProc, sid: str) -> EngineClient:
    """A client of a (re)started engine, once it has reconciled and ``sid`` is running again."""
    c = eng.client()

    def ready() -> bool:
        ex = status(c)
        return ex["connected"] and ex["reconciliations"] >= 1 and c.call("strategy.get", id=sid)["state"] == "running"

    wait_for(ready, timeout=30, what=f"{sid} running again after the engine's reconciliation")
    return c


def position_opened(c: EngineClient, sim: SimProc, sid: str, timeout: float = 60) -> dict[str, Any]:
    """Wait until ``sid`` holds a protected position (stop and take-profit live on the exchange)."""

    def protected() -> dict[str, Any] | None:
        pos = open_position(c, sid)
        if pos is None or pos["stop_price"] is None:
            return None
        labels = orders_by_label(sim)
        tid = pos["trade_id"]
        return pos if f"tb:{sid}:{tid}:sl" in labels and f"tb:{sid}:{tid}:tp" in labels else None

    return wait_for(protected, timeout=timeout, what=f"a protected position of {sid}")


def wait_sim_minutes(sim: SimProc, minutes: float, timeout: float = 60) -> None:
    target = sim.now_ms() + int(minutes * MINUTE_MS)
    wait_for(lambda: sim.now_ms() >= target, timeout=timeout, what=f"{minutes} simulated minutes")


# --------------------------------------------------------------------------------------------------------- tests


def test_razor_started_once_keeps_trading_for_an_hour_with_no_client_and_a_new_client_sees_it_all(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=600)
    eng = engine_proc(exchange="sim")
    script = (
        "import json, sys, tradebaas\n"
        "c = tradebaas.connect()\n"
        "c.call('subscribe', channels=['strategies', 'trades', 'orders', 'positions'])\n"
        "s = c.call('strategy.start', name='razor', config=json.loads(sys.argv[1]))\n"
        "print(json.dumps({'id': s['id'], 'state': s['state'], 'started_ts_ms': s['started_ts_ms']}), flush=True)\n"
        "sys.stdin.read()\n"  # stay connected until killed
    )
    client = subprocess.Popen([PYTHON, "-c", script, json.dumps(RAZOR_FAST)], env=cli_env(tb_home),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        line = client.stdout.readline()
        assert line, client.stderr.read() if client.stderr else ""
        started = json.loads(line)
        assert started["state"] == "running"
        sim_start = sim.now_ms()
    finally:
        client.kill()  # SIGKILL: no goodbye to the engine
        client.wait(10)
    sid = started["id"]

    # Nobody is attached for 65 simulated minutes (the simulator's clock is polled over its own HTTP API).
    wait_for(lambda: sim.now_ms() >= sim_start + 65 * MINUTE_MS, timeout=40, what="65 simulated minutes")

    c = eng.client()
    assert c.call("engine.status")["clients"] == 1  # only us: the killed client is gone
    info = c.call("strategy.get", id=sid)
    assert info["state"] == "running" and info["desired_state"] == "running"
    assert info["started_ts_ms"] == started["started_ts_ms"]
    assert info["decisions"] >= 60
    assert info["last_decision"] is not None and info["last_decision"]["ts_ms"] >= sim_start + 60 * MINUTE_MS
    exchange_trade_ids = {trade_id_of(f["label"]) for f in our_fills(sim, sid)}  # exchange first, journal second
    journal = trades_of(c, sid)
    assert journal, "no trade journaled in an hour of trading"
    assert sum(t["state"] == "closed" for t in journal) >= 1
    assert exchange_trade_ids and exchange_trade_ids <= {t["trade_id"] for t in journal}
    assert info["trades"] >= sum(t["state"] == "closed" for t in journal) - 1


def test_sigkill_with_a_position_open_resumes_without_a_second_entry_and_the_stop_stays_on_the_exchange(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=120)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    sid = start_razor(c, RAZOR_HOLD)["id"]
    started_ts = c.call("strategy.get", id=sid)["started_ts_ms"]
    pos = position_opened(c, sim, sid)
    tid = pos["trade_id"]
    size_before = sim.position_size()
    stop_before = orders_by_label(sim)[f"tb:{sid}:{tid}:sl"]

    eng.kill()
    eng2 = engine_proc(exchange="sim")
    c2 = resumed(eng2, sid)
    decisions = c2.call("strategy.get", id=sid)["decisions"]
    wait_for(lambda: c2.call("strategy.get", id=sid)["decisions"] >= decisions + 3, timeout=30,
             what="three more decisions after the restart")

    info = c2.call("strategy.get", id=sid)
    assert info["state"] == "running" and info["started_ts_ms"] == started_ts
    assert [t["trade_id"] for t in trades_of(c2, sid) if t["state"] in ("open", "pending_entry", "closing")] == [tid]
    assert {trade_id_of(f["label"]) for f in our_fills(sim, sid) if f["label"].endswith(":entry")} == {tid}
    assert sim.position_size() == pytest.approx(size_before)
    labels = orders_by_label(sim)
    assert labels[f"tb:{sid}:{tid}:sl"]["order_id"] == stop_before["order_id"]  # the same stop, not a new one
    assert f"tb:{sid}:{tid}:tp" in labels
    assert sum(o["label"].endswith(":sl") for o in sim.open_orders()) == 1
    assert open_position(c2, sid)["stop_price"] == pytest.approx(stop_before["trigger_price"])


def test_sigkill_between_the_entry_fill_and_the_brackets_the_restart_places_the_brackets(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    """The window is made real with the simulator's fault injection: every answer is delayed 5 s, so the entry
    fills on the exchange at once but the engine hears of it only later; it is SIGKILLed in between."""
    sim = sim_proc(speed=120)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    sid = start_razor(c, RAZOR_HOLD)["id"]
    sim.set_fault("delay", ms=5000)
    pending = wait_for(lambda: next((t for t in trades_of(c, sid) if t["state"] == "pending_entry"), None),
                       timeout=60, what="an entry order on its way")
    sim.set_fault("clear")  # our own calls are answered at once again; the engine's entry answer is still held
    tid = pending["trade_id"]
    wait_for(lambda: sim.position_size() != 0, timeout=5, what="the entry filled on the exchange")
    eng.kill()
    assert not [label for label in orders_by_label(sim) if label.startswith(f"tb:{sid}:{tid}:")], \
        "the window was missed: brackets were placed before the kill"
    entry = [f for f in our_fills(sim, sid) if f["label"] == f"tb:{sid}:{tid}:entry"]
    assert len(entry) >= 1

    eng2 = engine_proc(exchange="sim")
    c2 = resumed(eng2, sid)
    labels = wait_for(lambda: (lb := orders_by_label(sim)) and f"tb:{sid}:{tid}:sl" in lb and lb, timeout=20,
                      what="the stop placed by the restart")
    assert f"tb:{sid}:{tid}:tp" in labels
    stop = labels[f"tb:{sid}:{tid}:sl"]
    assert stop["reduce_only"] and stop["amount"] == pytest.approx(abs(sim.position_size()))
    trade = next(t for t in trades_of(c2, sid) if t["trade_id"] == tid)
    assert trade["state"] == "open"
    avg = sum(f["price"] * f["amount"] for f in entry) / sum(f["amount"] for f in entry)
    assert trade["entry_price"] == pytest.approx(avg)
    assert trade["stop_price"] == pytest.approx(stop["trigger_price"])
    assert {trade_id_of(f["label"]) for f in our_fills(sim, sid) if f["label"].endswith(":entry")} == {tid}


def test_a_stop_that_fills_while_the_engine_is_down_closes_the_trade_with_the_exchanges_pnl_and_fees(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=120)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    config = {**RAZOR_HOLD, "stopLossPercent": 0.3, "takeProfitPercent": 20.0}
    sid = start_razor(c, config)["id"]
    tid = position_opened(c, sim, sid)["trade_id"]
    eng.kill()
    assert sim.position_size() != 0, "the position closed before the kill"

    sim.restart(speed=3000)  # with the engine down, the market runs fast until it takes the stop
    wait_for(lambda: sim.position_size() == 0, timeout=60, what="the stop to fill on the exchange")
    fills = [f for f in our_fills(sim, sid) if trade_id_of(f["label"]) == tid]
    exits = [f for f in fills if f["label"].endswith(":sl")]
    assert exits, fills

    eng2 = engine_proc(exchange="sim")
    c2 = resumed(eng2, sid)
    trade = wait_for(lambda: next((t for t in trades_of(c2, sid) if t["trade_id"] == tid and t["state"] == "closed"),
                                  None), timeout=20, what="the trade closed by reconciliation")
    assert trade["exit_reason"] == "sl"
    assert trade["fees"] == pytest.approx(sum(f["fee"] for f in fills), rel=1e-9, abs=1e-12)
    assert trade["pnl"] == pytest.approx(sum(f["profit_loss"] for f in exits), rel=1e-9, abs=1e-12)
    assert trade["exit_price"] == pytest.approx(sum(f["price"] * f["amount"] for f in exits)
                                                / sum(f["amount"] for f in exits))
    assert trade["exit_ts_ms"] == max(f["timestamp"] for f in exits)
    assert not [label for label in orders_by_label(sim) if label.startswith(f"tb:{sid}:{tid}:")]  # no orphan TP


@pytest.mark.parametrize("hours", [2, 30])
def test_a_stop_that_fills_while_the_engine_is_down_for_hours_closes_the_trade_with_the_exchanges_price_pnl_and_fee(
    hours: int, sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    """Deribit serves closed orders for 30 minutes and user trades for 24 hours unless asked for the historical
    window (docs/deribit.md); the simulator does the same on its clock. Down for 2 hours, the stop's order is history
    and its fill recent; down for 30, the fill too is only in the historical window: reconciliation must find it."""
    sim = sim_proc(speed=120)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    config = {**RAZOR_HOLD, "stopLossPercent": 0.3, "takeProfitPercent": 20.0}
    sid = start_razor(c, config)["id"]
    tid = position_opened(c, sim, sid)["trade_id"]
    eng.kill()
    down_since = sim.now_ms()
    assert sim.position_size() != 0, "the position closed before the kill"

    sim.restart(speed=6000)  # with the engine down, the market runs fast: the stop fills, then hours go by
    wait_for(lambda: sim.position_size() == 0, timeout=90, what="the stop to fill on the exchange")
    fills = [f for f in our_fills(sim, sid) if trade_id_of(f["label"]) == tid]
    exits = [f for f in fills if f["label"].endswith(":sl")]
    assert exits, fills
    stop_filled = max(f["timestamp"] for f in exits)
    # Down for at least ``hours``, and long enough after the fill that its order left the 30-minute window (and
    # for 30 hours, that the fill itself left the 24-hour one).
    back = max(down_since + hours * HOUR_MS, stop_filled + 40 * MINUTE_MS)
    if hours > 24:
        back = max(back, stop_filled + 24 * HOUR_MS + 10 * MINUTE_MS)
    wait_for(lambda: sim.now_ms() >= back, timeout=90, what=f"{hours} simulated hours of downtime")
    sim.restart(speed=120)

    # What a client that asks only the recent windows would see now (and miss).
    exit_ids = {f["trade_id"] for f in exits}
    recent = sim.call("private/get_user_trades_by_instrument", instrument_name=INSTRUMENT, count=1000,
                      start_timestamp=down_since - HOUR_MS)
    old = sim.call("private/get_user_trades_by_instrument", instrument_name=INSTRUMENT, count=1000,
                   start_timestamp=down_since - HOUR_MS, historical=True)
    windows = ({t["trade_id"] for t in recent["trades"]}, {t["trade_id"] for t in old["trades"]})
    assert exit_ids <= windows[1 if hours > 24 else 0] and not exit_ids & windows[0 if hours > 24 else 1]
    stop_order = exits[0]["order_id"]
    orders = sim.call("private/get_order_history_by_instrument", instrument_name=INSTRUMENT, count=100)
    older = sim.call("private/get_order_history_by_instrument", instrument_name=INSTRUMENT, count=100, historical=True)
    assert stop_order not in {o["order_id"] for o in orders} and stop_order in {o["order_id"] for o in older}

    eng2 = engine_proc(exchange="sim")
    c2 = resumed(eng2, sid)
    trade = wait_for(lambda: next((t for t in trades_of(c2, sid) if t["trade_id"] == tid and t["state"] == "closed"),
                                  None), timeout=20, what="the trade closed by reconciliation")
    assert trade["exit_reason"] == "sl"
    assert trade["fees"] == pytest.approx(sum(f["fee"] for f in fills), rel=1e-9, abs=1e-12)
    assert trade["pnl"] == pytest.approx(sum(f["profit_loss"] for f in exits), rel=1e-9, abs=1e-12)
    assert trade["exit_price"] == pytest.approx(sum(f["price"] * f["amount"] for f in exits)
                                                / sum(f["amount"] for f in exits))
    assert trade["exit_ts_ms"] == stop_filled
    assert sorted(f["trade_id"] for f in journal_fills(tb_home, sid) if trade_id_of(f["label"]) == tid) == \
        sorted(f["trade_id"] for f in fills)
    assert c2.call("strategy.get", id=sid)["state"] == "running"  # explained: nobody needs to look
    assert not [label for label in orders_by_label(sim) if label.startswith(f"tb:{sid}:{tid}:")]  # no orphan TP


def test_dropped_link_and_simulator_restart_reconnect_resubscribe_reconcile_and_miss_or_double_no_fill(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=600)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    sid = start_razor(c, RAZOR_FAST)["id"]
    wait_for(lambda: sum(t["state"] == "closed" for t in trades_of(c, sid)) >= 2, timeout=40, what="two closed trades")

    before = status(c)
    sim.set_fault("drop")
    wait_for(lambda: (s := status(c))["connected"] and s["reconnects"] > before["reconnects"]
             and s["reconciliations"] > before["reconciliations"], timeout=20, what="reconnect and reconcile after a drop")

    after_drop = status(c)
    port = sim.port
    sim.restart()
    assert sim.port == port
    wait_for(lambda: (s := status(c))["connected"] and s["reconnects"] > after_drop["reconnects"]
             and s["reconciliations"] > after_drop["reconciliations"], timeout=30,
             what="reconnect and reconcile after a simulator restart")

    # Resubscribed: decisions (market data) and trades (user data) keep coming after the restart.
    decisions = c.call("strategy.get", id=sid)["decisions"]
    traded = {t["trade_id"] for t in trades_of(c, sid) if t["state"] == "closed"}
    wait_for(lambda: c.call("strategy.get", id=sid)["decisions"] >= decisions + 5, timeout=20,
             what="decisions after the restart")
    wait_for(lambda: len({t["trade_id"] for t in trades_of(c, sid) if t["state"] == "closed"} - traded) >= 2,
             timeout=40, what="two more closed trades after the restart")

    # Quiesce (kill switch with flatten), then compare the journal's fills with the exchange's.
    c.call("risk.kill", flatten=True)
    wait_for(lambda: sim.position_size() == 0 and not [lb for lb in orders_by_label(sim) if lb.startswith(f"tb:{sid}:")],
             timeout=20, what="flat and no orders of ours")
    exchange = our_fills(sim, sid)
    exchange_ids = [f["trade_id"] for f in exchange]
    assert len(exchange_ids) == len(set(exchange_ids))

    def same_fills() -> bool:
        return sorted(f["trade_id"] for f in journal_fills(tb_home, sid)) == sorted(exchange_ids)

    wait_for(same_fills, timeout=15, what="the journal's fills to equal the exchange's")
    fees: dict[str, float] = {}
    pnl: dict[str, float] = {}
    for f in exchange:
        tid = trade_id_of(f["label"])
        fees[tid] = fees.get(tid, 0.0) + f["fee"]
        pnl[tid] = pnl.get(tid, 0.0) + f["profit_loss"]
    journal = {t["trade_id"]: t for t in trades_of(c, sid)}
    for tid in fees:  # a fill applied twice to a trade would double its fees
        assert journal[tid]["state"] == "closed", journal[tid]
        assert journal[tid]["fees"] == pytest.approx(fees[tid], rel=1e-9, abs=1e-12), tid
        assert journal[tid]["pnl"] == pytest.approx(pnl[tid], rel=1e-9, abs=1e-9), tid


def test_a_stopped_strategy_stays_stopped_and_a_running_one_resumes_after_an_engine_restart(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=600)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    running = start_razor(c, RAZOR_FAST)
    stopped = start_razor(c, RAZOR_FAST, instrument="BTC-PERPETUAL")
    c.call("strategy.stop", id=stopped["id"])
    stopped_decisions = c.call("strategy.get", id=stopped["id"])["decisions"]

    for crash in (False, True):  # a clean stop (SIGTERM), then a crash (SIGKILL)
        if crash:
            eng.kill()
        else:
            assert eng.stop() == 0
        eng = engine_proc(exchange="sim")
        c = resumed(eng, running["id"])
        decisions = c.call("strategy.get", id=running["id"])["decisions"]
        wait_for(lambda c=c, d=decisions: c.call("strategy.get", id=running["id"])["decisions"] >= d + 5,
                 timeout=20, what="the running strategy deciding again")
        info = c.call("strategy.get", id=stopped["id"])
        assert info["state"] == "stopped" and info["desired_state"] == "stopped", info
        assert info["decisions"] == stopped_decisions
        assert c.call("strategy.get", id=running["id"])["started_ts_ms"] == running["started_ts_ms"]
    assert sim.alive()


def test_after_a_crash_a_strategy_is_starting_not_running_until_the_exchange_is_back_and_it_is_resumed(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=600)
    eng = engine_proc(exchange="sim")
    sid = start_razor(eng.client(), RAZOR_FAST)["id"]
    eng.kill()
    assert sim.stop() == 0

    eng2 = engine_proc(exchange="sim")
    c = eng2.client()
    wait_for(lambda: status(c)["last_error"], timeout=15, what="the engine to fail to reach the exchange")
    info = c.call("strategy.get", id=sid)
    assert info["state"] == "starting" and info["desired_state"] == "running", info
    assert c.call("engine.status")["strategies"]["running"] == 0

    sim.restart()  # the same port and home: the engine's retries find it
    wait_for(lambda: c.call("strategy.get", id=sid)["state"] == "running", timeout=30, what="the strategy resumed")
    assert status(c)["reconciliations"] >= 1
    decisions = c.call("strategy.get", id=sid)["decisions"]
    wait_for(lambda: c.call("strategy.get", id=sid)["decisions"] > decisions, timeout=20, what="a decision")


def test_kill_switch_without_flatten_stops_strategies_but_leaves_the_position_and_its_brackets(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=120)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    sid = start_razor(c, RAZOR_HOLD)["id"]
    tid = position_opened(c, sim, sid)["trade_id"]
    size = sim.position_size()

    answer = c.call("risk.kill", flatten=False)
    assert answer["stopped"] == [sid] and answer["flattened"] == []
    info = c.call("strategy.get", id=sid)
    assert info["state"] == "stopped" and info["desired_state"] == "stopped"
    labels = orders_by_label(sim)
    assert f"tb:{sid}:{tid}:sl" in labels and f"tb:{sid}:{tid}:tp" in labels
    assert sim.position_size() == pytest.approx(size)
    assert open_position(c, sid) is not None
    assert next(t for t in trades_of(c, sid) if t["trade_id"] == tid)["state"] == "open"


def test_kill_switch_with_flatten_closes_our_position_and_cancels_its_brackets(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=120)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    sid = start_razor(c, RAZOR_HOLD)["id"]
    tid = position_opened(c, sim, sid)["trade_id"]

    answer = c.call("risk.kill", flatten=True)
    assert answer["stopped"] == [sid] and answer["flattened"] == [tid]
    wait_for(lambda: sim.position_size() == 0, timeout=10, what="the position flattened on the exchange")
    wait_for(lambda: not [lb for lb in orders_by_label(sim) if lb.startswith(f"tb:{sid}:")], timeout=10,
             what="the brackets cancelled")
    trade = wait_for(lambda: next((t for t in trades_of(c, sid) if t["trade_id"] == tid and t["state"] == "closed"),
                                  None), timeout=10, what="the trade closed in the journal")
    assert trade["exit_reason"] in ("kill", "flatten")
    assert open_position(c, sid) is None
    assert c.call("strategy.get", id=sid)["state"] == "stopped"


BAD_STARTS: list[tuple[dict[str, Any], str]] = [
    ({"name": "razor", "config": {"rsiOversoldd": 30}}, "rsiOversoldd"),  # unknown key
    ({"name": "razor", "config": {"stopLossPercent": 60}}, "stopLossPercent"),  # above its maximum
    ({"name": "razor", "config": {"maxDailyTrades": -1}}, "maxDailyTrades"),  # below its minimum
    ({"name": "razor", "config": {"tradeSize": "big"}}, "tradeSize"),  # wrong type
    ({"name": "razor", "config": {"tradeSize": 0}}, "below the minimum order"),  # would trade a whole minimum
    ({"name": "razor", "config": {"breakEvenEnabled": 2}}, "breakEvenEnabled"),  # only 0/1 pass as booleans
    ({"name": "razor", "instrument": "ETH-NOPE"}, "ETH-NOPE"),  # unknown instrument
    ({"name": "razor", "config": {"instrument": "ETH-NOPE"}}, "ETH-NOPE"),  # ... given inside the config
    ({"name": "nope"}, "nope"),  # unknown strategy
    ({"name": "razor", "config": [1, 2]}, "config"),  # config is not an object
]


def test_strategy_start_with_bad_input_answers_invalid_params_naming_the_culprit_and_creates_nothing(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim_proc(speed=60)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    wait_for(lambda: status(c)["reconciliations"] >= 1, timeout=20, what="the engine connected")
    problems = []
    for params, culprit in BAD_STARTS:
        try:
            c.call("strategy.start", params)
        except RpcError as exc:
            if exc.code != -32602 or culprit not in str(exc):
                problems.append(f"{params}: answered {exc.code} {exc}")
        else:
            problems.append(f"{params}: accepted")
    assert not problems, "\n".join(problems)
    assert c.call("strategy.list") == []
    assert c.call("trades.list") == []
    assert c.call("orders.list", open_only=False) == []
    assert c.call("engine.status")["strategies"]["total"] == 0


def test_an_entry_and_another_strategys_decision_on_the_same_candle_do_not_wait_for_each_other(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    """Two strategies on one instrument, the trader started first. On the candle of each of its entries the
    journal holds, in this order: the trader's trade (before its entry goes out), the watcher's decision (committed
    while the entry is in flight), the trader's decision (journaled once the exchange answered). Before
    ``Supervisor._close_candles`` decided every strategy first, the watcher's decision waited for the trader's
    entry and brackets to be answered. The trader's decision pushes say how long the decision took to be journaled
    (``lag_ms``) and, for an entry, how long until its brackets were placed too (``done_ms``)."""
    sim_proc(speed=600)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    pushes: list[dict[str, Any]] = []
    c.subscribe("strategy.*", lambda channel, data: pushes.append(data) if data.get("type") == "decision" else None)
    trader = start_razor(c, RAZOR_FAST)["id"]
    watcher = c.call("strategy.start", name="razor", config={**RAZOR_FAST, "maxDailyTrades": 0},
                     allow_shared_instrument=True)["id"]
    wait_for(lambda: len(trades_of(c, trader)) >= 3, timeout=60, what="three entries of the trader")
    entries = [p for p in list(pushes) if p["decision"]["intents"] and p["decision"]["intents"][0]["type"] == "Enter"]
    assert entries and all(0 < p["lag_ms"] <= p["done_ms"] for p in entries), entries
    quiet = [p for p in list(pushes) if not p["decision"]["intents"]]
    assert quiet and all(p["lag_ms"] > 0 and "done_ms" not in p for p in quiet if "lag_ms" in p)

    def journaled_orders() -> list[tuple[int, int, int]]:
        """Per entry whose candle both decided on (the watcher starts after the trader's first candles): the event
        ids of the trade, the watcher's decision and the trader's decision. An entry's decisions are committed a
        little after its trade (the one ``trades_of`` sees first): the caller waits for two complete entries."""
        conn = sqlite3.connect(f"file:{tb_home.root / 'journal.sqlite'}?mode=ro", uri=True, timeout=10)
        try:
            pending = [(event_id, json.loads(payload)["trade"]["signal_ts_ms"]) for event_id, payload in conn.execute(
                "SELECT id, payload FROM events WHERE kind = 'trade.pending' AND strategy_id = ?", (trader,))]
            decided = {sid: dict(conn.execute("SELECT ts_ms, id FROM events WHERE kind = 'decision' AND "
                                              "strategy_id = ?", (sid,)).fetchall()) for sid in (trader, watcher)}
        finally:
            conn.close()
        return [(trade_event, decided[watcher][signal - MINUTE_MS], decided[trader][signal - MINUTE_MS])
                for trade_event, signal in pending
                if signal - MINUTE_MS in decided[watcher] and signal - MINUTE_MS in decided[trader]]

    orders = wait_for(lambda: found if len(found := journaled_orders()) >= 2 else None, timeout=60,
                      what="two entries with both strategies' decisions journaled")
    assert [o for o in orders if not o[0] < o[1] < o[2]] == [], orders
