"""One chaos round of each kind, on a ``World`` that is trading, and the audit at the end of a run.

A round: let the market run to a random moment (a random number of simulated seconds, or the moment an entry is
in flight), break something (SIGKILL the engine, SIGKILL the simulator, inject a fault), bring it back, time how
long until every strategy that should run is running and deciding again, then check every invariant
(``invariants.Checker``). The round's figures go out as one JSON line; the first broken invariant fails the test
with the round's record, because a world in a broken state would make every later round meaningless.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import settings
from tests.chaos.invariants import read_journal
from tests.chaos.report import emit
from tests.chaos.world import INSTRUMENTS, NotResumed, Resume, World
from tests.conftest import wait_for


def _moment(world: World, rng: random.Random, slow: bool = False) -> str:
    """Wait for a random moment to strike: an entry in flight (its trade journaled, its answer not yet applied) or
    a random 5 to 600 simulated seconds from now. Returns which."""
    if rng.random() < (0.5 if slow else 0.3):
        def entry_in_flight() -> bool:
            return any(t["state"] == "pending_entry" for t in read_journal(world.home).trades.values())

        try:
            wait_for(entry_in_flight, timeout=20, interval=0.005, what="an entry in flight")
            return "entry in flight"
        except pytest.fail.Exception:  # no entry within the limit: strike at this moment instead
            return "no entry came"
    target = world.sim.now_ms() + rng.randint(5_000, 600_000)
    wait_for(lambda: world.sim.now_ms() >= target, timeout=60, what="the random moment")
    return "random moment"


def _resumed(world: World, back: float, spawned: float | None = None, reconciled_before: int = 0) -> dict[str, Any]:
    """The restart's timing, or ``{"not_resumed": why}`` (the round then fails with its invariants' report)."""
    try:
        resume: Resume = world.wait_resumed(back, spawned, reconciled_before)
    except NotResumed as exc:
        return {"not_resumed": str(exc)}
    return asdict(resume)


def _finish(world: World, kind: str, i: int, record: dict[str, Any]) -> dict[str, Any]:
    found, settle_s = world.checker.settle(world.should_run(), timeout=30)
    if "not_resumed" in record:
        found = [f"not resumed: {record['not_resumed']}", *found]
    record.update(violations=found, settle_s=round(settle_s, 3),
                  fills={inst: len(world.sim.user_trades(inst)) for inst in INSTRUMENTS})
    out = emit(kind, round=i, **record)
    if found:
        kept = keep(world, f"{kind}-{i}")
        pytest.fail(f"{kind} round {i}: invariants broken:\n" + "\n".join(found) + f"\nrecord: {out}\n"
                    f"journal, logs and simulator state kept in {kept}")
    return out


def keep(world: World, name: str) -> Path:
    """Copy the world's home (journal, logs, simulator state) next to the results, for the post-mortem: pytest's
    temporary directories are rotated away by later runs."""
    dest = settings.OUT.parent / "failed" / f"{name}-{int(time.time())}"
    shutil.copytree(world.home.root, dest, ignore=shutil.ignore_patterns("*.lock"), dirs_exist_ok=True)
    return dest


def engine_kill(world: World, rng: random.Random, i: int, slow: bool = False) -> dict[str, Any]:
    """SIGKILL the engine at a random moment (with every exchange answer delayed when ``slow``), restart it."""
    delay_ms = 0
    if slow:
        delay_ms = rng.choice([200, 500, 1000, 2000, 3000])
        world.sim.set_fault("delay", ms=delay_ms)
    when = _moment(world, rng, slow)
    world.kill_engine()
    if slow:
        world.sim.set_fault("clear")  # the exchange answers promptly again: it is "back"
    spawned = world.start_engine()
    # "Back": the restarted engine answering, the exchange there all along. Spawn -> running is reported too.
    resume = _resumed(world, world.answered_at, spawned)
    return _finish(world, "engine_kill_slow" if slow else "engine_kill", i,
                   {"when": when, "delay_ms": delay_ms, **resume})


def _failed_reconnects(world: World) -> int:
    """Reconnect attempts the engine has logged as failed so far (its log: the engine's own account)."""
    text = (world.home.logs_dir / "engine.log").read_text(errors="replace")
    return text.count("Deribit reconnect failed")


def sim_kill(world: World, rng: random.Random, i: int, kill: bool = True) -> dict[str, Any]:
    """Stop the simulator at a random moment (SIGKILL, or SIGTERM with ``kill=False``: it saves its state), keep it
    down until the engine has failed 0 to 6 reconnect attempts (so its back-off has grown to its longest), then
    start it again on the same port; the engine reconnects, reconciles and trades on."""
    when = _moment(world, rng)
    before = world.link()["reconciliations"]
    failed = _failed_reconnects(world)
    attempts = rng.randint(0, 6)
    if kill:
        world.kill_sim()
    else:
        assert world.sim.stop() == 0
    wait_for(lambda: not world.link()["connected"], timeout=30, what="the engine noticing the simulator gone")
    wait_for(lambda: _failed_reconnects(world) >= failed + attempts, timeout=60,
             what=f"{attempts} failed reconnect attempts")
    back = world.start_sim()
    resume = _resumed(world, back, reconciled_before=before)
    return _finish(world, "sim_kill" if kill else "sim_restart", i,
                   {"when": when, "down_attempts": attempts, **resume})


FAULTS = ("drop", "stall", "delay", "error")


def fault(world: World, rng: random.Random, i: int) -> dict[str, Any]:
    """One injected fault while trading: the link dropped, the exchange stalled or slow, or calls refused (rate
    limit, internal error); then the fault ends and trading must carry on with every invariant intact."""
    kind = FAULTS[i % len(FAULTS)]
    before = world.link()
    params: dict[str, Any] = {}
    _moment(world, rng)
    # How long a delay or error fault lasts, fixed before it starts: our own calls to the simulator are subject to
    # the fault too ("*" errors every public call), so they are made in wait_for, where an error means "not yet".
    until = world.sim.now_ms() + rng.randint(30_000, 600_000)
    if kind == "drop":
        world.sim.set_fault("drop")
    elif kind == "stall":
        params = {"seconds": rng.choice([1, 3, 6])}
        world.sim.set_fault("stall", **params)
    elif kind == "delay":
        params = {"ms": rng.choice([300, 1000, 3000])}
        world.sim.set_fault("delay", **params)
    else:
        params = {"methods": rng.choice([["private/buy", "private/sell"], ["private/edit"], ["*"]]),
                  "code": rng.choice([10028, 11044, 13888]), "message": "chaos", "count": rng.randint(1, 5)}
        world.sim.set_fault("error", **params)
    if kind in ("delay", "error"):
        wait_for(lambda: world.sim.now_ms() >= until, timeout=60, what="the fault to last a while")
        world.sim.set_fault("clear")
    elif kind == "stall":
        wait_for(lambda: world.sim.call("admin/get_faults")["stall_remaining_s"] == 0,
                 timeout=params["seconds"] + 30, what="the stall to end")
    back = time.time()
    reconciled = before["reconciliations"] if kind == "drop" else 0
    resume = _resumed(world, back, reconciled_before=reconciled)
    return _finish(world, "fault", i, {"fault": kind, **params,
                                       "reconnects": world.link()["reconnects"] - before["reconnects"],
                                       **resume})


def final_audit(world: World, kind: str) -> dict[str, Any]:
    """At the end of a run: flatten everything (kill switch), then the journal's fills must equal the exchange's
    exactly, and each trade's fees and PnL must be the sum of its exchange fills (a fill applied twice would
    double them)."""
    world.client.call("risk.kill", flatten=True)

    def quiet() -> bool:
        return all(world.sim.position_size(i) == 0 and not world.sim.open_orders(i) for i in INSTRUMENTS)

    wait_for(quiet, timeout=60, what="flat and no open orders after the kill switch")
    found, _ = world.checker.settle(set(), timeout=30)
    assert not found, found
    journal = read_journal(world.home)
    exchange = [f for inst in INSTRUMENTS for f in world.sim.user_trades(inst)]
    fees: dict[str, float] = {}
    pnl: dict[str, float] = {}
    for f in exchange:
        tid = str(f["label"]).split(":")[2]
        fees[tid] = fees.get(tid, 0.0) + float(f["fee"])
        pnl[tid] = pnl.get(tid, 0.0) + float(f.get("profit_loss") or 0.0)
    assert set(journal.fills) == {str(f["trade_id"]) for f in exchange}
    wrong = [tid for tid in fees if tid not in journal.trades
             or abs(journal.trades[tid]["fees"] - fees[tid]) > 1e-9 * max(1.0, abs(fees[tid]))]
    assert not wrong, [(t, journal.trades.get(t, {}).get("fees"), fees[t]) for t in wrong[:5]]
    closed = [t for t in journal.trades.values() if t["state"] == "closed"]
    bad_pnl = [t["trade_id"] for t in closed if t["trade_id"] in pnl
               and abs(t["pnl"] - pnl[t["trade_id"]]) > 1e-6 * max(1.0, abs(pnl[t["trade_id"]]))]
    assert not bad_pnl, [(t, journal.trades[t]["pnl"], pnl[t]) for t in bad_pnl[:5]]
    return emit(f"{kind}_audit", fills=len(exchange), trades=len(journal.trades), closed=len(closed),
                strategies=len(journal.strategies), seed=settings.SEED)
