"""The live loop's reads and writes of the journal: strategies, trades, orders, fills, decisions, runtime.

Every write here takes the transaction's connection and appends the event that explains it in the same
transaction (``journal.transaction()``), so the derived tables never run ahead of or behind the event log. The
RPC answers (docs/rpc.md shapes) are built from these tables too: there is no other copy of the truth.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from tradebaas.domain import Fill, Order, StrategyState
from tradebaas.engine.core.labels import parse_label
from tradebaas.engine.core.reconcile import FillSignature, JournalView, StrategyView, fill_signature
from tradebaas.engine.core.tradebook import Trade, TradeState
from tradebaas.engine.journal.database import Journal, dumps, now_ms
from tradebaas.engine.journal.rows import Segment, StrategyRow, VersionRow
from tradebaas.strategies.base import PositionView, StrategyContext

#: The name of a strategy known only from the exchange's labels (``create_orphan``).
ORPHAN = "orphan"
OPEN_TRADE_STATES = (TradeState.PENDING_ENTRY.value, TradeState.OPEN.value, TradeState.CLOSING.value)


class Store:
    """Typed access to the journal's live-loop tables."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        #: What ``save_context`` last wrote per strategy (cleared when a transaction rolls back): a quiet decision
        #: on an unchanged context writes nothing for it (issue 15: two statements fewer per decision).
        self._saved_contexts: dict[str, tuple[int, int, int, int]] = {}
        journal.rollback_hooks.append(self._saved_contexts.clear)

    # -- strategies ----------------------------------------------------------------------------------------
    def strategies(self) -> list[StrategyRow]:
        return [StrategyRow.from_row(r) for r in self.journal.query("SELECT * FROM strategies ORDER BY created_ts_ms, id")]

    def strategy(self, strategy_id: str) -> StrategyRow | None:
        row = self.journal.query_one("SELECT * FROM strategies WHERE id = ?", (strategy_id,))
        return None if row is None else StrategyRow.from_row(row)

    def create_strategy(self, strategy_id: str, name: str, instrument: str, config: dict[str, Any], ts_ms: int,
                        code_version: str = "", from_ts_ms: int = 0) -> None:
        """A new strategy (config version 1) and its first segment, deciding from the candle at ``from_ts_ms``."""
        with self.journal.transaction() as conn:
            conn.execute(
                "INSERT INTO strategies (id, name, instrument, config, desired_state, state, state_reason,"
                " created_ts_ms, started_ts_ms, updated_ts_ms, code_version, config_version)"
                " VALUES (?, ?, ?, ?, 'running', 'starting', '', ?, ?, ?, ?, 1)",
                (strategy_id, name, instrument, json.dumps(config), ts_ms, ts_ms, ts_ms, code_version),
            )
            self.journal.append(
                "strategy.created", {"name": name, "instrument": instrument, "config": config,
                                     "code_version": code_version, "config_version": 1}, ts_ms, strategy_id, conn
            )
            self._add_segment(conn, strategy_id, code_version, 1, config, False, from_ts_ms)

    def is_fresh(self) -> bool:
        """True for a journal that never had a strategy or a trade (new, emptied, or replaced)."""
        return self.journal.query_one("SELECT 1 FROM strategies LIMIT 1") is None and \
            self.journal.query_one("SELECT 1 FROM trades LIMIT 1") is None

    def create_orphan(self, strategy_id: str, instrument: str, note: str, ts_ms: int) -> None:
        """A strategy id the exchange's labels name but this journal does not know: kept stopped and waiting for a
        person (``needs_attention``, ``note`` says how to fix it), so reconciliation treats its orders and positions
        as ours (its positions stay protected) without ever trading for it."""
        with self.journal.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO strategies (id, name, instrument, config, desired_state, state, state_reason,"
                " created_ts_ms, updated_ts_ms) VALUES (?, ?, ?, ?, 'stopped', 'needs_attention', ?, ?, ?)",
                (strategy_id, ORPHAN, instrument, json.dumps({"note": note}), note, ts_ms, ts_ms))
            self.journal.append("strategy.orphan", {"instrument": instrument, "note": note}, ts_ms, strategy_id, conn)

    def change_strategy(self, strategy_id: str, *, code_version: str, config: dict[str, Any], config_version: int,
                        apply_to_open: bool, from_ts_ms: int, ts_ms: int) -> None:
        """A new code version (``strategy.upgrade``) or config version (``strategy.set``) from the candle at
        ``from_ts_ms`` on: the strategy row, its segment and the event, in one transaction."""
        with self.journal.transaction() as conn:
            conn.execute("UPDATE strategies SET code_version = ?, config = ?, config_version = ?, updated_ts_ms = ?"
                         " WHERE id = ?", (code_version, json.dumps(config), config_version, ts_ms, strategy_id))
            self.journal.append("strategy.changed", {
                "code_version": code_version, "config_version": config_version, "config": config,
                "apply_to_open": apply_to_open, "from_ts_ms": from_ts_ms}, ts_ms, strategy_id, conn)
            self._add_segment(conn, strategy_id, code_version, config_version, config, apply_to_open, from_ts_ms)

    def _add_segment(self, conn: sqlite3.Connection, strategy_id: str, code_version: str, config_version: int,
                     config: dict[str, Any], apply_to_open: bool, from_ts_ms: int) -> None:
        seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM strategy_segments WHERE strategy_id = ?",
                           (strategy_id,)).fetchone()[0]
        conn.execute("INSERT INTO strategy_segments (strategy_id, seq, code_version, config_version, config,"
                     " apply_to_open, from_ts_ms, wall_ts_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (strategy_id, seq, code_version, config_version, json.dumps(config), int(apply_to_open),
                      from_ts_ms, now_ms()))

    def restart_segment(self, strategy_id: str, from_ts_ms: int) -> None:
        """The strategy was (re)started and warmed up afresh from the candle at ``from_ts_ms`` on, with its current
        versions: a segment of its own, because a backtest must re-warm there too to decide the same."""
        row = self.strategy(strategy_id)
        last = self.segments(strategy_id)
        if row is None or (last and last[-1].from_ts_ms >= from_ts_ms):
            return
        with self.journal.transaction() as conn:
            self._add_segment(conn, strategy_id, row.code_version, row.config_version, row.config, False, from_ts_ms)

    def segments(self, strategy_id: str) -> list[Segment]:
        """What the strategy decided with, in order (docs/strategies.md "Versions")."""
        return [Segment(int(r["seq"]), r["code_version"], int(r["config_version"]), json.loads(r["config"]),
                        bool(r["apply_to_open"]), int(r["from_ts_ms"]))
                for r in self.journal.query("SELECT * FROM strategy_segments WHERE strategy_id = ? ORDER BY seq",
                                            (strategy_id,))]

    # -- versions of strategy code -------------------------------------------------------------------------
    def save_version(self, row: VersionRow) -> bool:
        """Record a stored version (and journal ``strategy.version``); False when it was known already."""
        with self.journal.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO strategy_versions (version, name, class_name, source_kind, origin,"
                " warmup_candles, vetting, created_ts_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (row.version, row.name, row.class_name, row.source_kind, row.origin, row.warmup_candles,
                 json.dumps(row.vetting), row.created_ts_ms))
            if cur.rowcount:
                self.journal.append("strategy.version", {
                    "version": row.version, "name": row.name, "class_name": row.class_name,
                    "source_kind": row.source_kind, "origin": row.origin, "warmup_candles": row.warmup_candles,
                    "vetting": row.vetting}, row.created_ts_ms, None, conn)
        return bool(cur.rowcount)

    def version(self, version: str) -> VersionRow | None:
        row = self.journal.query_one("SELECT * FROM strategy_versions WHERE version = ?", (version,))
        return None if row is None else VersionRow.from_row(row)

    def versions(self, name: str | None = None) -> list[VersionRow]:
        """Stored versions (of ``name``), oldest first."""
        if name is None:
            rows = self.journal.query("SELECT * FROM strategy_versions ORDER BY created_ts_ms, version")
        else:
            rows = self.journal.query("SELECT * FROM strategy_versions WHERE name = ? ORDER BY created_ts_ms, version",
                                      (name,))
        return [VersionRow.from_row(r) for r in rows]

    def versions_matching(self, prefix: str) -> list[VersionRow]:
        """Stored versions whose hex starts with ``prefix`` (a version may be named by a unique prefix)."""
        return [VersionRow.from_row(r) for r in self.journal.query(
            "SELECT * FROM strategy_versions WHERE version >= ? AND version < ? ORDER BY version",
            (prefix, prefix + "\uffff"))]

    def set_strategy_state(
        self,
        strategy_id: str,
        state: StrategyState,
        reason: str = "",
        *,
        desired: StrategyState | None = None,
        ts_ms: int | None = None,
        conn: sqlite3.Connection | None = None,
        error: str | None = None,
    ) -> None:
        """Set the strategy's state (and desired state); ``error`` is the traceback of a strategy in ``error``
        (kept until the strategy leaves that state)."""
        ts = ts_ms if ts_ms is not None else now_ms()

        def write(c: sqlite3.Connection) -> None:
            sets = ["state = ?", "state_reason = ?", "updated_ts_ms = ?", "error = ?"]
            args: list[Any] = [state.value, reason, ts, error if state is StrategyState.ERROR else None]
            if desired is not None:
                sets.append("desired_state = ?")
                args.append(desired.value)
            if state is StrategyState.RUNNING:
                sets.append("started_ts_ms = coalesce(started_ts_ms, ?)")
                args.append(ts)
            if state in (StrategyState.STOPPED, StrategyState.NEEDS_ATTENTION, StrategyState.ERROR):
                sets.append("stopped_ts_ms = ?")
                args.append(ts)
            c.execute(f"UPDATE strategies SET {', '.join(sets)} WHERE id = ?", (*args, strategy_id))
            payload: dict[str, Any] = {"state": state.value, "reason": reason}
            if error and state is StrategyState.ERROR:
                payload["error"] = error
            if desired is not None:
                payload["desired_state"] = desired.value
            self.journal.append("strategy.state", payload, ts, strategy_id, c)

        if conn is not None:
            write(conn)
        else:
            with self.journal.transaction() as c:
                write(c)

    # -- runtime (the strategy context that must survive a restart) ----------------------------------------
    def load_context(self, strategy_id: str, context: StrategyContext) -> None:
        row = self.journal.query_one("SELECT * FROM strategy_runtime WHERE strategy_id = ?", (strategy_id,))
        if row is None:
            return
        data = json.loads(row["state"])
        context.trades_today = int(data.get("trades_today", 0))
        context.trading_day = int(data.get("trading_day", -1))
        context.last_close_ts_ms = int(data.get("last_close_ts_ms", 0))
        context.cooldown_until_ms = int(row["cooldown_until_ms"])

    def save_context(self, strategy_id: str, context: StrategyContext, conn: sqlite3.Connection,
                     last_candle_ts_ms: int = 0) -> None:
        """Persist the parts of ``context`` that survive a restart (cooldown, the day's entries, the last close),
        unless they are what this store last wrote for the strategy (``last_candle_ts_ms``, the candle decided on
        when they were last written, is not a reason to write them)."""
        saved = (context.cooldown_until_ms, context.trades_today, context.trading_day, context.last_close_ts_ms)
        if self._saved_contexts.get(strategy_id) == saved:
            return
        self._saved_contexts[strategy_id] = saved
        state = {
            "trades_today": context.trades_today,
            "trading_day": context.trading_day,
            "last_close_ts_ms": context.last_close_ts_ms,
        }
        conn.execute(
            "INSERT INTO strategy_runtime (strategy_id, cooldown_until_ms, last_candle_ts_ms, state, updated_ts_ms)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (strategy_id) DO UPDATE SET cooldown_until_ms = excluded.cooldown_until_ms,"
            " last_candle_ts_ms = max(strategy_runtime.last_candle_ts_ms, excluded.last_candle_ts_ms),"
            " state = excluded.state, updated_ts_ms = excluded.updated_ts_ms",
            (strategy_id, context.cooldown_until_ms, last_candle_ts_ms, json.dumps(state), now_ms()),
        )
        if context.trading_day >= 0:
            day = _utc_day(context.trading_day)
            conn.execute(
                "INSERT INTO daily_counters (strategy_id, utc_day, entries) VALUES (?, ?, ?)"
                " ON CONFLICT (strategy_id, utc_day) DO UPDATE SET entries = excluded.entries",
                (strategy_id, day, context.trades_today),
            )

    # -- trades --------------------------------------------------------------------------------------------
    def save_trade(self, trade: Trade, conn: sqlite3.Connection, event: str | None = "trade") -> None:
        """Upsert the trade row (queryable columns + the whole record as JSON) and journal it."""
        ts = now_ms()
        record = trade.to_dict()
        data = dumps(record)  # encoded once: the row's copy and the event's (an entry commits this before sending)
        row = {
            "trade_id": trade.trade_id,
            "strategy_id": trade.strategy_id,
            "instrument": trade.instrument,
            "direction": trade.direction.value,
            "state": trade.state.value,
            "signal_ts_ms": trade.signal_ts_ms,
            "amount": trade.entry_filled or trade.amount,
            "entry_price": trade.entry_price or None,
            "entry_ts_ms": trade.entry_ts_ms or None,
            "exit_price": trade.exit_price or None,
            "exit_ts_ms": trade.exit_ts_ms or None,
            "stop_price": trade.stop_price,
            "take_price": trade.take_price,
            "break_even_done": int(trade.break_even_done),
            "pnl": trade.pnl,
            "fees": trade.fees,
            "currency": trade.currency,
            "exit_reason": trade.exit_reason,
            "created_ts_ms": ts,
            "updated_ts_ms": ts,
            "data": data,
            "code_version": trade.code_version,
            "config_version": trade.config_version,
        }
        self.journal.upsert("trades", row, ("trade_id",), conn, keep=("created_ts_ms",))
        if event:
            self.journal.append_encoded(event, f'{{"trade":{data}}}', trade.last_fill_ts_ms or ts, trade.strategy_id,
                                        conn)

    def next_trade_seq(self) -> int:
        """A trade number never used before in this journal (trade ids must not repeat across restarts)."""
        row = self.journal.query_one("SELECT coalesce(max(rowid), 0) AS n FROM trades")  # O(1), never reused
        return int(row["n"]) + 1 if row else 1

    def trade(self, trade_id: str) -> Trade | None:
        row = self.journal.query_one("SELECT data FROM trades WHERE trade_id = ?", (trade_id,))
        return None if row is None else Trade.from_dict(json.loads(row["data"]))

    def open_trades(self, strategy_id: str | None = None) -> list[Trade]:
        sql = f"SELECT data FROM trades WHERE state IN ({', '.join('?' * len(OPEN_TRADE_STATES))})"
        args: list[Any] = list(OPEN_TRADE_STATES)
        if strategy_id is not None:
            sql += " AND strategy_id = ?"
            args.append(strategy_id)
        return [Trade.from_dict(json.loads(r["data"])) for r in self.journal.query(sql + " ORDER BY created_ts_ms", args)]

    def has_open_trade(self, strategy_id: str) -> bool:
        """Whether ``strategy_id`` has a trade open or pending: the check before an entry, one index lookup (no
        trade is decoded on the way to the exchange)."""
        return self._any_open_trade("strategy_id", strategy_id)

    def open_trades_on(self, instrument: str) -> bool:
        """Whether any strategy of ours has a trade open (or pending) on ``instrument``."""
        return self._any_open_trade("instrument", instrument)

    def _any_open_trade(self, column: str, value: str) -> bool:
        sql = f"SELECT 1 FROM trades WHERE {column} = ? AND state IN ({', '.join('?' * len(OPEN_TRADE_STATES))}) LIMIT 1"
        return self.journal.query_one(sql, (value, *OPEN_TRADE_STATES)) is not None

    def trade_rows(self, strategy_id: str | None = None, since: int | None = None, until: int | None = None) -> list[dict[str, Any]]:
        where: list[str] = ["1=1"]
        args: list[Any] = []
        if strategy_id:
            where.append("t.strategy_id = ?")
            args.append(strategy_id)
        if since is not None:
            where.append("coalesce(t.exit_ts_ms, t.entry_ts_ms, t.created_ts_ms) >= ?")
            args.append(since)
        if until is not None:
            where.append("coalesce(t.entry_ts_ms, t.created_ts_ms) <= ?")
            args.append(until)
        rows = self.journal.query(
            "SELECT t.*, s.name AS strategy_name FROM trades t LEFT JOIN strategies s ON s.id = t.strategy_id"
            f" WHERE {' AND '.join(where)} ORDER BY coalesce(t.entry_ts_ms, t.created_ts_ms), t.trade_id", args
        )
        return [trade_row(r) for r in rows]

    # -- fills and orders ----------------------------------------------------------------------------------
    def has_fill(self, fill_id: str) -> bool:
        return self.journal.query_one("SELECT 1 FROM fills WHERE trade_id = ?", (fill_id,)) is not None

    def save_fill(self, fill: Fill, conn: sqlite3.Connection) -> bool:
        """Journal one exchange fill; False (and nothing written) when it was journaled before."""
        parsed = parse_label(fill.label)
        cur = conn.execute(
            "INSERT OR IGNORE INTO fills (trade_id, order_id, strategy_id, strategy_trade_id, role, label, instrument,"
            " side, amount, price, fee, fee_currency, liquidity, reduce_only, trade_seq, ts_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                fill.trade_id, fill.order_id, parsed.strategy_id if parsed else None,
                parsed.trade_id if parsed else None, parsed.role.value if parsed else None, fill.label,
                fill.instrument, fill.side.value, fill.amount, fill.price, fill.fee, fill.fee_currency,
                fill.liquidity.value, int(fill.reduce_only), fill.trade_seq, fill.ts_ms,
            ),
        )
        if cur.rowcount == 0:
            return False
        self.journal.append("fill", _fill_payload(fill), fill.ts_ms, parsed.strategy_id if parsed else None, conn)
        if parsed is not None:
            conn.execute(
                "UPDATE strategy_runtime SET last_fill_ts_ms = max(last_fill_ts_ms, ?) WHERE strategy_id = ?",
                (fill.ts_ms, parsed.strategy_id),
            )
        return True

    def fill_signatures(self, fill_ids: Iterable[str]) -> dict[str, FillSignature]:
        """What the journal holds under these exchange fill ids (to recognise an id the exchange reused)."""
        ids = sorted(set(fill_ids))
        out: dict[str, FillSignature] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for r in self.journal.query(
                    "SELECT trade_id, order_id, label, instrument, side, amount, price FROM fills WHERE trade_id IN "
                    f"({','.join('?' * len(chunk))})", chunk):
                out[r["trade_id"]] = (r["order_id"], r["label"], r["instrument"], r["side"], float(r["amount"]),
                                      float(r["price"]))
        return out

    def fill_conflict(self, fill: Fill) -> FillSignature | None:
        """The journaled fill under ``fill``'s id when it is another fill (a reused id), else None."""
        held = self.fill_signatures([fill.trade_id]).get(fill.trade_id)
        return held if held is not None and held != fill_signature(fill) else None

    def record_anomaly(self, kind: str, detail: dict[str, Any], strategy_id: str | None = None) -> None:
        """Journal something the exchange did that cannot be right (a reused id, ...): never silently ignored."""
        self.journal.append("anomaly", {"kind": kind, **detail}, now_ms(), strategy_id)

    def last_fill_ts_by_instrument(self) -> dict[str, int]:
        """The newest journaled fill of ours per instrument (where each instrument's fill query starts)."""
        return {r["instrument"]: int(r["ts"]) for r in self.journal.query(
            "SELECT instrument, max(ts_ms) AS ts FROM fills WHERE strategy_id IS NOT NULL GROUP BY instrument")}

    def journaled_fill_ids(self, since_ts_ms: int) -> frozenset[str]:
        return frozenset(r["trade_id"] for r in self.journal.query("SELECT trade_id FROM fills WHERE ts_ms >= ?", (since_ts_ms,)))

    def last_fill_ts_ms(self) -> int:
        row = self.journal.query_one("SELECT coalesce(max(ts_ms), 0) AS ts FROM fills WHERE strategy_id IS NOT NULL")
        return int(row["ts"]) if row else 0

    def save_order(self, order: Order, conn: sqlite3.Connection, journal_event: bool = True) -> dict[str, Any]:
        parsed = parse_label(order.label)
        ts = order.ts_ms or now_ms()
        row: dict[str, Any] = {
            "order_id": order.order_id,
            "strategy_id": parsed.strategy_id if parsed else None,
            "trade_id": parsed.trade_id if parsed else None,
            "role": parsed.role.value if parsed else None,
            "label": order.label,
            "instrument": order.instrument,
            "state": order.state.value,
            "type": order.order_type.value,
            "side": order.side.value,
            "amount": order.amount,
            "filled_amount": order.filled_amount,
            "price": order.price,
            "trigger_price": order.trigger_price,
            "average_price": order.average_price,
            "reduce_only": int(order.reduce_only),
            "created_ts_ms": ts,
            "updated_ts_ms": now_ms(),
        }
        self.journal.upsert("orders", row, ("order_id",), conn, keep=("created_ts_ms",))
        if journal_event:
            self.journal.append("order", order_row(row), ts, row["strategy_id"], conn)
        return order_row(row)

    def order_rows(self, open_only: bool = True) -> list[dict[str, Any]]:
        sql = "SELECT * FROM orders"
        if open_only:
            sql += " WHERE state IN ('open', 'untriggered', 'triggered', 'unknown')"  # unknown: possibly live
        return [order_row(r) for r in self.journal.query(sql + " ORDER BY created_ts_ms, order_id")]

    # -- decisions -----------------------------------------------------------------------------------------
    def save_decision(self, strategy_id: str, decision: dict[str, Any], action: str, conn: sqlite3.Connection) -> None:
        """The decision event, and its row in ``decisions`` with the columns cut out of the event's payload by
        SQLite (the record is encoded once)."""
        event_id = self.journal.append_encoded("decision", dumps(decision), decision["ts_ms"], strategy_id, conn)
        conn.execute(_DERIVE_DECISIONS, (event_id - 1, action))

    def save_quiet_decisions(self, decisions: list[tuple[str, dict[str, Any]]], conn: sqlite3.Connection) -> None:
        """``save_decision`` for many decisions without intents (strategy id, record) at once: the events in one
        ``executemany``, their ``decisions`` rows in one statement (issue 15: on every candle close every
        strategy's decision is journaled; one statement per row cost more than the deciding)."""
        if not decisions:
            return
        before = self.journal.append_many_encoded(
            "decision", [(record["ts_ms"], strategy_id, dumps(record)) for strategy_id, record in decisions], conn)
        conn.execute(_DERIVE_DECISIONS, (before, ""))

    def last_decision(self, strategy_id: str) -> dict[str, Any] | None:
        event = self.journal.last_event("decision", strategy_id)
        return None if event is None else event.payload

    def decision_count(self, strategy_id: str) -> int:
        row = self.journal.query_one("SELECT count(*) AS n FROM decisions WHERE strategy_id = ?", (strategy_id,))
        return int(row["n"]) if row else 0

    # -- reconciliation input ------------------------------------------------------------------------------
    def journal_view(self, fills_since_ts_ms: int, reported_fill_ids: Iterable[str] = (),
                     uses_brackets: Callable[[StrategyRow], bool] | None = None) -> JournalView:
        """What reconciliation needs of the journal. ``reported_fill_ids``: the fills the exchange reported, whose
        journaled signatures let the plan recognise a reused id; ``uses_brackets(row)``: the strategy's
        declaration (default: it uses exchange brackets)."""
        strategies = []
        for s in self.strategies():
            strategies.append(
                StrategyView(
                    strategy_id=s.id, instrument=s.instrument, desired=s.desired_state, state=s.state,
                    state_reason=s.state_reason, sl_pct=_float_or_none(s.config.get("stopLossPercent")),
                    tp_pct=_float_or_none(s.config.get("takeProfitPercent")),
                    uses_brackets=True if uses_brackets is None else uses_brackets(s),
                    note=str(s.config.get("note", "")) if s.name == ORPHAN else "",
                )
            )
        signatures = self.fill_signatures(reported_fill_ids)
        return JournalView(
            strategies=tuple(strategies),
            trades=tuple(self.open_trades()),
            journaled_fill_ids=self.journaled_fill_ids(fills_since_ts_ms) | frozenset(signatures),
            last_fill_ts_ms=fills_since_ts_ms,
            fill_signatures=signatures,
        )

    # -- answers -------------------------------------------------------------------------------------------
    def pnl(self, strategy_id: str) -> dict[str, float]:
        row = self.journal.query_one(
            "SELECT coalesce(sum(pnl), 0) AS pnl, coalesce(sum(fees), 0) AS fees, count(*) AS n,"
            " coalesce(sum(state = 'closed'), 0) AS closed FROM trades WHERE strategy_id = ? AND state != 'failed'",
            (strategy_id,),
        )
        assert row is not None
        return {"realized": row["pnl"], "fees": row["fees"], "net": row["pnl"] - row["fees"], "trades": row["n"],
                "closed": row["closed"]}


def position_view(trade: Trade) -> PositionView | None:
    """The strategy's view of an open trade (None unless the entry filled and something is still open)."""
    if trade.state.is_terminal or trade.entry_filled <= 0 or trade.open_amount <= 0:
        return None
    return PositionView(
        direction=trade.direction, amount=trade.open_amount, entry_price=trade.entry_price,
        stop_price=trade.stop_price, take_price=trade.take_price, opened_ts_ms=trade.entry_ts_ms,
        trade_id=trade.trade_id, break_even_done=trade.break_even_done,
    )


def trade_row(row: dict[str, Any]) -> dict[str, Any]:
    """A ``trades`` table row as the RPC's TradeRow."""
    return {
        "trade_id": row["trade_id"],
        "strategy_id": row["strategy_id"],
        "instrument": row["instrument"],
        "direction": row["direction"],
        "state": row["state"],
        "amount": row["amount"],
        "entry_price": row["entry_price"],
        "exit_price": row["exit_price"],
        "entry_ts_ms": row["entry_ts_ms"],
        "exit_ts_ms": row["exit_ts_ms"],
        "stop_price": row["stop_price"],
        "take_price": row["take_price"],
        "pnl": row["pnl"],
        "fees": row["fees"],
        "net_pnl": row["pnl"] - row["fees"],
        "exit_reason": row["exit_reason"],
        "currency": row["currency"],
        "strategy_name": row.get("strategy_name") or "",
        "code_version": row.get("code_version") or "",
        "config_version": row.get("config_version") or 0,
    }


def trade_to_row(trade: Trade) -> dict[str, Any]:
    return trade_row({
        "trade_id": trade.trade_id, "strategy_id": trade.strategy_id, "instrument": trade.instrument,
        "direction": trade.direction.value, "state": trade.state.value, "amount": trade.entry_filled or trade.amount,
        "entry_price": trade.entry_price or None, "exit_price": trade.exit_price or None,
        "entry_ts_ms": trade.entry_ts_ms or None, "exit_ts_ms": trade.exit_ts_ms or None,
        "stop_price": trade.stop_price, "take_price": trade.take_price, "pnl": trade.pnl, "fees": trade.fees,
        "exit_reason": trade.exit_reason, "currency": trade.currency, "strategy_name": trade.strategy_name,
        "code_version": trade.code_version, "config_version": trade.config_version,
    })


def order_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "order_id": row["order_id"], "strategy_id": row["strategy_id"], "trade_id": row["trade_id"],
        "role": row["role"], "label": row["label"], "instrument": row["instrument"], "side": row["side"],
        "type": row["type"], "amount": row["amount"], "filled_amount": row["filled_amount"], "price": row["price"],
        "trigger_price": row["trigger_price"], "state": row["state"], "ts_ms": row["created_ts_ms"],
    }


def _fill_payload(fill: Fill) -> dict[str, Any]:
    return {
        "trade_id": fill.trade_id, "order_id": fill.order_id, "instrument": fill.instrument, "side": fill.side.value,
        "amount": fill.amount, "price": fill.price, "fee": fill.fee, "fee_currency": fill.fee_currency,
        "ts_ms": fill.ts_ms, "label": fill.label, "liquidity": fill.liquidity.value,
    }


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


#: The ``decisions`` rows of the decision events after id ?1 (this transaction's), with action ?2: the queryable
#: columns cut out of each event's payload (scores with strength and confidence added, as the panel shows them).
_DERIVE_DECISIONS = (
    "INSERT INTO decisions (event_id, strategy_id, ts_ms, signal, action, skipped, indicators, scores, reasons)"
    " SELECT id, strategy_id, ts_ms, coalesce(json_extract(payload, '$.signal'), 'none'), ?2,"
    " coalesce(json_extract(payload, '$.skipped'), ''), coalesce(json_extract(payload, '$.indicators'), '{}'),"
    " json_patch(coalesce(json_extract(payload, '$.scores'), '{}'), json_object("
    "'strength', coalesce(json_extract(payload, '$.strength'), 0.0),"
    " 'confidence', coalesce(json_extract(payload, '$.confidence'), 0.0))),"
    " coalesce(json_extract(payload, '$.reasons'), '[]')"
    " FROM events WHERE id > ?1 AND kind = 'decision' ORDER BY id"
)


def _utc_day(day_number: int) -> str:
    import datetime as _dt

    return (_dt.date(1970, 1, 1) + _dt.timedelta(days=day_number)).isoformat()
