"""What the matching core changed, as a journal record (``drain``), and records applied to a saved state (``Replay``).

Why outcomes, not inputs: a record carries the result of a call (the changed orders, the appended trades, the
touched accounts, the counters, the markets), not the request or tick that caused it. Replaying it needs no
matching logic and cannot diverge from what was acknowledged, even if the simulator's code changed between the
crash and the restart. ``durable`` writes one record per call that changed something, before the answer or the
``user.*`` notification reporting the change leaves.

Promise (``tests/unit/test_sim_journal.py`` checks it against the live core under random order flow and a small
history): ``Replay(dump(core before), history)`` fed every record drained since gives ``state()`` equal to
``dump(core after)``, except for markets moved by ticks that changed nothing else (those are not recorded; the
feed gives such ticks to the core again after a restart, see ``feed.MarketFeed.prime``). Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from .core import MatchingCore
from .persistence import account_head, ids_state, markets_state, order_margin_state


def drain(core: MatchingCore) -> dict[str, Any] | None:
    """The record of everything changed since the last drain (JSON data), or None if nothing changed; clears the
    marks. Call it between calls, never inside one (the values read are the current ones)."""
    marks = core.changes
    if not marks:
        return None
    accounts = core.accounts
    orders = []
    for aid, oid in marks.orders:
        order = accounts[aid].orders.get(oid)
        if order is not None:  # None: closed and already pruned again within the same call (``forgotten``)
            orders.append(order.to_state())
    record = {
        **ids_state(core),
        "markets": markets_state(core),
        "order_margin": order_margin_state(core),
        "accounts": {aid: account_head(accounts[aid]) for aid in marks.accounts},
        "orders": orders,
        "trades": [[aid, inst, dict(t)] for aid, inst, t in marks.trades],
        "closed": [list(c) for c in marks.closed],
        "forgotten": [list(f) for f in marks.forgotten],
    }
    marks.clear()
    return record


class Replay:
    """A saved state (``persistence.dump`` data) with records applied in order; ``state()`` is the result.

    Orders are kept by id while replaying (a record updates a few orders among thousands); new orders go in
    placement order (``seq``), as the core creates them, so ``state()`` lists them exactly as ``dump`` would.
    Kept trades are cut to ``history`` per account and instrument, as the core's bounded deques do.
    """

    def __init__(self, state: dict[str, Any], history: int) -> None:
        self.history = history
        self.base = {k: v for k, v in state.items() if k != "accounts"}
        self.accounts: dict[str, dict[str, Any]] = {}
        for aid, acct in state.get("accounts", {}).items():
            work = dict(acct)
            work["orders"] = {o["order_id"]: o for o in acct.get("orders", ())}
            work["trades"] = {n: list(ts) for n, ts in acct.get("trades", {}).items()}
            work["closed"] = {n: list(ids) for n, ids in acct.get("closed", {}).items()}
            self.accounts[aid] = work

    def apply(self, record: dict[str, Any]) -> None:
        for key in ("next_order", "next_trade", "next_seq", "next_oco", "trade_seq", "markets", "order_margin"):
            self.base[key] = record[key]
        for aid, head in record["accounts"].items():
            acct = self.accounts.get(aid)
            if acct is None:
                acct = self.accounts[aid] = {"orders": {}, "trades": {}, "closed": {}}
            acct.update(head)
        new = []
        for order in record["orders"]:
            orders = self.accounts[order["account_id"]]["orders"]
            if order["order_id"] in orders:
                orders[order["order_id"]] = order
            else:
                new.append(order)
        for order in sorted(new, key=lambda o: o["seq"]):
            self.accounts[order["account_id"]]["orders"][order["order_id"]] = order
        for aid, inst, trade in record["trades"]:
            kept = self.accounts[aid]["trades"].setdefault(inst, [])
            kept.append(trade)
            if len(kept) > self.history:
                del kept[0]
        for aid, inst, oid in record["closed"]:
            self.accounts[aid]["closed"].setdefault(inst, []).append(oid)
        for aid, inst, oid in record["forgotten"]:
            acct = self.accounts[aid]
            acct["orders"].pop(oid, None)
            window = acct["closed"].get(inst, [])
            if oid in window:
                window.remove(oid)

    def state(self) -> dict[str, Any]:
        """The replayed state, in ``persistence.dump``'s shape."""
        accounts = {}
        for aid, acct in self.accounts.items():
            out = dict(acct)
            out["orders"] = list(acct["orders"].values())
            accounts[aid] = out
        return {**self.base, "accounts": accounts}
