"""What the matching core tells the server: ``SimEvent`` notifications, collected per call in a ``EventBatch``.

Why a batch: one call (a request or a market tick) may change many orders, trades and balances; the core records
each change as it happens and turns the lot into Deribit's ``user.*`` notifications once, at the end of the call,
in the order the changes happened (order snapshots in change order, then trades, changes, portfolios).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, frozen=True)
class SimEvent:
    """A user notification: ``kind`` is the channel family, ``data`` Deribit's payload for it.

    ``instrument`` is None for ``user.portfolio`` (whose data carries ``currency``).
    """

    kind: str
    account_id: str
    instrument: str | None
    data: Any


class EventBatch:
    """What one call changed, turned into ``SimEvent``s at its end (order snapshots in change order)."""

    __slots__ = ("orders", "trades", "changes", "portfolio", "cancelled")

    def __init__(self) -> None:
        #: (account, instrument, Deribit order object) for every change, in order (``user.orders``)
        self.orders: list[tuple[str, str, dict[str, Any]]] = []
        #: (account, instrument) -> user trades of this call (``user.trades``)
        self.trades: dict[tuple[str, str], list[dict[str, Any]]] = {}
        #: (account, instrument) -> order id -> its last snapshot (``user.changes``)
        self.changes: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        #: (account, currency) whose summary changed (``user.portfolio``); a dict as an ordered set
        self.portfolio: dict[tuple[str, str], None] = {}
        #: orders cancelled in this call, cascades included (the ``cancel_all*`` answer)
        self.cancelled = 0


class ChangeSet:
    """Which parts of the state the core changed since a journal last drained it (``changes.drain``).

    Why keys, not copies: the core marks what it touches as it works (an order, an account, an appended trade, a
    closed-order window moving); the journal reads the current values once, at the end of the call, so marking
    costs a dict insert. Only a journaled core has one (``MatchingCore.changes``).
    """

    __slots__ = ("orders", "accounts", "trades", "closed", "forgotten")

    def __init__(self) -> None:
        #: (account, order id) of every order changed, in first-change order (a dict as an ordered set)
        self.orders: dict[tuple[str, str], None] = {}
        #: accounts whose balances, totals or positions may have changed
        self.accounts: dict[str, None] = {}
        #: (account, instrument, user trade) appended to the account's kept trades
        self.trades: list[tuple[str, str, dict[str, Any]]] = []
        #: (account, instrument, order id) appended to a closed-order window, in closing order
        self.closed: list[tuple[str, str, str]] = []
        #: (account, instrument, order id) of closed orders pruned from their window (forgotten)
        self.forgotten: list[tuple[str, str, str]] = []

    def __bool__(self) -> bool:
        return bool(self.orders or self.accounts or self.trades or self.closed or self.forgotten)

    def clear(self) -> None:
        self.orders.clear()
        self.accounts.clear()
        self.trades.clear()
        self.closed.clear()
        self.forgotten.clear()
