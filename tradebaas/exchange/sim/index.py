"""The matching core's price index: live orders by the price that wakes them, in lazy-deletion heaps.

Why: on every tick the core must find the resting limits the market reached and the triggers it passed without
looking at every order. Resting limits sit in one heap per instrument and side (bids by -price, asks by price),
trigger orders in one heap per instrument and trigger source and direction of the move that fires them, and
good_til_day orders in an expiry heap; placing, cancelling and matching cost O(log n) in the live orders.

Lazy deletion, and what it promises: an entry carries the order's ``version`` when it was pushed; an order that
was cancelled, filled or edited since (its version bumped, or no longer in the core's live map) is skipped when
popped, never removed eagerly. Stale entries are compacted away when they outnumber the live orders, so a client
placing and cancelling forever does not grow memory.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

from .market import MarketState
from .orders import TRIGGER_SOURCES, SimOrder

#: (key, placement seq, order version, order id); the key is the price (or -price) the heap is ordered by.
Entry = tuple[float, int, int, str]


class OrderIndex:
    """Heaps over the core's live orders; reads ``live`` (order id -> order, owned and kept by the core)."""

    def __init__(self, instruments: Iterable[str], live: dict[str, SimOrder]) -> None:
        self._live = live
        self.bids: dict[str, list[Entry]] = {}
        self.asks: dict[str, list[Entry]] = {}
        for name in instruments:
            self.bids[name], self.asks[name] = [], []
        #: (instrument, trigger source) -> triggers fired by a rise (buy stops, sell takes) / a fall (the others)
        self.up: dict[tuple[str, str], list[Entry]] = {}
        self.down: dict[tuple[str, str], list[Entry]] = {}
        #: (expiry ms, seq, order id) of good_til_day orders
        self.expiry: list[tuple[int, int, str]] = []

    # ------------------------------------------------------------------------------------------- adding

    def add_limit(self, order: SimOrder) -> None:
        """Index a resting limit at its price (a later edit pushes again with the new version)."""
        assert order.price is not None
        if order.direction == "buy":
            self._push(self.bids[order.instrument], (-order.price, order.seq, order.version, order.order_id))
        else:
            self._push(self.asks[order.instrument], (order.price, order.seq, order.version, order.order_id))

    def add_trigger(self, order: SimOrder) -> None:
        """Index by the price move that fires it: up (buy stop, sell take) or down (sell stop, buy take)."""
        assert order.trigger_price is not None and order.trigger is not None
        key = (order.instrument, order.trigger)
        fires_up = (order.order_type.startswith("stop")) == (order.direction == "buy")
        if fires_up:
            self._push(self.up.setdefault(key, []), (order.trigger_price, order.seq, order.version, order.order_id))
        else:
            self._push(self.down.setdefault(key, []), (-order.trigger_price, order.seq, order.version, order.order_id))

    def add_expiry(self, order: SimOrder) -> None:
        """Remember when a good_til_day order ends (no-op for other orders)."""
        if order.expire_ms is not None:
            heapq.heappush(self.expiry, (order.expire_ms, order.seq, order.order_id))

    def _push(self, heap: list[Entry], entry: Entry) -> None:
        """Push onto a lazy-deletion heap; when stale entries (cancelled, edited, filled orders far from the market)
        outnumber the live ones, drop them, so a client placing and cancelling forever does not grow memory."""
        heapq.heappush(heap, entry)
        if len(heap) > 64 and len(heap) > 2 * len(self._live) + 64:
            live = [e for e in heap if (o := self._live.get(e[3])) is not None and o.version == e[2]]
            heapq.heapify(live)
            heap[:] = live

    # ------------------------------------------------------------------------------------------- reached

    def _pop_valid(self, heap: list[Entry], reached: Callable[[float], bool], want_state: str) -> list[SimOrder]:
        """Pop every entry whose key the market reached; keep only entries still current (lazy deletion)."""
        out: list[SimOrder] = []
        while heap and reached(heap[0][0]):
            _, _, version, order_id = heapq.heappop(heap)
            order = self._live.get(order_id)
            if order is not None and order.version == version and order.state == want_state and not order.waiting_primary:
                out.append(order)
        return out

    def triggers_reached(self, instrument: str, market: MarketState) -> list[SimOrder]:
        """The untriggered orders of ``instrument`` whose trigger source reached their trigger, in placement order
        (removed from the index: the caller fires them)."""
        fired: list[SimOrder] = []
        for source in TRIGGER_SOURCES:
            price = market.source_price(source)
            if not price:
                continue
            up = self.up.get((instrument, source))
            if up:
                fired += self._pop_valid(up, _at_most(price), "untriggered")
            down = self.down.get((instrument, source))
            if down:
                fired += self._pop_valid(down, _negated_at_least(price), "untriggered")
        fired.sort(key=lambda o: o.seq)
        return fired

    def bids_reached(self, instrument: str, low: float) -> list[SimOrder]:
        """Resting buy limits at or above ``low``, best first (removed from the index: the caller fills them)."""
        return self._pop_valid(self.bids[instrument], _negated_at_least(low), "open")

    def asks_reached(self, instrument: str, high: float) -> list[SimOrder]:
        """Resting sell limits at or below ``high``, best first (removed from the index: the caller fills them)."""
        return self._pop_valid(self.asks[instrument], _at_most(high), "open")

    def has_due(self, now_ms: int) -> bool:
        return bool(self.expiry) and self.expiry[0][0] <= now_ms

    def pop_due(self) -> str:
        """The id of the next good_til_day order due (call while ``has_due``); it may no longer be live."""
        return heapq.heappop(self.expiry)[2]


def _at_most(price: float) -> Callable[[float], bool]:
    """Reached for a heap keyed by price: the key is at or below ``price``."""
    return lambda key: key <= price


def _negated_at_least(price: float) -> Callable[[float], bool]:
    """Reached for a heap keyed by -price: the price is at or above ``price``."""
    return lambda key: -key >= price
