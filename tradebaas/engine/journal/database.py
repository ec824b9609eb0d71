"""The journal: SQLite in WAL mode, the engine's only copy of the truth.

Promises:
- every committed transaction survives a crash of the process (WAL + ``synchronous=FULL`` also survives a power
  cut); events and the derived rows they explain are written in one transaction (``journal.transaction()``);
- ``events`` is append-only (enforced by triggers) and ids only grow;
- a journal that cannot be used as it is (not a database, malformed, written by a newer tradebaas, locked by
  another process beyond the busy timeout) raises ``JournalError`` with a message that says what to do. Nothing
  is ever reset, recreated or migrated down silently.

One ``Journal`` owns one ``sqlite3`` connection in autocommit mode; transactions are explicit. The connection may
be used from several threads (a lock serialises them), but the engine uses it from its event loop only.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tradebaas.engine.journal.schema import MIGRATIONS, SCHEMA_VERSION
from tradebaas.errors import JournalError

_SQLITE_MAGIC = b"SQLite format 3\x00"


def now_ms() -> int:
    """The machine clock in Unix ms (for ``wall_ts_ms`` and engine-time events outside market data)."""
    return time.time_ns() // 1_000_000


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(value: Any) -> str:
    """Compact JSON as stored in the journal (dataclasses, enums and paths allowed)."""
    return json.dumps(value, separators=(",", ":"), default=_json_default, allow_nan=False)


@dataclass(frozen=True, slots=True)
class Event:
    """One row of the append-only ``events`` table."""

    id: int
    ts_ms: int
    wall_ts_ms: int
    kind: str
    strategy_id: str | None
    payload: dict[str, Any]


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (trigger bodies contain ';', so ask sqlite where statements end)."""
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buf.strip()[:80]}")
    return statements


def _classify(path: Path, exc: sqlite3.Error) -> JournalError:
    """Turn a sqlite error into a JournalError that tells the user what is wrong and what to do."""
    msg = str(exc).lower()
    if "locked" in msg or "busy" in msg:
        return JournalError(
            f"journal {path} is locked by another process (waited for the busy timeout); "
            "is another engine or tool writing to it?"
        )
    if "not a database" in msg or "malformed" in msg or "corrupt" in msg or "encrypted" in msg:
        return JournalError(
            f"journal {path} is corrupt ({exc}); it was left untouched: move it aside to start a new journal, "
            "or restore a backup"
        )
    if "readonly" in msg or "read-only" in msg:
        return JournalError(f"journal {path} is read-only ({exc})")
    if "unable to open" in msg:
        return JournalError(f"cannot open journal {path} ({exc})")
    return JournalError(f"journal {path}: {exc}")


_INSERT_EVENT = "INSERT INTO events (ts_ms, wall_ts_ms, kind, strategy_id, payload) VALUES (?, ?, ?, ?, ?)"


class Journal:
    """An open journal. Create with ``Journal.open(path)``; close with ``close()`` or a ``with`` block."""

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        self._conn = conn
        self._lock = threading.RLock()
        self._depth = 0  # transaction nesting depth (outermost = BEGIN IMMEDIATE, inner = SAVEPOINT)
        #: Called after an outermost transaction was rolled back: caches of what the journal holds drop it.
        self.rollback_hooks: list[Callable[[], None]] = []

    # -- opening -------------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        busy_timeout_s: float = 5.0,
        synchronous: str = "FULL",
        readonly: bool = False,
        check: bool = False,
    ) -> Journal:
        """Open (creating if missing, unless ``readonly``) and migrate the journal at ``path``.

        ``check`` runs ``PRAGMA quick_check`` (reads every page: do it once at engine start, not per query).
        Raises ``JournalError`` for a corrupt, locked or newer-schema journal.
        """
        path = Path(path)
        if path.exists() and path.stat().st_size > 0:
            with path.open("rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
            if head != _SQLITE_MAGIC:
                raise JournalError(
                    f"journal {path} is corrupt (not an SQLite database); it was left untouched: move it aside "
                    "to start a new journal, or restore a backup"
                )
        elif readonly:
            raise JournalError(f"no journal at {path} (the engine creates it on its first start)")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)

        try:
            if readonly:
                conn = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, timeout=busy_timeout_s, isolation_level=None,
                    check_same_thread=False,
                )
            else:
                conn = sqlite3.connect(
                    str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
                )
        except sqlite3.Error as exc:
            raise _classify(path, exc) from exc
        conn.row_factory = sqlite3.Row
        journal = cls(path, conn, readonly)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if not readonly:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise JournalError(f"journal {path}: cannot switch to WAL mode (got {mode})")
                if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
                    raise ValueError(f"bad synchronous mode {synchronous!r}")
                conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads page 1: detects garbage
            if check:
                result = conn.execute("PRAGMA quick_check").fetchone()[0]
                if result != "ok":
                    raise JournalError(
                        f"journal {path} is corrupt (quick_check: {result}); it was left untouched: move it aside "
                        "to start a new journal, or restore a backup"
                    )
            journal._migrate()
        except JournalError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise _classify(path, exc) from exc
        return journal

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.path} has schema version {version}, newer than this tradebaas understands "
                f"({SCHEMA_VERSION}); upgrade tradebaas (the journal was left untouched)"
            )
        if version == SCHEMA_VERSION:
            return
        if self.readonly:
            raise JournalError(
                f"journal {self.path} has schema version {version} and needs migrating to {SCHEMA_VERSION}; "
                "start the engine once to migrate it"
            )
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the write lock: another process may have migrated meanwhile.
                version = self.schema_version
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _split_sql(MIGRATIONS[target - 1]):
                        self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version = {target}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    # -- basics --------------------------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @property
    def conn(self) -> sqlite3.Connection:
        """The raw connection, for derived-table writes inside ``transaction()`` and for ad-hoc reads."""
        return self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions --------------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit: an event and the derived rows it explains. Nested calls become savepoints.

        Yields the connection; pass it as ``conn=`` to ``append``/``set_meta``/``upsert`` (or execute SQL on it).
        The outermost level takes the write lock at once (``BEGIN IMMEDIATE``) so it never fails half-way with
        SQLITE_BUSY; waiting longer than the busy timeout raises ``JournalError``.
        """
        with self._lock:
            outer = self._depth == 0
            name = f"sp{self._depth}"
            try:
                self._conn.execute("BEGIN IMMEDIATE" if outer else f"SAVEPOINT {name}")
            except sqlite3.Error as exc:
                raise _classify(self.path, exc) from exc
            self._depth += 1
            try:
                yield self._conn
            except BaseException:
                self._depth -= 1
                if outer:
                    self._conn.execute("ROLLBACK")
                    self._rolled_back()
                else:
                    self._conn.execute(f"ROLLBACK TO {name}")
                    self._conn.execute(f"RELEASE {name}")
                raise
            self._depth -= 1
            try:
                self._conn.execute("COMMIT" if outer else f"RELEASE {name}")
            except sqlite3.Error as exc:
                if outer and self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._rolled_back()
                raise _classify(self.path, exc) from exc

    def _rolled_back(self) -> None:
        for hook in self.rollback_hooks:
            hook()

    # -- events --------------------------------------------------------------------------------------------
    def append(
        self,
        kind: str,
        payload: Mapping[str, Any] | None,
        ts_ms: int,
        strategy_id: str | None = None,
        conn: sqlite3.Connection | None = None,
    ) -> int:
        """Append one event and return its id. With ``conn`` it joins that transaction; else it commits alone."""
        if not kind:
            raise ValueError("event kind must not be empty")
        return self.append_encoded(kind, dumps(dict(payload or {})), ts_ms, strategy_id, conn)

    def append_encoded(self, kind: str, payload_json: str, ts_ms: int, strategy_id: str | None = None,
                       conn: sqlite3.Connection | None = None) -> int:
        """``append`` with the payload already encoded (a JSON object, as ``dumps`` writes it): for a caller that
        stores the same JSON in a derived row too and should not encode it twice."""
        if not kind:
            raise ValueError("event kind must not be empty")
        row = (int(ts_ms), now_ms(), kind, strategy_id, payload_json)
        if conn is not None:
            return int(conn.execute(_INSERT_EVENT, row).lastrowid or 0)
        with self.transaction() as c:
            return int(c.execute(_INSERT_EVENT, row).lastrowid or 0)

    def append_many_encoded(self, kind: str, events: list[tuple[int, str | None, str]],
                            conn: sqlite3.Connection) -> int:
        """Append ``(ts_ms, strategy_id, payload_json)`` events of one kind in one ``executemany`` inside the
        caller's transaction. Returns the last event id *before* them: theirs are the ids above it."""
        if not kind:
            raise ValueError("event kind must not be empty")
        before = int(conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])
        wall = now_ms()
        conn.executemany(_INSERT_EVENT, [(int(ts), wall, kind, sid, payload) for ts, sid, payload in events])
        return before

    def events(
        self,
        *,
        after_id: int = 0,
        kind: str | Sequence[str] | None = None,
        strategy_id: str | None = None,
        limit: int | None = 1000,
        newest_first: bool = False,
    ) -> list[Event]:
        """Events with id > ``after_id``, optionally of some kinds and/or one strategy, oldest first by default."""
        where: list[str] = ["id > ?"]
        params: list[Any] = [after_id]
        if kind is not None:
            kinds = [kind] if isinstance(kind, str) else list(kind)
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            params.extend(kinds)
        if strategy_id is not None:
            where.append("strategy_id = ?")
            params.append(strategy_id)
        sql = f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id {'DESC' if newest_first else 'ASC'}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._event(r) for r in self.query(sql, params)]

    def last_event(self, kind: str | None = None, strategy_id: str | None = None) -> Event | None:
        found = self.events(kind=kind, strategy_id=strategy_id, limit=1, newest_first=True)
        return found[0] if found else None

    def last_event_id(self) -> int:
        row = self._conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
        return int(row[0])

    @staticmethod
    def _event(row: Mapping[str, Any]) -> Event:
        return Event(
            id=row["id"], ts_ms=row["ts_ms"], wall_ts_ms=row["wall_ts_ms"], kind=row["kind"],
            strategy_id=row["strategy_id"], payload=json.loads(row["payload"]),
        )

    # -- derived tables and reads --------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        """Rows as plain dicts (JSON columns stay strings; ``loads`` them where needed)."""
        with self._lock:
            try:
                return [dict(r) for r in self._conn.execute(sql, params).fetchall()]
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and "syntax" in str(exc).lower():
                    raise
                raise _classify(self.path, exc) from exc

    def query_one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def upsert(
        self, table: str, row: Mapping[str, Any], key: Sequence[str], conn: sqlite3.Connection,
        keep: Sequence[str] = (),
    ) -> None:
        """Insert ``row`` or update the existing row with the same ``key`` columns (derived tables only).

        Columns in ``keep`` (e.g. ``created_ts_ms``) are written on insert only. Dict/list values are stored as
        JSON. Must run inside ``transaction()`` (pass its ``conn``).
        """
        if table == "events":
            raise ValueError("events are append-only: use append()")
        cols = list(row)
        values = [dumps(v) if isinstance(v, dict | list) else v for v in row.values()]
        updates = [c for c in cols if c not in key and c not in keep]
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        if updates:
            sql += f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET " + ", ".join(
                f"{c} = excluded.{c}" for c in updates
            )
        else:
            sql += f" ON CONFLICT ({', '.join(key)}) DO NOTHING"
        conn.execute(sql, values)

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.query_one("SELECT value FROM meta WHERE key = ?", (key,))
        return default if row is None else json.loads(row["value"])

    def set_meta(self, key: str, value: Any, conn: sqlite3.Connection | None = None) -> None:
        sql = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        if conn is not None:
            conn.execute(sql, (key, dumps(value)))
            return
        with self.transaction() as c:
            c.execute(sql, (key, dumps(value)))

    def strategy_counts(self) -> dict[str, int]:
        """``{total, running}`` for engine.status (running = actual state running)."""
        row = self.query_one(
            "SELECT count(*) AS total, coalesce(sum(state = 'running'), 0) AS running FROM strategies"
        )
        assert row is not None
        return {"total": int(row["total"]), "running": int(row["running"])}
