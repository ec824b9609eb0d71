"""Deribit's history windows, stated once: the client queries by them and the simulator serves by them.

Deribit's spec (v2.1.1, parameter ``historical`` of ``private/get_user_trades_by_instrument[_and_time]``,
``..._by_currency[_and_time]``, ``..._by_order`` and ``private/get_order_history_by_instrument|currency``):

- ``historical: false`` (the default) "returns recent records: orders for 30 min, trades for 24h";
- ``historical: true`` "fetches historical records, available after a short delay due to indexing. Recent data is
  not included."

Deribit's article "Accessing historical trades and orders using API" adds that recent records are kept that long
and then removed, while historical ones persist. We read that as: a trade is *recent* while its ``timestamp`` is
within 24 h of the exchange's clock, a closed order while its ``last_update_timestamp`` (when it closed) is within
30 min; each record is served by exactly one of the two windows. That is the strictest reading (no overlap, and
the indexing delay hidden inside the recent window), so a client correct against it is correct against any
overlap Deribit really has. Its consequence for clients: whoever needs records older than a window must ask both,
the recent window first (a record that ages out between the two questions then shows up in the second).
"""

from __future__ import annotations

#: A user trade is served without ``historical`` while it is younger than this (by the exchange's clock).
RECENT_TRADES_MS = 24 * 3_600_000
#: A closed order is served without ``historical`` for this long after its last update.
RECENT_ORDERS_MS = 30 * 60_000
#: How close to the recent window's edge a query may start before the client asks the historical window too: the
#: time between the two queries and any difference between the clocks involved.
WINDOW_MARGIN_MS = 10 * 60_000


def is_recent(ts_ms: int, now_ms: int, window_ms: int) -> bool:
    """A record stamped ``ts_ms`` is in the recent window at ``now_ms`` (the edge itself included)."""
    return ts_ms >= now_ms - window_ms


def served(ts_ms: int, now_ms: int, window_ms: int, historical: bool) -> bool:
    """Whether a query with this ``historical`` flag returns a record stamped ``ts_ms`` (exactly one of the two do)."""
    return is_recent(ts_ms, now_ms, window_ms) != historical


def needs_historical(start_ms: int, now_ms: int, window_ms: int = RECENT_TRADES_MS,
                     margin_ms: int = WINDOW_MARGIN_MS) -> bool:
    """A query for records since ``start_ms`` must also ask the historical window."""
    return start_ms < now_ms - window_ms + margin_ms
