"""Random SIGKILLs of the simulator during accelerated paper trading: it comes back on the same port with what it
acknowledged (the crash-consistent simulator, docs/simulator.md "Durability"), the engine reconnects, reconciles
and trades on, and every invariant holds: the journal's fills equal the exchange's, no position without its stop,
no orphan bracket, running again within 5 s of the simulator being back.

The same rounds with SIGTERM keep the simulator down for up to 6 failed reconnect attempts, so the engine's
back-off has grown to its longest when the exchange comes back: the 5 s budget holds even then.
"""

from __future__ import annotations

import random

import pytest

from tests.chaos import rounds, settings
from tests.chaos.report import emit, summary
from tests.chaos.world import World


def _run(world: World, rng: random.Random, count: int, kill: bool) -> None:
    kind = "sim_kill" if kill else "sim_restart"
    records = []
    for i in range(1, count + 1):
        if i > 1 and (i - 1) % settings.SWAP_EVERY == 0:
            world.swap()
        records.append(rounds.sim_kill(world, rng, i, kill=kill))
    emit(f"{kind}_summary", clean=f"{len(records)}/{count}",
         back_to_running=summary([r["back_to_running_s"] for r in records]),
         back_to_deciding=summary([r["back_to_deciding_s"] for r in records]), layouts=world.layout + 1)
    rounds.final_audit(world, kind)
    late = [(r["round"], r["down_attempts"], r["back_to_running_s"]) for r in records
            if r["back_to_running_s"] > settings.RESUME_LIMIT_S]
    assert not late, f"strategies running later than {settings.RESUME_LIMIT_S} s after the simulator was back: {late}"


@pytest.mark.timeout(settings.timeout_for(settings.SIM_KILLS, 90))
def test_random_simulator_sigkills_leave_every_invariant_intact(world: World, rng: random.Random) -> None:
    _run(world, rng, settings.SIM_KILLS, kill=True)


@pytest.mark.timeout(settings.timeout_for(settings.SIM_KILLS, 90))
def test_simulator_restarts_after_long_outages_resume_within_the_limit(world: World, rng: random.Random) -> None:
    _run(world, rng, settings.SIM_KILLS, kill=False)
