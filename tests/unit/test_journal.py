"""The journal as a specification: WAL, versioned schema, append-only events, atomic derived writes, loud errors."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tradebaas.engine.journal.database import Journal
from tradebaas.engine.journal.schema import SCHEMA_VERSION
from tradebaas.errors import JournalError, UserError


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal.open(tmp_path / "journal.sqlite")
    yield j
    j.close()


def test_new_journal_is_wal_at_current_schema_with_all_tables(journal: Journal) -> None:
    assert journal.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal.schema_version == SCHEMA_VERSION
    tables = {r["name"] for r in journal.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"events", "meta", "strategies", "decisions", "orders", "fills", "trades", "daily_counters",
            "strategy_runtime"} <= tables


def test_append_returns_growing_ids_and_events_round_trip(journal: Journal) -> None:
    a = journal.append("engine.started", {"pid": 1}, ts_ms=1000)
    b = journal.append("decision", {"signal": "long", "scores": [1.5, 2]}, ts_ms=2000, strategy_id="s1")
    assert b > a
    evs = journal.events()
    assert [e.kind for e in evs] == ["engine.started", "decision"]
    assert evs[1].payload == {"signal": "long", "scores": [1.5, 2]}
    assert evs[1].strategy_id == "s1" and evs[1].ts_ms == 2000 and evs[1].wall_ts_ms > 0
    assert journal.events(kind="decision")[0].id == b
    assert journal.events(strategy_id="s1", after_id=b) == []
    assert journal.last_event().id == b == journal.last_event_id()


def test_event_and_derived_rows_commit_together_or_not_at_all(journal: Journal) -> None:
    with pytest.raises(RuntimeError):
        with journal.transaction() as conn:
            journal.append("strategy.created", {"id": "s1"}, ts_ms=1, strategy_id="s1", conn=conn)
            journal.upsert("strategies", {"id": "s1", "name": "razor", "instrument": "BTC-PERPETUAL",
                                          "created_ts_ms": 1, "updated_ts_ms": 1}, key=["id"], conn=conn)
            raise RuntimeError("crash between writes")
    assert journal.events() == [] and journal.query("SELECT * FROM strategies") == []
    with journal.transaction() as conn:
        journal.append("strategy.created", {"id": "s1"}, ts_ms=1, strategy_id="s1", conn=conn)
        journal.upsert("strategies", {"id": "s1", "name": "razor", "instrument": "BTC-PERPETUAL",
                                      "config": {"a": 1}, "created_ts_ms": 1, "updated_ts_ms": 1},
                       key=["id"], conn=conn)
    assert len(journal.events()) == 1
    assert journal.query_one("SELECT config FROM strategies")["config"] == '{"a":1}'


def test_nested_transaction_rolls_back_only_the_inner_part(journal: Journal) -> None:
    with journal.transaction() as conn:
        journal.append("outer", {}, ts_ms=1, conn=conn)
        with pytest.raises(ValueError):
            with journal.transaction() as inner:
                journal.append("inner", {}, ts_ms=2, conn=inner)
                raise ValueError
    assert [e.kind for e in journal.events()] == ["outer"]


def test_events_are_append_only(journal: Journal) -> None:
    journal.append("x", {}, ts_ms=1)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        journal.conn.execute("UPDATE events SET kind = 'y'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        journal.conn.execute("DELETE FROM events")
    with pytest.raises(ValueError):
        with journal.transaction() as conn:
            journal.upsert("events", {"id": 1}, key=["id"], conn=conn)


def test_applying_the_same_fill_twice_is_a_no_op(journal: Journal) -> None:
    fill = {"trade_id": "T1", "order_id": "O1", "instrument": "BTC-PERPETUAL", "side": "buy", "amount": 10.0,
            "price": 50000.0, "ts_ms": 5}
    for _ in range(2):
        with journal.transaction() as conn:
            conn.execute(
                f"INSERT OR IGNORE INTO fills ({', '.join(fill)}) VALUES ({', '.join('?' * len(fill))})",
                list(fill.values()),
            )
    assert journal.query_one("SELECT count(*) AS n FROM fills")["n"] == 1


def test_one_entry_per_signal_is_enforced(journal: Journal) -> None:
    row = {"strategy_id": "s1", "instrument": "BTC-PERPETUAL", "direction": "long", "state": "pending_entry",
           "signal_ts_ms": 60_000, "created_ts_ms": 1, "updated_ts_ms": 1}
    with journal.transaction() as conn:
        journal.upsert("trades", {"trade_id": "t1", **row}, key=["trade_id"], conn=conn)
    with pytest.raises(sqlite3.IntegrityError):
        with journal.transaction() as conn:
            journal.upsert("trades", {"trade_id": "t2", **row}, key=["trade_id"], conn=conn)


def test_meta_and_strategy_counts(journal: Journal) -> None:
    journal.set_meta("exchange", {"name": "sim"})
    assert journal.get_meta("exchange") == {"name": "sim"}
    assert journal.get_meta("missing", 7) == 7
    with journal.transaction() as conn:
        for sid, state in [("a", "running"), ("b", "stopped")]:
            journal.upsert("strategies", {"id": sid, "name": "razor", "instrument": "X", "state": state,
                                          "created_ts_ms": 1, "updated_ts_ms": 1}, key=["id"], conn=conn)
    assert journal.strategy_counts() == {"total": 2, "running": 1}


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal.open(path) as j:
        j.append("a", {"n": 1}, ts_ms=1)
    with Journal.open(path) as j:
        assert [e.payload for e in j.events()] == [{"n": 1}]
    with Journal.open(path, readonly=True) as j:
        assert len(j.events()) == 1


def test_journal_error_is_a_user_error_for_the_cli() -> None:
    assert issubclass(JournalError, UserError) and JournalError.exit_code != 0


def test_garbage_file_is_reported_corrupt_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"this is not a database at all" * 100)
    before = path.read_bytes()
    with pytest.raises(JournalError, match="corrupt"):
        Journal.open(path)
    assert path.read_bytes() == before


def test_damaged_pages_are_reported_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with Journal.open(path) as j:
        for i in range(500):
            j.append("e", {"i": i, "pad": "x" * 200}, ts_ms=i)
        j.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # smash the schema page after the header
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError, match="corrupt"):
        Journal.open(path, check=True)


def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with Journal.open(path) as j:
        j.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(JournalError, match="newer"):
        Journal.open(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    conn.close()


def test_locked_journal_gives_a_clear_error_after_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal.open(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sqlite3, sys
            c = sqlite3.connect({str(path)!r}, isolation_level=None)
            c.execute("PRAGMA locking_mode = EXCLUSIVE")
            c.execute("BEGIN EXCLUSIVE")
            c.execute("INSERT INTO meta VALUES ('k', '1')")
            print("locked", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(JournalError, match="locked"):
            Journal.open(path, busy_timeout_s=0.3)
    finally:
        holder.kill()
        holder.wait()


def test_readonly_open_of_missing_journal_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal"):
        Journal.open(tmp_path / "none.sqlite", readonly=True)
