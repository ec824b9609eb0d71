"""Quiet decisions of one market event: one commit, pushed after it, in order; a failure pushes nothing."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tradebaas.engine.journal.database import Journal
from tradebaas.engine.live.decisions import DecisionBatch


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal.open(tmp_path / "journal.sqlite")
    yield j
    j.close()


def write(journal: Journal, n: int, seen: list[int]) -> Any:
    def w(conn: sqlite3.Connection) -> None:
        seen.append(journal.conn.in_transaction)
        journal.append("decision", {"n": n}, ts_ms=n, conn=conn)
    return w


def test_the_writes_commit_in_one_transaction_then_the_pushes_go_out_with_their_lag(journal: Journal) -> None:
    batch, in_tx, pushed = DecisionBatch(), [], []
    commits = []
    journal.conn.set_trace_callback(lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT" else None)

    def publish(channel: str, data: dict[str, Any]) -> None:
        assert [e.payload["n"] for e in journal.events(kind="decision")] == [0, 1, 2]  # committed before any push
        pushed.append((channel, data))

    arrived = time.perf_counter()
    for n in range(3):
        batch.add(write(journal, n, in_tx), f"strategy.s{n}", {"type": "decision", "n": n}, arrived if n else None)
    assert len(batch) == 3 and journal.events() == [] and pushed == []
    assert batch.commit(journal, publish) == 3
    assert len(commits) == 1 and in_tx == [True, True, True]
    assert [c for c, _ in pushed] == ["strategy.s0", "strategy.s1", "strategy.s2"]
    assert "lag_ms" not in pushed[0][1] and all(d["lag_ms"] >= 0 for _, d in pushed[1:])
    assert len(batch) == 0 and batch.commit(journal, publish) == 0 and len(commits) == 1


def test_a_failed_write_rolls_back_the_batch_and_pushes_nothing(journal: Journal) -> None:
    batch, seen, pushed = DecisionBatch(), [], []

    def broken(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    batch.add(write(journal, 1, seen), "strategy.a", {}, None)
    batch.add(broken, "strategy.b", {}, None)
    with pytest.raises(sqlite3.OperationalError):
        batch.commit(journal, lambda c, d: pushed.append(c))
    assert journal.events() == [] and pushed == [] and len(batch) == 0
