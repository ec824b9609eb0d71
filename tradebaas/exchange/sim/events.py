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
