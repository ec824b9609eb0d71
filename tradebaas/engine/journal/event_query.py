"""The read-only, filtered view of the journal's append-only events (``journal.events``, the notification tail).

Filters are by kind (exact names, or a prefix ending in ``*``), time (exchange ``ts_ms`` or machine ``wall_ts_ms``),
strategy, and paged by event id. Kinds are checked before they reach SQL (``check_kinds``) and passed as
parameters, never as SQL text.
"""

from __future__ import annotations

import json
from typing import Any

from tradebaas.engine.journal.database import Journal

EVENTS_MAX_LIMIT = 10_000


def _kinds_sql(kinds: list[str]) -> tuple[str, list[str]]:
    """``kind IN (..) OR kind GLOB 'prefix*'``: exact names, or a prefix ending in ``*``."""
    exact = [k for k in kinds if not k.endswith("*")]
    prefixes = [k[:-1] for k in kinds if k.endswith("*")]
    parts, params = [], []
    if exact:
        parts.append(f"kind IN ({','.join('?' * len(exact))})")
        params += exact
    for p in prefixes:
        parts.append("kind GLOB ?")
        params.append(p + "*")
    return "(" + " OR ".join(parts) + ")", params


def check_kinds(value: Any) -> str | None:
    """The ``kinds`` filter of ``journal.events``: event names or prefixes, nothing SQL could read as syntax."""
    if not all(isinstance(k, str) and k and all(c.isalnum() or c in "._-" for c in k.rstrip("*"))
               and "*" not in k.rstrip("*") for k in value):
        return "kinds are event names, or a prefix ending in '*' (e.g. \"reconcile*\")"
    return None


def query_events(journal: Journal, kinds: list[str] | None = None, since: int | None = None,
                 until: int | None = None, strategy: str | None = None, after_id: int = 0, limit: int = 1000,
                 newest_first: bool = False, wall_clock: bool = False) -> list[dict[str, Any]]:
    """The journal's events filtered by kind (names or ``prefix*``), time, strategy; paged by id. Read-only."""
    where: list[str] = ["id > ?"]
    args: list[Any] = [after_id]
    if kinds:
        clause, kparams = _kinds_sql(kinds)
        where.append(clause)
        args += kparams
    column = "wall_ts_ms" if wall_clock else "ts_ms"
    if since is not None:
        where.append(f"{column} >= ?")
        args.append(since)
    if until is not None:
        where.append(f"{column} < ?")
        args.append(until)
    if strategy is not None:
        where.append("strategy_id = ?")
        args.append(strategy)
    rows = journal.query(
        f"SELECT id, ts_ms, wall_ts_ms, kind, strategy_id, payload FROM events WHERE {' AND '.join(where)} "
        f"ORDER BY id {'DESC' if newest_first else 'ASC'} LIMIT {int(limit)}", args)
    for r in rows:
        r["payload"] = json.loads(r["payload"])
    return rows
