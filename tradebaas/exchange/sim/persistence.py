"""The matching core's state as JSON data, and back: ``dump(core)`` / ``load(core, state)``.

Why apart: what survives a restart is a contract of its own (``state.py`` writes it to disk atomically, old files
must keep loading), and it should be readable without the matching logic. Only the defining state is kept:
accounts (balances, positions, orders, the kept trades), id counters, each market's last prices and the open-order
margin; the indices (price heaps, live-order maps, OCO groups) are derived again by ``MatchingCore.adopt``, so a
restored core behaves exactly as the saved one.

The size of a state is bounded by the live orders plus ``history`` closed orders and trades per account and
instrument (``closed`` lists the kept closed orders in closing order, so pruning resumes where it was).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .accounts import SimAccount, SimPosition
from .core import MatchingCore
from .market import MarketState
from .orders import SimOrder

STATE_VERSION = 1


def dump(core: MatchingCore) -> dict[str, Any]:
    """Everything that defines the exchange, JSON-serialisable; ``load`` restores it exactly."""
    return {
        "version": STATE_VERSION, **ids_state(core),
        "markets": markets_state(core),
        "order_margin": order_margin_state(core),
        "accounts": {aid: {
            **account_head(a),
            "orders": [o.to_state() for o in a.orders.values()],
            "trades": {n: [dict(t) for t in ts] for n, ts in a.trades.items()},
            "closed": {inst: list(ids) for (acct, inst), ids in core.closed.items() if acct == aid},
        } for aid, a in core.accounts.items()},
    }


def ids_state(core: MatchingCore) -> dict[str, Any]:
    """The id counters (top-level keys of a state; also what every journal record carries)."""
    ids = core.ids
    return {"next_order": ids.next_order, "next_trade": ids.next_trade, "next_seq": ids.next_seq,
            "next_oco": ids.next_oco, "trade_seq": dict(ids.trade_seq)}


def markets_state(core: MatchingCore) -> dict[str, Any]:
    return {name: m.to_state() for name, m in core.markets.items()}


def order_margin_state(core: MatchingCore) -> list[list[Any]]:
    return [[a, c, v] for (a, c), v in core.order_margin.items()]


def account_head(account: SimAccount) -> dict[str, Any]:
    """An account without its orders, trades and closed window: balances, totals and positions (all small)."""
    return {"balances": dict(account.balances), "created_ms": account.created_ms, "realized": dict(account.realized),
            "fees": dict(account.fees), "positions": {n: p.to_state() for n, p in account.positions.items()}}


def check_version(state: dict[str, Any]) -> None:
    """Refuse a state this code cannot read (before anything is built from it)."""
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"unsupported simulator state version {state.get('version')!r}")


def load(core: MatchingCore, state: dict[str, Any]) -> None:
    """Fill a fresh ``core`` from ``dump``'s output.

    A state saved with a longer (or, before bounded history, unbounded) history is cut to ``core.history`` here.
    """
    check_version(state)
    ids = core.ids
    ids.next_order, ids.next_trade = state["next_order"], state["next_trade"]
    ids.next_seq, ids.next_oco = state["next_seq"], state["next_oco"]
    ids.trade_seq.update(state["trade_seq"])
    for name, m in state["markets"].items():
        core.markets[name] = MarketState(**m)
    core.order_margin = {(a, c): v for a, c, v in state["order_margin"]}
    accounts: dict[str, SimAccount] = {}
    closed: dict[str, dict[str, list[str]]] = {}
    for aid, a in state["accounts"].items():
        acct = SimAccount(aid, dict(a["balances"]), created_ms=a["created_ms"], realized=dict(a["realized"]),
                          fees=dict(a["fees"]))
        acct.positions = {n: SimPosition.from_state(p) for n, p in a["positions"].items()}
        acct.trades = {n: deque((dict(t) for t in ts), maxlen=core.history) for n, ts in a["trades"].items()}
        for od in a["orders"]:
            order = SimOrder.from_state(od)
            acct.orders[order.order_id] = order
        accounts[aid] = acct
        kept = a.get("closed")
        if kept is None:  # a state from before bounded history: closing order ~ last update, then placement
            kept = {}
            done = [o for o in acct.orders.values() if not o.is_live]
            for order in sorted(done, key=lambda o: (o.update_ms, o.seq)):
                kept.setdefault(order.instrument, []).append(order.order_id)
        closed[aid] = kept
    core.adopt(accounts, closed)
