"""The simulator's matching core: what happens to accepted orders (rest, trigger, fill, link, expire, cancel).

Sans-I/O like ``websockets``' protocol class: no sockets, no clock, no threads, no randomness. ``SimExchange``
(``matching.py``) decodes and validates Deribit's requests and calls ``place``, ``place_linked``, ``amend`` and
``cancel*`` here; the market feed's ticks arrive through ``on_tick``. Every change is recorded in the call's
``EventBatch`` (``events.py``), which the exchange turns into notifications. Fees and PnL come from
``tradebaas.fillmodel`` so the backtester and the simulator agree. The core never refuses: what reaches it passed
``validation``.

The book is not simulated: a market order (or a limit that crosses) fills in full at the best ask/bid of the last
``MarketTick`` as taker; a resting limit fills in full at its own price as maker when the last trade price or the
opposite best quote reaches it (``MarketTick.trade_amount`` is not used to cap fills: fills are whole).

Choices where Deribit's behaviour is unknown or not modelled:
- Reduce-only orders larger than the position are cut to it. Live reduce-only orders follow the position (cut, or
  cancelled with ``cancel_reason`` "risk_mitigation" when it is gone or flipped); a reduce-only trigger order
  firing with nothing to reduce is cancelled the same way.
- post_only alone is repriced one tick behind the spread. A crossing post-only *edit* with reject cancels the
  order (``edit_post_only_reject``) and returns it, no error.
- Triggered orders keep their order_id (no new order with ``trigger_order_id``); ``triggered`` becomes true;
  stop/take market fill at once, stop/take limit become ``open`` limits.
- Linked orders: OCO = the primary plus the ``otoco_config`` orders, all live, sharing ``oco_ref``; a fill of one
  (``complete_fill``: its full fill) cancels the others ("oco_other_closed"); a user cancel of one leg does not.
  OTO/OTOCO secondaries wait as ``untriggered`` with ``is_secondary_oto`` until the primary fills
  (first_hit/complete_fill/incremental), and are cancelled ("oto_primary_closed") if it closes unfilled.
- good_til_day orders expire at the next 08:00 UTC (``cancel_reason`` "settlement").
- History is bounded (Deribit, too, serves history in bounded pages): per account and instrument the last
  ``history`` closed orders (in closing order) and the last ``history`` user trades are kept; older ones are
  pruned when an order closes or a trade is added, so the state and its saves stay small however long it runs.
  Open orders, positions, balances, cumulative realized PnL/fees and id counters are always kept in full.
  Reconciliation (trades since a timestamp, open orders, positions) is unaffected as long as it looks back less
  than the window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tradebaas.domain import Liquidity
from tradebaas.fillmodel import fee as fill_fee
from tradebaas.fillmodel import stop_fill_price
from tradebaas.instruments import Instrument

from .accounts import SimAccount, initial_margin, weighted_average
from .events import ChangeSet, EventBatch
from .index import OrderIndex
from .market import MarketState, MarketTick, fires
from .orders import EPS, LIMIT_LIKE_TYPES, MARKET_LIKE_TRIGGER_TYPES, SimOrder, q
from .validation import OrderSpec

#: Decimals Deribit reports fees in, per settlement currency: BTC fees are whole satoshis, rounded to nearest (its
#: spec's examples: 10 USD at 9681.5 maker -2.1e-07; 21 ETH-PERPETUAL at 202.8 taker 7.766e-05, not ...67).
FEE_DECIMALS = {"BTC": 8, "ETH": 8}


def deribit_fee(inst: Instrument, amount: float, price: float, liquidity: Liquidity) -> float:
    """The fill model's fee (``fillmodel.fee``), rounded as Deribit reports it (``FEE_DECIMALS``); the balance is
    charged exactly what the trade shows."""
    fee = fill_fee(inst, amount, price, liquidity)
    decimals = FEE_DECIMALS.get(inst.settlement_currency)
    return round(fee, decimals) + 0.0 if decimals is not None else fee


#: Closed orders and user trades kept per account and instrument (``--history``); see the module docs.
DEFAULT_HISTORY = 2000
DAY_MS = 86_400_000
SETTLEMENT_OFFSET_MS = 8 * 3_600_000  # Deribit's daily session ends at 08:00 UTC (good_til_day expiry)
FIRST_ORDER_ID = 1_000_000
FIRST_TRADE_ID = 100_000


@dataclass(slots=True)
class IdCounters:
    """The next ids the core hands out; persisted, so ids never repeat across restarts."""

    next_order: int = FIRST_ORDER_ID
    next_trade: int = FIRST_TRADE_ID
    next_seq: int = 0  # placement order of orders: fills and triggers are processed in it
    next_oco: int = 1
    trade_seq: dict[str, int] = field(default_factory=dict)  # instrument -> last trade_seq of our fills


class MatchingCore:
    """Accounts, live orders and their indices, and every state change of an accepted order; pure.

    State others read (``queries.BookView``, ``persistence``): ``instruments``, ``markets``, ``accounts``,
    ``live_by``, ``order_margin``, ``inst_margin``, ``closed``, ``ids``. Only this class writes it (``adopt`` is
    how persistence hands a restored state back).
    """

    def __init__(self, instruments: dict[str, Instrument], history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise ValueError("history must be >= 1")
        self.instruments = dict(instruments)
        self.history = int(history)
        self.accounts: dict[str, SimAccount] = {}
        self.markets: dict[str, MarketState] = {name: MarketState() for name in self.instruments}
        self.ids = IdCounters(trade_seq={name: 0 for name in self.instruments})
        #: (account, instrument) -> ids of its closed orders still kept, oldest closed first (pruned from the left)
        self.closed: dict[tuple[str, str], deque[str]] = {}
        self.live: dict[str, SimOrder] = {}
        self.live_by: dict[tuple[str, str], dict[str, SimOrder]] = {}
        self.oco: dict[str, list[str]] = {}  # oco_ref -> ids of the orders linked by it
        self.order_margin: dict[tuple[str, str], float] = {}  # (account, currency) -> margin of open orders
        self.inst_margin: dict[tuple[str, str], float] = {}  # (account, instrument) -> open-order margin (display)
        self._reserved: dict[str, float] = {}  # order_id -> its part of order_margin
        self._reduce_only: dict[tuple[str, str], dict[str, SimOrder]] = {}  # live reduce-only orders
        self.index = OrderIndex(self.instruments, self.live)
        #: what changed since the journal drained it (``changes.drain``); None when nothing journals this core
        self.changes: ChangeSet | None = None

    # ------------------------------------------------------------------------------------------- requests

    def place(self, account: SimAccount, spec: OrderSpec, now_ms: int, batch: EventBatch) -> SimOrder:
        """Create the order and put it to work (it may fill, rest, wait for its trigger, or end at once)."""
        order = self._new_order(account, spec, now_ms)
        self._activate(order, now_ms, batch)
        return order

    def place_linked(self, account: SimAccount, spec: OrderSpec, secondaries: list[OrderSpec], linked: str,
                     condition: str | None, now_ms: int, batch: EventBatch) -> SimOrder:
        """An OCO group (``one_cancels_other``) or an OTO/OTOCO primary with its waiting secondaries; returns the
        primary."""
        primary = self._new_order(account, spec, now_ms)
        primary.trigger_fill_condition = condition
        oco_ref = None
        if linked != "one_triggers_other":
            oco_ref = f"OCO-{self.ids.next_oco}"
            self.ids.next_oco += 1
        if linked == "one_cancels_other":
            legs = [primary] + [self._new_order(account, s, now_ms) for s in secondaries]
            self.oco[oco_ref or ""] = [o.order_id for o in legs]
            for leg in legs:
                leg.oco_ref = oco_ref
                leg.trigger_fill_condition = condition
            for leg in legs:
                if leg.is_live:
                    self._activate(leg, now_ms, batch)
            return primary
        secs = [self._new_order(account, s, now_ms) for s in secondaries]
        primary.oto_order_ids = [s.order_id for s in secs]
        primary.is_primary_otoco = oco_ref is not None
        for sec in secs:
            sec.state, sec.waiting_primary, sec.is_secondary_oto = "untriggered", True, True
            sec.primary_order_id, sec.secondary_amount, sec.oco_ref = primary.order_id, sec.amount, oco_ref
            self.touch(sec, batch)
        if oco_ref is not None:
            self.oco[oco_ref] = [s.order_id for s in secs]
        self._activate(primary, now_ms, batch)
        return primary

    def amend(self, order: SimOrder, amount: float, price: float | None, trigger_price: float | None,
              post_only: bool, reject_post_only: bool, reduce_only: bool, now_ms: int, batch: EventBatch) -> None:
        """Change a live order (validated by the caller): it keeps its id, loses its priority (re-indexed), and a
        resting limit that now crosses executes."""
        order.amount, order.price, order.post_only, order.reject_post_only = amount, price, post_only, reject_post_only
        order.reduce_only = reduce_only
        self._track_reduce_only(order)
        if order.waiting_primary:
            order.secondary_amount = amount
        if trigger_price is not None:
            order.trigger_price = trigger_price
        order.replaced = True
        order.version += 1
        order.update_ms = now_ms
        if order.waiting_primary:
            self.touch(order, batch)
        elif order.state == "untriggered":
            self.touch(order, batch)
            self.index.add_trigger(order)
        else:
            if order.reduce_only:
                self._fillable(order, now_ms, batch)
            if order.is_live:
                self._execute_limit(order, now_ms, batch)

    def cancel(self, order: SimOrder, now_ms: int, batch: EventBatch, reason: str = "user_request") -> None:
        """End a live order as cancelled (with its waiting OTO secondaries)."""
        self._close(order, "cancelled", now_ms, batch, reason=reason)

    def cancel_where(self, account: SimAccount, keep: Callable[[SimOrder], bool], now_ms: int, batch: EventBatch) -> int:
        """Cancel the account's live orders that match; count every order cancelled (cascades included)."""
        live = sorted((o for (acct, _), by in self.live_by.items() if acct == account.account_id
                       for o in by.values() if keep(o)), key=lambda o: o.seq)
        before = batch.cancelled
        for order in live:
            self._close(order, "cancelled", now_ms, batch, reason="user_request")
        return batch.cancelled - before

    def order_result(self, order: SimOrder, batch: EventBatch) -> dict[str, Any]:
        """Deribit's ``{order, trades}`` answer: the order now and its fills in this call."""
        inst = self.instruments[order.instrument]
        trades = [t for t in batch.trades.get((order.account_id, order.instrument), ()) if t["order_id"] == order.order_id]
        return {"order": order.to_deribit(inst.contract_size), "trades": [dict(t) for t in trades]}

    # ------------------------------------------------------------------------------------------- market

    def on_tick(self, tick: MarketTick, now_ms: int, batch: EventBatch) -> None:
        """A market move: expire, fire triggers on their source price, then fill resting limits the market reached."""
        m = self.markets[tick.instrument]
        m.apply(tick)
        self.expire(now_ms, batch)
        for order in self.index.triggers_reached(tick.instrument, m):
            if order.state == "untriggered":
                self._fire(order, now_ms, batch, m.continuous)
        prices = [p for p in (m.last_price, m.best_ask) if p]
        if prices:
            for order in self.index.bids_reached(tick.instrument, min(prices)):
                self._make(order, now_ms, batch)
        prices = [p for p in (m.last_price, m.best_bid) if p]
        if prices:
            for order in self.index.asks_reached(tick.instrument, max(prices)):
                self._make(order, now_ms, batch)

    def expiry_due(self, now_ms: int) -> bool:
        return self.index.has_due(now_ms)

    def expire(self, now_ms: int, batch: EventBatch) -> None:
        """good_til_day orders end with the session (08:00 UTC)."""
        while self.index.has_due(now_ms):
            order = self.live.get(self.index.pop_due())
            if order is not None:
                self._close(order, "cancelled", now_ms, batch, reason="settlement")

    # ------------------------------------------------------------------------------------------- orders

    def _new_order(self, account: SimAccount, spec: OrderSpec, now_ms: int) -> SimOrder:
        inst = spec.instrument
        prefix = "" if inst.settlement_currency == "BTC" else f"{inst.settlement_currency}-"
        order_id = f"{prefix}{self.ids.next_order}"
        self.ids.next_order += 1
        self.ids.next_seq += 1
        order = SimOrder(
            order_id=order_id, account_id=account.account_id, instrument=inst.name, direction=spec.direction,
            order_type=spec.order_type, time_in_force=spec.time_in_force, amount=spec.amount, price=spec.price,
            state="untriggered" if spec.trigger_price is not None else "open", creation_ms=now_ms,
            update_ms=now_ms, seq=self.ids.next_seq, label=spec.label, post_only=spec.post_only,
            reject_post_only=spec.reject_post_only, reduce_only=spec.reduce_only, trigger=spec.trigger,
            trigger_price=spec.trigger_price, triggered=False if spec.trigger_price is not None else None,
        )
        if spec.time_in_force == "good_til_day":
            order.expire_ms = _session_end(now_ms)
        account.orders[order_id] = order
        self.live[order_id] = order
        self.live_by.setdefault((account.account_id, inst.name), {})[order_id] = order
        self._track_reduce_only(order)
        return order

    def _track_reduce_only(self, order: SimOrder) -> None:
        """Keep the per-instrument index of live reduce-only orders (what the reduce-only sweep visits)."""
        key = (order.account_id, order.instrument)
        if order.reduce_only and order.is_live:
            self._reduce_only.setdefault(key, {})[order.order_id] = order
        elif key in self._reduce_only:
            self._reduce_only[key].pop(order.order_id, None)

    def _activate(self, order: SimOrder, now_ms: int, batch: EventBatch) -> None:
        """Put a live order to work: wait for its trigger, execute it, or rest it (maybe filling first)."""
        self.index.add_expiry(order)
        if order.is_trigger and not order.triggered:
            order.state = "untriggered"
            self.touch(order, batch)
            m = self.markets[order.instrument]
            now = m.source_price(order.trigger or "last_price")
            if now and fires(order.order_type, order.direction, order.trigger_price or 0.0, now):
                self._fire(order, now_ms, batch)
            else:
                self.index.add_trigger(order)
            return
        if order.order_type in ("market", "market_limit") or order.order_type in MARKET_LIKE_TRIGGER_TYPES:
            self._execute_market(order, now_ms, batch)
            return
        self._execute_limit(order, now_ms, batch)

    def _execute_market(self, order: SimOrder, now_ms: int, batch: EventBatch, price: float | None = None) -> None:
        m = self.markets[order.instrument]
        price = price or m.taker_price(order.direction)
        if not price:
            self._close(order, "cancelled", now_ms, batch, reason="user_request")
            return
        if order.order_type == "market_limit":
            order.price = price
        self._take(order, price, now_ms, batch)
        if order.is_live:
            self._close(order, "cancelled", now_ms, batch, reason="user_request")

    def _execute_limit(self, order: SimOrder, now_ms: int, batch: EventBatch) -> None:
        """A (possibly just triggered) limit: reprice post-only, take what crosses, rest or cancel the rest."""
        assert order.price is not None
        m = self.markets[order.instrument]
        order.state = "open"
        if m.would_cross(order.direction, order.price):
            if order.post_only:
                if order.reject_post_only:
                    self._close(order, "cancelled", now_ms, batch, reason="edit_post_only_reject")
                    return
                order.price = self._post_only_price(order.instrument, order.direction)
            else:
                self._take(order, m.taker_price(order.direction), now_ms, batch)
        if not order.is_live:
            return
        if order.time_in_force in ("immediate_or_cancel", "fill_or_kill"):
            self._close(order, "cancelled", now_ms, batch, reason="user_request")
            return
        self.touch(order, batch)
        self.index.add_limit(order)

    def _post_only_price(self, instrument: str, direction: str) -> float:
        """Just behind the spread, as Deribit reprices a crossing post-only order."""
        inst = self.instruments[instrument]
        m = self.markets[instrument]
        if direction == "buy":
            return inst.round_price(max(inst.tick_size, (m.best_ask or 0.0) - inst.tick_size))
        return inst.round_price((m.best_bid or 0.0) + inst.tick_size)

    def _take(self, order: SimOrder, price: float, now_ms: int, batch: EventBatch) -> None:
        amount = self._fillable(order, now_ms, batch)
        if amount > 0:
            self._fill(order, amount, price, Liquidity.TAKER, now_ms, batch)

    def _make(self, order: SimOrder, now_ms: int, batch: EventBatch) -> None:
        if not order.is_live or order.price is None:
            return
        amount = self._fillable(order, now_ms, batch)
        if amount > 0:
            self._fill(order, amount, order.price, Liquidity.MAKER, now_ms, batch)

    def _fillable(self, order: SimOrder, now_ms: int, batch: EventBatch) -> float:
        """How much may fill now; a reduce-only order is cut to the opposite position (or cancelled if none)."""
        remaining = order.remaining
        if not order.reduce_only:
            return remaining
        size = self.accounts[order.account_id].size(order.instrument)
        if size == 0 or (size > 0) == (order.direction == "buy"):
            self._close(order, "cancelled", now_ms, batch, reason="risk_mitigation")
            return 0.0
        if remaining > abs(size):
            order.amount = q(order.filled_amount + abs(size))
            return abs(size)
        return remaining

    def _fill(self, order: SimOrder, amount: float, price: float, liquidity: Liquidity, now_ms: int, batch: EventBatch) -> None:
        """One fill: position, balance (+ realized PnL - fee), order progress, user trade, then linked orders."""
        inst = self.instruments[order.instrument]
        account = self.accounts[order.account_id]
        cur = inst.settlement_currency
        fee = deribit_fee(inst, amount, price, liquidity)
        pos = account.position(inst.name)
        pnl = pos.apply_fill(inst, order.side_sign, amount, price)
        pos.fees += fee
        account.balances[cur] = account.balances.get(cur, 0.0) + pnl - fee
        account.realized[cur] = account.realized.get(cur, 0.0) + pnl
        account.fees[cur] = account.fees.get(cur, 0.0) + fee
        order.average_price = weighted_average(inst, order.filled_amount, order.average_price, amount, price)
        order.filled_amount = q(order.filled_amount + amount)
        order.commission += fee
        order.profit_loss += pnl
        order.update_ms = now_ms
        if order.remaining <= EPS:
            order.state = "filled"
        trade = self._trade(order, inst, amount, price, fee, pnl, liquidity, now_ms)
        self._trade_log(account, inst.name).append(trade)  # a bounded deque: the oldest trade drops out
        order.trades.append(trade["trade_id"])
        batch.trades.setdefault((account.account_id, inst.name), []).append(trade)
        if self.changes is not None:
            self.changes.trades.append((account.account_id, inst.name, trade))
        if order.state == "filled":
            self._retire(order)
        self.touch(order, batch)
        self._after_fill(order, now_ms, batch)
        self._sweep_reduce_only(account, inst.name, now_ms, batch)

    def _trade(self, order: SimOrder, inst: Instrument, amount: float, price: float, fee: float, pnl: float,
               liquidity: Liquidity, now_ms: int) -> dict[str, Any]:
        m = self.markets[inst.name]
        prefix = "" if inst.settlement_currency == "BTC" else f"{inst.settlement_currency}-"
        trade_id = f"{prefix}{self.ids.next_trade}"
        self.ids.next_trade += 1
        self.ids.trade_seq[inst.name] = seq = self.ids.trade_seq.get(inst.name, 0) + 1
        if m.last_trade_price and price != m.last_trade_price:
            m.tick_direction = 0 if price > m.last_trade_price else 2
        elif m.last_trade_price:
            m.tick_direction = 1 if m.tick_direction in (0, 1) else 3
        m.last_trade_price = price
        return {
            "trade_id": trade_id, "trade_seq": seq, "instrument_name": inst.name, "timestamp": now_ms,
            "order_id": order.order_id, "matching_id": None, "direction": order.direction,
            "tick_direction": m.tick_direction, "index_price": m.index_price, "mark_price": m.mark_price,
            "price": price, "amount": amount, "contracts": q(amount / inst.contract_size), "fee": fee,
            "fee_currency": inst.settlement_currency, "state": order.state,
            "order_type": "limit" if order.order_type in LIMIT_LIKE_TYPES else "market",
            "liquidity": liquidity.value, "label": order.label, "reduce_only": order.reduce_only,
            "post_only": order.post_only, "profit_loss": pnl, "api": True, "mmp": False, "risk_reducing": False,
        }

    def _fire(self, order: SimOrder, now_ms: int, batch: EventBatch, continuous: bool = False) -> None:
        """A trigger reached: the order keeps its id and type, ``triggered`` becomes true and it executes.

        ``continuous``: a market move through the trigger (not a jump, not an order placed beyond it): a market-like
        trigger order then fills at its trigger price (``fillmodel.stop_fill_price``)."""
        order.triggered = True
        order.version += 1
        order.update_ms = now_ms
        if order.order_type in MARKET_LIKE_TRIGGER_TYPES:
            order.state = "open"
            m = self.markets[order.instrument]
            price = stop_fill_price(order.trigger_price or 0.0, m.taker_price(order.direction), continuous)
            self._execute_market(order, now_ms, batch, self.instruments[order.instrument].round_price(price))
        else:
            self._execute_limit(order, now_ms, batch)

    def _close(self, order: SimOrder, state: str, now_ms: int, batch: EventBatch, reason: str | None = None) -> None:
        """End a live order (cancelled/rejected); cancels the OTO secondaries its fill would have released."""
        if not order.is_live:
            return
        order.state = state
        order.cancel_reason = reason if state == "cancelled" else None
        order.update_ms = now_ms
        self._retire(order)
        batch.cancelled += 1
        self.touch(order, batch)
        for sec_id in order.oto_order_ids or ():
            sec = self.live.get(sec_id)
            if sec is not None and sec.waiting_primary:
                self._close(sec, "cancelled", now_ms, batch, reason="oto_primary_closed")

    def _retire(self, order: SimOrder) -> None:
        order.version += 1
        if self.live.pop(order.order_id, None) is not None:
            self._keep_closed(order)
        key = (order.account_id, order.instrument)
        by = self.live_by.get(key)
        if by is not None:
            by.pop(order.order_id, None)
        ro = self._reduce_only.get(key)
        if ro is not None:
            ro.pop(order.order_id, None)

    def _trade_log(self, account: SimAccount, instrument: str) -> deque[dict[str, Any]]:
        log = account.trades.get(instrument)
        if log is None:
            log = account.trades[instrument] = deque(maxlen=self.history)
        return log

    def _keep_closed(self, order: SimOrder) -> None:
        """Remember a just-closed order in its (account, instrument) window; forget the oldest beyond ``history``.

        Pruning here, when an order closes, keeps the state bounded without a periodic sweep; the closing order
        itself is always kept (``history >= 1``), so a batch that is still reporting it never misses it.
        """
        key = (order.account_id, order.instrument)
        closed = self.closed.get(key)
        if closed is None:
            closed = self.closed[key] = deque()
        closed.append(order.order_id)
        if self.changes is not None:
            self.changes.closed.append((*key, order.order_id))
        if len(closed) > self.history:
            old = closed.popleft()
            self._forget(self.accounts[order.account_id], old)
            if self.changes is not None:
                self.changes.forgotten.append((*key, old))

    def _forget(self, account: SimAccount, order_id: str) -> None:
        old = account.orders.pop(order_id, None)
        if old is not None and old.oco_ref is not None:
            group = self.oco.get(old.oco_ref)
            if group is not None:
                group[:] = [i for i in group if i != order_id]
                if not group:
                    del self.oco[old.oco_ref]

    def touch(self, order: SimOrder, batch: EventBatch) -> None:
        """Record a change of ``order``: keep open-order margin current and snapshot it for ``user.orders``."""
        inst = self.instruments[order.instrument]
        key = (order.account_id, inst.settlement_currency)
        new = 0.0
        if order.state == "open" and not order.reduce_only and order.price:
            new = initial_margin(inst, order.remaining, order.price)
        old = self._reserved.pop(order.order_id, 0.0)
        if new:
            self._reserved[order.order_id] = new
        if new != old:
            self.order_margin[key] = self.order_margin.get(key, 0.0) + new - old
            ikey = (order.account_id, order.instrument)
            self.inst_margin[ikey] = self.inst_margin.get(ikey, 0.0) + new - old
        obj = order.to_deribit(inst.contract_size)
        batch.orders.append((order.account_id, order.instrument, obj))
        batch.changes.setdefault((order.account_id, order.instrument), {})[order.order_id] = obj
        batch.portfolio[key] = None
        if self.changes is not None:
            self.changes.orders[(order.account_id, order.order_id)] = None
            self.changes.accounts[order.account_id] = None

    # ------------------------------------------------------------------------------------------- linked orders

    def _after_fill(self, order: SimOrder, now_ms: int, batch: EventBatch) -> None:
        """OTO: release secondaries per ``trigger_fill_condition``; OCO: a fill closes the other legs."""
        condition = order.trigger_fill_condition or "first_hit"
        if order.oto_order_ids:
            self._release_secondaries(order, condition, now_ms, batch)
        if order.oco_ref is not None and (condition != "complete_fill" or order.state == "filled"):
            # Legs still waiting for their primary are closed too: an OTOCO secondary that fills the moment it is
            # released (a stop already through its trigger) must end its sibling before the release loop reaches it.
            for other_id in list(self.oco.get(order.oco_ref, ())):
                other = self.live.get(other_id)
                if other is not None and other is not order:
                    self._close(other, "cancelled", now_ms, batch, reason="oco_other_closed")

    def _release_secondaries(self, primary: SimOrder, condition: str, now_ms: int, batch: EventBatch) -> None:
        if condition == "complete_fill" and primary.state != "filled":
            return
        inst = self.instruments[primary.instrument]
        for sec_id in primary.oto_order_ids or ():
            sec = self.live.get(sec_id)
            if sec is None:
                continue
            target = sec.secondary_amount
            if condition == "incremental":
                steps = math.floor(sec.secondary_amount * primary.filled_amount / primary.amount / inst.contract_size + EPS)
                target = q(steps * inst.contract_size)
            if sec.waiting_primary and target > 0:
                sec.waiting_primary = False
                sec.amount = target
                sec.update_ms = now_ms
                self._activate(sec, now_ms, batch)
            elif not sec.waiting_primary and target > sec.amount:
                sec.amount = target
                sec.update_ms = now_ms
                self.touch(sec, batch)

    def _sweep_reduce_only(self, account: SimAccount, instrument: str, now_ms: int, batch: EventBatch) -> None:
        """Resting reduce-only orders follow the position: cut to its size, cancelled when it is gone or flipped."""
        by = self._reduce_only.get((account.account_id, instrument))
        if not by:
            return
        size = account.size(instrument)
        for order in [o for o in by.values() if o.state == "open" and not o.waiting_primary]:
            if size == 0 or (size > 0) == (order.direction == "buy"):
                self._close(order, "cancelled", now_ms, batch, reason="risk_mitigation")
            elif order.remaining > abs(size) + EPS:
                order.amount = q(order.filled_amount + abs(size))
                order.update_ms = now_ms
                self.touch(order, batch)

    # ------------------------------------------------------------------------------------------- restore

    def adopt(self, accounts: dict[str, SimAccount], closed: dict[str, dict[str, list[str]]]) -> None:
        """Take over restored accounts (``persistence``): rebuild OCO groups, cut each closed-order window to
        ``history`` (``closed``: account -> instrument -> ids in closing order), re-index the live orders in
        placement order. Derived indices are never persisted, so they cannot disagree with the orders."""
        live: list[SimOrder] = []
        for aid, acct in accounts.items():
            for order in acct.orders.values():
                if order.is_live:
                    live.append(order)
                if order.oco_ref is not None:
                    self.oco.setdefault(order.oco_ref, []).append(order.order_id)
            self.accounts[aid] = acct
            for inst_name, ids in closed.get(aid, {}).items():
                window = self.closed[(aid, inst_name)] = deque(i for i in ids if i in acct.orders)
                while len(window) > self.history:
                    self._forget(acct, window.popleft())
        for order in sorted(live, key=lambda o: o.seq):
            self._restore_live(order)

    def _restore_live(self, order: SimOrder) -> None:
        inst = self.instruments[order.instrument]
        self.live[order.order_id] = order
        self.live_by.setdefault((order.account_id, order.instrument), {})[order.order_id] = order
        self._track_reduce_only(order)
        if order.state == "open" and not order.reduce_only and order.price:
            margin = self._reserved[order.order_id] = initial_margin(inst, order.remaining, order.price)
            key = (order.account_id, order.instrument)
            self.inst_margin[key] = self.inst_margin.get(key, 0.0) + margin
        self.index.add_expiry(order)
        if order.waiting_primary:
            return
        if order.state == "untriggered":
            self.index.add_trigger(order)
        elif order.price is not None:
            self.index.add_limit(order)


def _session_end(now_ms: int) -> int:
    """The next 08:00 UTC after ``now_ms`` (end of Deribit's trading day)."""
    return ((now_ms - SETTLEMENT_OFFSET_MS) // DAY_MS + 1) * DAY_MS + SETTLEMENT_OFFSET_MS
