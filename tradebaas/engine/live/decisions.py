"""One journal commit for the quiet decisions of one market event (issue 15, scale).

When a tick closes a candle, every strategy on that instrument decides, one after the other, on the engine's loop.
Most decisions carry no intent (no entry, no exit, no stop to move): they change nothing on the exchange, and
their record and the strategy's context were each committed alone, one SQLite commit per strategy; with 50
strategies on an instrument the last one decided some 50 commits after the tick. ``DecisionBatch`` collects those
writes and their pushes while the strategies decide, and ``commit`` writes them in *one* transaction after the
last one, then pushes them (a panel never sees a decision the journal does not hold).

What it keeps: a decision with an intent is journaled at once, before its orders, as before (an entry journals
its trade before the order goes out). What it changes: a crash between a quiet decision and the batch's commit
(the same loop pass, milliseconds) loses that decision's record and the context saved with it, as if the crash had
come just before the strategy decided; after the restart the strategy decides again from its last saved context.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from tradebaas.engine.journal.database import Journal

Write = Callable[[sqlite3.Connection], None]
Publish = Callable[[str, Any], Any]


class DecisionBatch:
    """Quiet decisions' journal writes and pushes, committed together (``commit``), in the order they came."""

    def __init__(self) -> None:
        self.writes: list[Write] = []
        self.pushes: list[tuple[str, dict[str, Any], float | None]] = []

    def __len__(self) -> int:
        return len(self.writes)

    def add(self, write: Write, channel: str, push: dict[str, Any], closed_at: float | None) -> None:
        """A decision's journal write and its push; the push gets ``lag_ms`` (from ``closed_at``, the
        ``perf_counter()`` when the closing event arrived) once the commit is done."""
        self.writes.append(write)
        self.pushes.append((channel, push, closed_at))

    def commit(self, journal: Journal, publish: Publish) -> int:
        """Write everything in one transaction, then push; the batch is empty afterwards. Returns the count.
        A failed write rolls the transaction back and raises (nothing is pushed)."""
        writes, pushes = self.writes, self.pushes
        self.writes, self.pushes = [], []
        if writes:
            with journal.transaction() as conn:
                for write in writes:
                    write(conn)
        done = time.perf_counter()
        for channel, push, closed_at in pushes:
            if closed_at is not None:
                push["lag_ms"] = round((done - closed_at) * 1e3, 3)
            publish(channel, push)
        return len(writes)
