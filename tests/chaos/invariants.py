"""The invariants every chaos round must leave intact, checked from outside the engine.

Why from outside: the engine's own answers are what a bug would get wrong. The exchange side is read from the
simulator over its HTTP API with the engine's paper key; the journal side from ``journal.sqlite`` opened read-only
(the engine may be writing, or dead after a SIGKILL). Nothing here asks the engine.

Per instrument, after a round (``settle`` retries until all hold, because trading goes on while we look and a
snapshot taken over several HTTP calls can straddle a fill; a real violation never settles):

- **fills**: every fill the journal holds is a fill of the exchange (read the journal, then the exchange), and every
  fill of ours on the exchange reaches the journal (read the exchange, then the journal); the exchange never
  repeats a fill id, and the account has no fill without a ``tb:`` label;
- **no duplicate entry**: one entry order per trade of ours (by label), never more filled than the trade asked
  for, at most one trade in flight per strategy (both chaos strategies trade one position at a time) and the
  exchange position equals the journal's open trades (a second entry the journal does not know would show);
- **protection**: a position held by a strategy that uses brackets has its ``:sl`` on the exchange, reduce-only,
  on the closing side, for the whole position; a position no open trade of ours explains is a violation;
- **no orphan bracket**: no ``:sl``/``:tp`` of ours rests on the exchange for a trade that is not open, or on a
  flat instrument; no entry order rests (entries are market orders);
- **states**: no strategy in ``needs_attention`` or ``error`` (nothing outside tradebaas touches this account, so
  reconciliation must explain everything), and every strategy that should run is ``running``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tests.integration.conftest import SimProc
from tradebaas.home import Home

EPS = 1e-8
TERMINAL = ("closed", "failed")


def parse(label: str) -> tuple[str, str, str] | None:
    """``(strategy_id, trade_id, role)`` of a label of ours."""
    parts = str(label or "").split(":")
    return (parts[1], parts[2], parts[3]) if len(parts) == 4 and parts[0] == "tb" else None


@dataclass
class JournalSide:
    strategies: dict[str, dict[str, Any]]
    trades: dict[str, dict[str, Any]]  # trade_id -> row (with the Trade's JSON ``data`` decoded)
    fills: dict[str, dict[str, Any]]  # exchange trade id -> row


def read_journal(home: Home) -> JournalSide:
    """The journal, read-only (a snapshot: one read transaction)."""
    conn = sqlite3.connect(f"file:{home.root / 'journal.sqlite'}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("BEGIN")
        strategies = {r["id"]: dict(r) for r in conn.execute("SELECT * FROM strategies")}
        trades = {}
        for r in conn.execute("SELECT * FROM trades"):
            row = dict(r)
            row["data"] = json.loads(row.get("data") or "{}")
            trades[row["trade_id"]] = row
        fills = {r["trade_id"]: dict(r) for r in conn.execute("SELECT * FROM fills")}
        conn.execute("COMMIT")
        return JournalSide(strategies, trades, fills)
    finally:
        conn.close()


def journal_fills(home: Home) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(f"file:{home.root / 'journal.sqlite'}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return {r["trade_id"]: dict(r) for r in conn.execute("SELECT * FROM fills")}
    finally:
        conn.close()


def signed_open(trade: dict[str, Any]) -> float:
    """The trade's share of its instrument's exchange position (positive long), from the journal's Trade JSON."""
    data = trade["data"]
    if data.get("state", trade["state"]) in TERMINAL:
        return 0.0
    amount = max(0.0, float(data.get("entry_filled", 0.0)) - float(data.get("exit_filled", 0.0)))
    return amount if data.get("direction", trade["direction"]) == "long" else -amount


class Checker:
    """Checks the invariants above on one simulator account and one journal."""

    def __init__(self, sim: SimProc, home: Home, instruments: tuple[str, ...],
                 uses_brackets: dict[str, bool] | None = None) -> None:
        self.sim = sim
        self.home = home
        self.instruments = instruments
        #: strategy name -> declares exchange brackets (``uses_brackets``)
        self.uses_brackets = {"razor": True, "ema_cross": False, **(uses_brackets or {})}

    def violations(self, should_run: set[str]) -> list[str]:
        """One look; the list of broken invariants (empty when all hold)."""
        out: list[str] = []
        j1 = journal_fills(self.home)
        exchange: dict[str, tuple[float, list[dict[str, Any]], list[dict[str, Any]]]] = {}
        for inst in self.instruments:
            orders = self.sim.open_orders(inst)
            position = self.sim.position_size(inst)
            fills = self.sim.user_trades(inst)
            exchange[inst] = (position, orders, fills)
        journal = read_journal(self.home)
        for inst in self.instruments:
            position, orders, fills = exchange[inst]
            out += self._fills(inst, fills, j1, journal.fills)
            out += self._entries_and_positions(inst, position, orders, fills, journal)
        for sid, row in journal.strategies.items():
            if row["state"] in ("needs_attention", "error"):
                out.append(f"strategy {sid} is {row['state']}: {row['state_reason']}")
        for sid in sorted(should_run):
            state = journal.strategies.get(sid, {}).get("state")
            if state != "running":
                out.append(f"strategy {sid} should run but is {state}")
        return out

    def settle(self, should_run: set[str], timeout: float = 20.0) -> tuple[list[str], float]:
        """Look until every invariant holds or ``timeout`` passes; returns the last violations (empty: all hold)
        and how long it took."""
        start = time.monotonic()
        while True:
            try:
                found = self.violations(should_run)
            except (OSError, RuntimeError, sqlite3.Error) as exc:  # the simulator restarting, the journal busy
                found = [f"could not look: {exc!r}"]
            if not found or time.monotonic() - start >= timeout:
                return found, time.monotonic() - start
            time.sleep(0.1)  # pace between looks (polling a condition, not synchronising on time)

    # -- the checks --------------------------------------------------------------------------------------------
    @staticmethod
    def _fills(inst: str, fills: list[dict[str, Any]], journal_before: dict[str, dict[str, Any]],
               journal_after: dict[str, dict[str, Any]]) -> list[str]:
        out = []
        ids = [str(f["trade_id"]) for f in fills]
        if len(ids) != len(set(ids)):
            out.append(f"{inst}: the exchange repeats fill ids {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
        foreign = [f["trade_id"] for f in fills if parse(f.get("label", "")) is None]
        if foreign:
            out.append(f"{inst}: fills without a label of ours {foreign[:5]}")
        exchange_ids = set(ids)
        invented = sorted(t for t, f in journal_before.items() if f["instrument"] == inst and t not in exchange_ids)
        if invented:
            out.append(f"{inst}: the journal holds {len(invented)} fill(s) the exchange does not: {invented[:5]}")
        missed = sorted(exchange_ids - {t for t, f in journal_after.items() if f["instrument"] == inst})
        if missed:
            out.append(f"{inst}: {len(missed)} exchange fill(s) missing from the journal: {missed[:5]}")
        return out

    def _entries_and_positions(self, inst: str, position: float, orders: list[dict[str, Any]],
                               fills: list[dict[str, Any]], journal: JournalSide) -> list[str]:
        out = []
        entry_orders: dict[str, set[str]] = defaultdict(set)
        entry_filled: dict[str, float] = defaultdict(float)
        for f in fills:
            parsed = parse(f.get("label", ""))
            if parsed and parsed[2] == "entry":
                entry_orders[parsed[1]].add(str(f["order_id"]))
                entry_filled[parsed[1]] += float(f["amount"])
        for tid, order_ids in entry_orders.items():
            if len(order_ids) > 1:
                out.append(f"{inst}: duplicate entry: trade {tid} filled by {len(order_ids)} entry orders")
            trade = journal.trades.get(tid)
            if trade is not None and entry_filled[tid] > float(trade["data"].get("amount", trade["amount"])) + EPS:
                out.append(f"{inst}: duplicate entry: trade {tid} filled {entry_filled[tid]} of "
                           f"{trade['data'].get('amount')}")
        trades = [t for t in journal.trades.values() if t["instrument"] == inst]
        in_flight: dict[str, list[str]] = defaultdict(list)
        for t in trades:
            if t["state"] not in TERMINAL:
                in_flight[t["strategy_id"]].append(t["trade_id"])
        for sid, tids in in_flight.items():
            if len(tids) > 1:
                out.append(f"{inst}: duplicate entry: strategy {sid} has {len(tids)} trades in flight {tids}")
        explained = sum(signed_open(t) for t in trades)
        if abs(position - explained) > EPS * max(1.0, abs(position)):
            out.append(f"{inst}: exchange position {position} but the journal's open trades explain {explained}")
        holders = [t for t in trades if abs(signed_open(t)) > EPS]
        by_label = {o.get("label", ""): o for o in orders}
        for t in holders:
            name = journal.strategies.get(t["strategy_id"], {}).get("name", "")
            if not self.uses_brackets.get(name, True) or abs(position) <= EPS:
                continue
            stop = by_label.get(f"tb:{t['strategy_id']}:{t['trade_id']}:sl")
            if stop is None:
                out.append(f"{inst}: position {position} of {t['strategy_id']} ({t['trade_id']}) has no stop")
                continue
            closing_side = "sell" if position > 0 else "buy"
            if (not stop.get("reduce_only") or stop.get("direction") != closing_side
                    or abs(float(stop["amount"]) - abs(position)) > EPS * max(1.0, abs(position))):
                out.append(f"{inst}: the stop of {t['trade_id']} does not cover position {position}: "
                           f"{stop.get('direction')} {stop.get('amount')} reduce_only={stop.get('reduce_only')}")
        for o in orders:
            parsed = parse(o.get("label", ""))
            if parsed is None:
                out.append(f"{inst}: an open order without a label of ours: {o.get('order_id')}")
                continue
            sid, tid, role = parsed
            if role == "entry":
                out.append(f"{inst}: entry order {o.get('label')} rests on the exchange")
            elif role in ("sl", "tp"):
                trade = journal.trades.get(tid)
                if abs(position) <= EPS or trade is None or trade["state"] in TERMINAL:
                    state = trade["state"] if trade else "unknown to the journal"
                    out.append(f"{inst}: orphan bracket {o.get('label')} (trade {state}, position {position})")
        return out
