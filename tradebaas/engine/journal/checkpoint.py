"""Moving the journal's write-ahead log into the database file beside the loop, not inside its commits.

SQLite's default in WAL mode is an automatic checkpoint run by the commit that takes the log past 1,000 pages: that
commit copies the log into the database file and fsyncs it, on the engine's loop. With a hundred strategies
deciding the log passes 1,000 pages every few seconds, and the unlucky commit (the decisions of one candle close,
or an entry's trade before its order goes out) took ~10 ms longer: a measurable share of the scale benchmark's p99
(issue 15). ``WalCheckpointer`` turns the automatic checkpoint off on the engine's connection and runs a PASSIVE
checkpoint every ``interval_s`` from a connection of its own in a worker thread (the sqlite3 module lets go of the
interpreter's lock while SQLite works). A passive checkpoint never blocks a writer or a reader; what a commit
guarantees (WAL, ``synchronous=NORMAL``: a commit survives a crash of the process) does not change.

Fails safe: when a checkpoint fails, the automatic checkpoint is turned back on and the error is logged, so the log
can never grow without bound because this service broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3

from tradebaas.engine.journal.database import Journal

log = logging.getLogger("tradebaas.engine.journal.checkpoint")

#: SQLite's own default (pages), restored when the background checkpoint fails or stops.
AUTO_CHECKPOINT_PAGES = 1000


class WalCheckpointer:
    """A service of the engine (``Service`` protocol): started first, stopped last."""

    name = "journal-checkpoint"

    def __init__(self, journal: Journal, interval_s: float = 1.0) -> None:
        self.journal = journal
        self.interval_s = interval_s
        self.checkpoints = 0
        self.failed = ""
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = sqlite3.connect(str(self.journal.path), isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 5000")
        self.journal.conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        with contextlib.suppress(sqlite3.Error):  # the journal may be closed already
            self.journal.conn.execute(f"PRAGMA wal_autocheckpoint = {AUTO_CHECKPOINT_PAGES}")
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.to_thread(self.checkpoint)
            except sqlite3.Error as exc:
                self.failed = str(exc)
                log.error("the journal's background checkpoint failed (%s); SQLite checkpoints on commit again",
                          exc)
                self.journal.conn.execute(f"PRAGMA wal_autocheckpoint = {AUTO_CHECKPOINT_PAGES}")
                return

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, pages in the log, pages moved), as SQLite reports it."""
        assert self._conn is not None
        busy, logged, moved = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        return int(busy), int(logged), int(moved)
