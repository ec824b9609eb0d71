"""Random SIGKILLs of the simulator during accelerated paper trading: it comes back on the same port with its saved
state, the engine reconnects, reconciles and trades on, and every invariant holds. The same rounds with SIGTERM
(the simulator saves its state on the way out) run in ``make test`` today: they prove the engine's side (reconnect
after a long outage, reconcile, resume within 5 s of the exchange being back).

These rounds need a crash-consistent simulator (an acknowledged state change survives SIGKILL; ids never repeat),
which another branch is building. Until it lands, a SIGKILL may lose the last ~100 ms of the simulator's state
(docs/simulator.md, "Persistence guarantee"), and the invariants then fail exactly where they should: the journal
holds a fill the exchange forgot, or the exchange reuses an order or fill id. So this test is kept out of
``make test`` (``CHAOS_SIM_KILLS_IN_MAKE_TEST`` unset) and runs in ``make chaos``; set the variable to 1 once the
crash-consistent simulator is on main.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.chaos import rounds, settings
from tests.chaos.report import emit, summary
from tests.chaos.world import World

#: Until the crash-consistent simulator lands on main (see the module docstring).
PENDING_CRASH_CONSISTENT_SIM = not settings.FULL and os.environ.get("CHAOS_SIM_KILLS_IN_MAKE_TEST") != "1"


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


@pytest.mark.skipif(PENDING_CRASH_CONSISTENT_SIM,
                    reason="needs the crash-consistent simulator (not on main yet); runs in `make chaos`")
@pytest.mark.timeout(settings.timeout_for(settings.SIM_KILLS, 90))
def test_random_simulator_sigkills_leave_every_invariant_intact(world: World, rng: random.Random) -> None:
    _run(world, rng, settings.SIM_KILLS, kill=True)


@pytest.mark.timeout(settings.timeout_for(settings.SIM_KILLS, 90))
def test_simulator_restarts_after_long_outages_resume_within_the_limit(world: World, rng: random.Random) -> None:
    _run(world, rng, settings.SIM_KILLS, kill=False)
