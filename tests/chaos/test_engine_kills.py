"""Random SIGKILLs of the engine during accelerated paper trading (Razor and ema_cross, swapped between the two
perpetuals every few rounds), also while every exchange answer is slow; after each kill every invariant of
``tests/chaos/invariants.py`` holds and the strategies run again within 5 s of the exchange being back."""

from __future__ import annotations

import random

import pytest

from tests.chaos import rounds, settings
from tests.chaos.report import emit, summary
from tests.chaos.world import World


def _run(world: World, rng: random.Random, count: int, slow: bool) -> None:
    kind = "engine_kill_slow" if slow else "engine_kill"
    records = []
    for i in range(1, count + 1):
        if i > 1 and (i - 1) % settings.SWAP_EVERY == 0:
            world.swap()
        records.append(rounds.engine_kill(world, rng, i, slow=slow))
    running = [r["back_to_running_s"] for r in records]
    emit(f"{kind}_summary", clean=f"{len(records)}/{count}", back_to_running=summary(running),
         spawn_to_running=summary([r["spawn_to_running_s"] for r in records]),
         back_to_deciding=summary([r["back_to_deciding_s"] for r in records]),
         entry_in_flight=sum(r["when"] == "entry in flight" for r in records), layouts=world.layout + 1)
    rounds.final_audit(world, kind)
    late = [(r["round"], r["back_to_running_s"]) for r in records if r["back_to_running_s"] > settings.RESUME_LIMIT_S]
    assert not late, f"strategies running later than {settings.RESUME_LIMIT_S} s after the engine answered: {late}"


@pytest.mark.timeout(settings.timeout_for(settings.ENGINE_KILLS, 40))
def test_random_engine_sigkills_leave_every_invariant_intact(world: World, rng: random.Random) -> None:
    _run(world, rng, settings.ENGINE_KILLS, slow=False)


@pytest.mark.timeout(settings.timeout_for(settings.SLOW_KILLS, 60))
def test_engine_sigkills_while_answers_are_slow_leave_every_invariant_intact(world: World,
                                                                             rng: random.Random) -> None:
    _run(world, rng, settings.SLOW_KILLS, slow=True)
