"""``tradebaas.collector``: what lives now, and what survives a full collection later, leaves the collector's
sight; garbage cycles made of new objects are still collected."""

from __future__ import annotations

import asyncio
import gc
import weakref

from tradebaas.collector import freeze_long_lived


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_survivors_of_a_full_collection_are_frozen_and_new_cycles_still_collected() -> None:
    async def scenario() -> None:
        undo = freeze_long_lived(asyncio.get_running_loop())
        try:
            frozen_at_start = gc.get_freeze_count()
            assert frozen_at_start > 0
            keep = [Node() for _ in range(1000)]  # long-lived, made after the first freeze
            gc.collect(2)
            await asyncio.sleep(0)  # the freeze scheduled by the collection runs on the loop
            assert gc.get_freeze_count() >= frozen_at_start + len(keep)

            a, b = Node(), Node()
            a.other, b.other = b, a  # a cycle of young objects that becomes garbage
            gone = weakref.ref(a)
            del a, b
            gc.collect(2)
            assert gone() is None
        finally:
            undo()
        assert gc.get_freeze_count() == 0

    asyncio.run(scenario())
