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
#: (strategy id, decision record)
Record = tuple[str, dict[str, Any]]
SaveRecords = Callable[[list[Record], sqlite3.Connection], None]


class DecisionBatch:
    """Quiet decisions' journal writes and pushes, committed together (``commit``), in the order they came."""

    def __init__(self) -> None:
        self.writes: list[Write] = []
        self.records: list[Record] = []
        self.pushes: list[tuple[str, dict[str, Any], float | None]] = []

    def __len__(self) -> int:
        return len(self.pushes)

    def add(self, write: Write | None, channel: str, push: dict[str, Any], closed_at: float | None,
            record: Record | None = None) -> None:
        """A decision's journal write and/or its ``record`` (saved with the others' by ``commit``'s
        ``save_records``, in one go), and its push; the push gets ``lag_ms`` (from ``closed_at``, the
        ``perf_counter()`` when the closing event arrived) once the commit is done."""
        if write is not None:
            self.writes.append(write)
        if record is not None:
            self.records.append(record)
        self.pushes.append((channel, push, closed_at))

    def commit(self, journal: Journal, publish: Publish, save_records: SaveRecords | None = None) -> int:
        """Write everything in one transaction (the records first, by ``save_records``, then the writes), then
        push; the batch is empty afterwards. Returns the count of decisions. A failed write rolls the transaction
        back and raises (nothing is pushed)."""
        writes, records, pushes = self.writes, self.records, self.pushes
        self.writes, self.records, self.pushes = [], [], []
        if records and save_records is None:
            raise ValueError("records to save, but no save_records")
        if writes or records:
            with journal.transaction() as conn:
                if records and save_records is not None:
                    save_records(records, conn)
                for write in writes:
                    write(conn)
        done = time.perf_counter()
        for channel, push, closed_at in pushes:
            if closed_at is not None:
                push["lag_ms"] = round((done - closed_at) * 1e3, 3)
            publish(channel, push)
        return len(pushes)
