"""Fault rounds while trading: the exchange link dropped, the exchange stalled (accepts, answers nothing), every
answer slow, order calls refused (rate limit 10028, not_open_order 11044, an internal error); after each fault ends
the strategies trade on and every invariant of ``tests/chaos/invariants.py`` holds."""

from __future__ import annotations

import random

import pytest

from tests.chaos import rounds, settings
from tests.chaos.report import emit, summary
from tests.chaos.world import World


@pytest.mark.timeout(settings.timeout_for(settings.FAULT_ROUNDS, 60))
def test_fault_rounds_while_trading_leave_every_invariant_intact(world: World, rng: random.Random) -> None:
    records = []
    for i in range(settings.FAULT_ROUNDS):
        if i > 0 and i % settings.SWAP_EVERY == 0:
            world.swap()
        records.append(rounds.fault(world, rng, i))
    emit("fault_summary", clean=f"{len(records)}/{settings.FAULT_ROUNDS}",
         kinds={k: sum(r["fault"] == k for r in records) for k in rounds.FAULTS},
         back_to_deciding=summary([r["back_to_deciding_s"] for r in records]))
    rounds.final_audit(world, "fault")
