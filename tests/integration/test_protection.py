"""Protection first, with real processes: whatever the journal believes, a position on the exchange keeps its stop.

The journal is made wrong on purpose between a SIGKILL and the restart (a trade row lost, as when an exchange
forgot and reused ids); the restarted engine must keep the stop on the exchange and ask a person, never strip
the position of its stop. A strategy that declares no exchange brackets (``ema_cross``) trades live without one,
and the normal end of an OCO pair (the take-profit filled, the stop cancelled by the exchange) is no surprise.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import EngineProc, SimProc
from tests.integration.test_live_loop import (
    INSTRUMENT,
    RAZOR_FAST,
    RAZOR_HOLD,
    orders_by_label,
    position_opened,
    start_razor,
    status,
    trades_of,
)
from tradebaas.home import Home

pytestmark = pytest.mark.integration


def lose_trade(home: Home, trade_id: str) -> None:
    """Make the journal forget one trade (its row), as a journal behind a forgetful exchange would."""
    conn = sqlite3.connect(home.root / "journal.sqlite", timeout=10)
    try:
        with conn:
            assert conn.execute("DELETE FROM trades WHERE trade_id = ?", (trade_id,)).rowcount == 1
    finally:
        conn.close()


def test_a_journal_that_lost_the_trade_keeps_the_positions_stop_and_asks_a_person(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=60)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    sid = start_razor(c, RAZOR_HOLD)["id"]
    pos = position_opened(c, sim, sid)
    tid = pos["trade_id"]
    stop = orders_by_label(sim)[f"tb:{sid}:{tid}:sl"]
    size = sim.position_size()

    eng.kill()
    lose_trade(tb_home, tid)
    eng2 = engine_proc(exchange="sim")
    c2 = eng2.client()
    info = wait_for(lambda: (i := c2.call("strategy.get", id=sid))["state"] == "needs_attention" and i, timeout=30,
                    what="the strategy waiting for a person")
    assert "no tradebaas trade explains" in info["state_reason"]
    labels = orders_by_label(sim)
    assert labels[f"tb:{sid}:{tid}:sl"]["order_id"] == stop["order_id"], "the position's stop was cancelled"
    assert f"tb:{sid}:{tid}:tp" not in labels  # a take-profit is no protection: it goes
    assert sim.position_size() == pytest.approx(size)  # never adopted, never closed
    c2.call("engine.reconcile")  # and it stays so, however often the engine looks
    assert orders_by_label(sim)[f"tb:{sid}:{tid}:sl"]["order_id"] == stop["order_id"]


def test_a_strategy_without_brackets_trades_live_and_keeps_running(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=600)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    sid = c.call("strategy.start", name="ema_cross", config={"fast": 3, "slow": 8})["id"]
    trade = wait_for(lambda: next((t for t in trades_of(c, sid) if t["state"] == "open"), None), timeout=90,
                     what="ema_cross in a position")
    reconciled = status(c)["reconciliations"]
    c.call("engine.reconcile")
    assert status(c)["reconciliations"] > reconciled
    info = c.call("strategy.get", id=sid)
    assert info["state"] == "running", info["state_reason"]
    assert not [label for label in orders_by_label(sim) if label.startswith(f"tb:{sid}:{trade['trade_id']}:")]
    wait_for(lambda: any(t["state"] == "closed" for t in trades_of(c, sid)), timeout=90,
             what="ema_cross closing its position by the opposite crossover")
    assert c.call("strategy.get", id=sid)["state"] == "running"


def test_the_end_of_an_oco_pair_is_not_taken_for_a_surprise(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=600)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    sid = start_razor(c, RAZOR_FAST)["id"]
    wait_for(lambda: sum(t["state"] == "closed" and t["exit_reason"] in ("sl", "tp") for t in trades_of(c, sid)) >= 3,
             timeout=120, what="three trades closed by their brackets")
    log = (tb_home.logs_dir / "engine.log").read_text()
    assert "was cancelled" not in log, [ln for ln in log.splitlines() if "was cancelled" in ln][:3]
    assert not [o for o in sim.open_orders(INSTRUMENT) if o["label"].startswith(f"tb:{sid}:")
                and o["label"].endswith((":sl", ":tp"))
                and not any(t["trade_id"] in o["label"] and t["state"] == "open" for t in trades_of(c, sid))]


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_lost_journal_is_no_silent_fresh_start(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home, how: str
) -> None:
    sim = sim_proc(speed=60)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    sid = start_razor(c, RAZOR_HOLD)["id"]
    pos = position_opened(c, sim, sid)
    stop = orders_by_label(sim)[f"tb:{sid}:{pos['trade_id']}:sl"]
    size = sim.position_size()

    eng.kill()
    journal = tb_home.root / "journal.sqlite"
    for extra in ("-wal", "-shm"):
        (tb_home.root / f"journal.sqlite{extra}").unlink(missing_ok=True)
    if how == "deleted":
        journal.unlink()
    else:
        journal.write_bytes(b"")
    eng2 = engine_proc(exchange="sim")
    c2 = eng2.client()
    orphan = wait_for(lambda: next((s for s in c2.call("strategy.list") if s["id"] == sid), None), timeout=30,
                      what="the strategy found on the exchange listed as an orphan")
    assert orphan["state"] == "needs_attention" and orphan["desired_state"] == "stopped"
    assert "does not know" in orphan["state_reason"] and "put it back" in orphan["state_reason"]
    assert orders_by_label(sim)[f"tb:{sid}:{pos['trade_id']}:sl"]["order_id"] == stop["order_id"]
    assert sim.position_size() == pytest.approx(size)  # never adopted, never closed
    c2.call("engine.reconcile")
    assert c2.call("strategy.get", id=sid)["state"] == "needs_attention"


def test_a_fresh_journal_on_an_account_with_nothing_of_ours_starts_as_usual(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim_proc(speed=60)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    wait_for(lambda: status(c)["reconciliations"] >= 1, timeout=30, what="the first reconciliation")
    assert c.call("strategy.list") == []
