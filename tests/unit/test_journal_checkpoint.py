"""The journal's background checkpoint (``tradebaas.engine.journal.checkpoint``): commits no longer checkpoint,
the service does, and when it fails SQLite's own checkpoint on commit comes back."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tradebaas.engine.journal.checkpoint import AUTO_CHECKPOINT_PAGES, WalCheckpointer
from tradebaas.engine.journal.database import Journal


def write(journal: Journal, n: int) -> None:
    for i in range(n):
        journal.append("test", {"i": i, "pad": "x" * 3000}, i)


def test_commits_leave_the_log_to_the_service_which_moves_it_into_the_database(tmp_path: Path) -> None:
    async def scenario() -> None:
        with Journal.open(tmp_path / "j.sqlite", synchronous="NORMAL") as journal:
            service = WalCheckpointer(journal, interval_s=3600)  # checkpoints only when the test says
            await service.start()
            try:
                assert journal.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
                write(journal, 1500)  # > 1,000 pages: SQLite's default would have checkpointed on a commit
                busy, logged, moved = await asyncio.to_thread(service.checkpoint)
                assert busy == 0 and logged > AUTO_CHECKPOINT_PAGES and moved == logged
                assert service.checkpoints == 1
                assert journal.query_one("SELECT count(*) AS n FROM events WHERE kind = 'test'")["n"] == 1500
            finally:
                await service.stop()
            assert journal.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == AUTO_CHECKPOINT_PAGES

    asyncio.run(scenario())


def test_the_service_checkpoints_on_its_own_and_a_failure_brings_back_the_checkpoint_on_commit(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        with Journal.open(tmp_path / "j.sqlite", synchronous="NORMAL") as journal:
            service = WalCheckpointer(journal, interval_s=0.01)
            await service.start()
            try:
                write(journal, 50)
                for _ in range(500):  # the service's own rhythm: wait for its next checkpoint
                    if service.checkpoints >= 2:
                        break
                    await asyncio.sleep(0.01)
                assert service.checkpoints >= 2
                assert service._conn is not None
                service._conn.close()  # the service's connection breaks: its next checkpoint fails
                assert service._task is not None
                await asyncio.wait_for(service._task, 5)
                assert "closed" in service.failed
                assert journal.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == AUTO_CHECKPOINT_PAGES
                write(journal, 1)  # the journal itself is unaffected
            finally:
                service._conn = None
                await service.stop()

    asyncio.run(scenario())


def test_a_passive_checkpoint_does_not_wait_for_an_open_write_transaction(tmp_path: Path) -> None:
    """The engine's loop may be inside a transaction when the service checkpoints: neither waits."""
    async def scenario() -> None:
        with Journal.open(tmp_path / "j.sqlite", synchronous="NORMAL") as journal:
            service = WalCheckpointer(journal, interval_s=3600)
            await service.start()
            try:
                write(journal, 20)
                with journal.transaction() as conn:
                    journal.append("test", {"inside": True}, 0, conn=conn)
                    busy, logged, moved = await asyncio.wait_for(asyncio.to_thread(service.checkpoint), 2)
                    assert busy == 0 and moved == logged > 0
            finally:
                await service.stop()

    asyncio.run(scenario())
    assert sqlite3.connect(tmp_path / "j.sqlite").execute("SELECT count(*) FROM events").fetchone()[0] > 20
