"""The simulated exchange's trading API (``SimExchange``): Deribit's private methods over the matching core.

Sans-I/O like ``websockets``' protocol class: no sockets, no clock, no threads, no randomness. The server decodes
JSON-RPC and calls ``handle(account_id, method, params, now_ms)``; the market data feed calls
``on_market(tick, now_ms)``. Both return Deribit-shaped results and ``SimEvent`` notifications for the ``user.*``
channels.

How the parts fit (each module states its own contract):
- ``validation``: request parameters -> a checked ``OrderSpec``, or Deribit's refusal (``SimRefusal``); all the
  refusal codes and the choices behind them are documented there;
- ``core`` (``MatchingCore``): what happens to accepted orders: resting, triggers, fills, linked orders,
  reduce-only, expiry, bounded history; it never refuses;
- ``queries``: the read methods and the account math (summaries, positions, margins);
- ``persistence``: the state as JSON and back (``to_state``/``from_state``);
- ``changes``: what each call changed, as a journal record (``track_changes``; ``durable`` writes the records).
This module routes each method, validates before anything changes (a refused call changes nothing) and turns
what a call changed into notifications. Cancelling an order that is no longer live -> 11044 not_open_order; an
order of another account is not found (10004). ``user.portfolio`` is sent when an order or fill touches a
currency, not on every mark move; the server sends ``portfolio_events()`` periodically (throttled) to subscribers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tradebaas.exchange.deribit import codes
from tradebaas.instruments import Instrument

from . import persistence
from . import validation as v
from .accounts import SimAccount
from .core import DEFAULT_HISTORY, MatchingCore
from .errors import coded, invalid_params, unsupported
from .events import ChangeSet, EventBatch, SimEvent
from .market import MarketState, MarketTick
from .orders import EPS, FILL_CONDITIONS, LIMIT_LIKE_TYPES, LINKED_TYPES, SimOrder
from .queries import Queries, in_currency, type_matches

__all__ = ["DEFAULT_HISTORY", "MarketTick", "SimEvent", "SimExchange"]

#: A trading method: (account, params, now_ms, batch) -> Deribit's result.
Trader = Callable[[SimAccount, dict[str, Any], int, EventBatch], Any]


class SimExchange:
    """Deribit's trading and account methods over simulated accounts; pure, every call gets ``now_ms``.

    ``core`` holds the state (accounts, markets, live orders and their price index), ``queries`` answers the read
    methods from it.
    """

    def __init__(self, instruments: dict[str, Instrument], history: int = DEFAULT_HISTORY) -> None:
        self.core = MatchingCore(instruments, history)
        self.queries = Queries(self.core)
        self._pending: list[SimEvent] = []
        self._trading: dict[str, Trader] = {
            "buy": lambda a, p, n, b: self._buy_sell(a, p, n, b, "buy"),
            "sell": lambda a, p, n, b: self._buy_sell(a, p, n, b, "sell"),
            "edit": self._edit,
            "edit_by_label": self._edit_by_label,
            "cancel": self._cancel,
            "cancel_all": self._cancel_all,
            "cancel_all_by_instrument": self._cancel_all_by_instrument,
            "cancel_all_by_currency": self._cancel_all_by_currency,
            "cancel_by_label": self._cancel_by_label,
            "close_position": self._close_position,
        }

    # ------------------------------------------------------------------------------------------- public API

    @property
    def instruments(self) -> dict[str, Instrument]:
        return self.core.instruments

    @property
    def history(self) -> int:
        return self.core.history

    @property
    def accounts(self) -> dict[str, SimAccount]:
        return self.core.accounts

    @property
    def markets(self) -> dict[str, MarketState]:
        return self.core.markets

    @property
    def methods(self) -> frozenset[str]:
        """The ``private/*`` method names ``handle`` answers (without the prefix)."""
        return frozenset(self._trading) | frozenset(self.queries.methods)

    def create_account(self, account_id: str, balances: dict[str, float], now_ms: int = 0) -> None:
        """Open an account with starting balances per currency (BTC for inverse, USDC for linear)."""
        if account_id in self.accounts:
            raise ValueError(f"account {account_id!r} exists")
        self.accounts[account_id] = SimAccount(account_id, {c.upper(): float(v) for c, v in balances.items()},
                                               created_ms=now_ms)
        if self.core.changes is not None:
            self.core.changes.accounts[account_id] = None

    def track_changes(self) -> ChangeSet:
        """Mark every state change from now on for a journal (``changes.drain`` reads and clears the marks)."""
        if self.core.changes is None:
            self.core.changes = ChangeSet()
        return self.core.changes

    def handle(self, account_id: str, method: str, params: dict[str, Any] | None, now_ms: int) -> tuple[Any, list[SimEvent]]:
        """Answer one ``private/<method>`` call; raises ``SimRefusal`` with Deribit's code when refused.

        A refused call changes nothing (validation happens before any state changes).
        """
        name = method.removeprefix("private/")
        trade = self._trading.get(name)
        read = self.queries.methods.get(name) if trade is None else None
        if trade is None and read is None:
            raise unsupported(f"private/{name}")
        account = self.accounts.get(account_id)
        if account is None:
            raise coded(codes.UNAUTHORIZED, "unknown account")
        batch = EventBatch()
        if self.core.expiry_due(now_ms):
            self.core.expire(now_ms, batch)
            self._pending += self._events(batch)
            batch = EventBatch()
        if trade is not None:
            result = trade(account, params or {}, now_ms, batch)
        else:
            assert read is not None
            result = read(account, params or {}, now_ms)
        return result, self._take_pending() + self._events(batch)

    def on_market(self, tick: MarketTick, now_ms: int) -> list[SimEvent]:
        """A market move: fire triggers on their source price, then fill resting limits the market reached."""
        if tick.instrument not in self.markets:
            return []
        batch = EventBatch()
        self.core.on_tick(tick, now_ms, batch)
        return self._take_pending() + self._events(batch)

    def _take_pending(self) -> list[SimEvent]:
        """Events of expiries that ran before a refused call (a refusal returns no events)."""
        if not self._pending:
            return []
        out, self._pending = self._pending, []
        return out

    def portfolio_events(self, account_ids: Iterable[str] | None = None) -> list[SimEvent]:
        """``user.portfolio`` for every currency of the given accounts (all when None): the server's periodic push,
        so floating PnL and margins follow the mark between fills, as Deribit's channel does."""
        accounts = self.accounts.values() if account_ids is None else \
            [a for a in (self.accounts.get(i) for i in account_ids) if a is not None]
        return [SimEvent("user.portfolio", acct.account_id, None, self.queries.summary(acct, cur))
                for acct in accounts for cur in sorted(self.queries.currencies(acct))]

    def market(self, instrument: str) -> MarketState:
        return self.markets[instrument]

    def to_state(self) -> dict[str, Any]:
        """Everything that defines the exchange, JSON-serialisable; ``from_state`` restores it exactly."""
        return persistence.dump(self.core)

    @classmethod
    def from_state(cls, state: dict[str, Any], instruments: dict[str, Instrument],
                   history: int = DEFAULT_HISTORY) -> SimExchange:
        """Rebuild from ``to_state``; a state saved with a longer history is cut to ``history``."""
        persistence.check_version(state)
        ex = cls(instruments, history)
        persistence.load(ex.core, state)
        return ex

    # ------------------------------------------------------------------------------------------- validation

    def _spec(self, params: dict[str, Any], direction: str, inst: Instrument | None = None) -> v.OrderSpec:
        return v.order_spec(params, direction, inst or v.instrument(params, self.instruments))

    def _validate(self, account: SimAccount, spec: v.OrderSpec) -> None:
        """The checks against the current state, in Deribit's order of precedence as far as we know it."""
        market = self.markets[spec.instrument.name]
        size = account.size(spec.instrument.name)
        v.check_market(spec, market)
        v.check_trigger_not_breached(spec, market)
        v.check_reduce_only(spec, size)
        v.check_post_only(spec, market)
        if not spec.reduce_only:
            v.check_funds(spec, market, size, self.queries.available(account, spec.instrument.settlement_currency))

    # ------------------------------------------------------------------------------------------- trading methods

    def _buy_sell(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: EventBatch,
                  direction: str) -> dict[str, Any]:
        spec = self._spec(params, direction)
        linked = v.string(params, "linked_order_type", choices=LINKED_TYPES)
        if linked is None:
            self._validate(account, spec)
            return self.core.order_result(self.core.place(account, spec, now_ms, batch), batch)
        condition = v.string(params, "trigger_fill_condition", choices=FILL_CONDITIONS, default="first_hit")
        config = params.get("otoco_config")
        if not isinstance(config, list) or not config or not all(isinstance(c, dict) for c in config):
            raise invalid_params("otoco_config", "must be a non-empty list of orders")
        if linked == "one_triggers_one_cancels_other" and len(config) != 2:
            raise invalid_params("otoco_config", "one_triggers_one_cancels_other needs exactly two orders")
        secondaries = [self._secondary_spec(spec, c, linked == "one_cancels_other") for c in config]
        self._validate(account, spec)
        if linked == "one_cancels_other":
            for s in secondaries:
                self._validate(account, s)
        primary = self.core.place_linked(account, spec, secondaries, linked, condition, now_ms, batch)
        return self.core.order_result(primary, batch)

    def _secondary_spec(self, primary: v.OrderSpec, item: dict[str, Any], same_side: bool) -> v.OrderSpec:
        """An otoco_config item: same instrument; amount defaults to the primary's; direction to the primary's for
        OCO legs (both exit the same position) and to the opposite for OTO secondaries (they exit the entry)."""
        item = dict(item)
        item.setdefault("amount", primary.amount if item.get("contracts") is None else None)
        opposite = "sell" if primary.direction == "buy" else "buy"
        direction = v.string(item, "direction", choices=("buy", "sell"),
                             default=primary.direction if same_side else opposite) or opposite
        return self._spec(item, direction, primary.instrument)

    def _edit(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: EventBatch) -> dict[str, Any]:
        return self._edit_order(v.find_order(account, params), params, now_ms, batch)

    def _edit_by_label(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: EventBatch) -> dict[str, Any]:
        label = v.string(params, "label", required=True)
        inst = v.instrument(params, self.instruments)
        by = self.core.live_by.get((account.account_id, inst.name), {})
        matches = [o for o in by.values() if o.label == label]
        if len(matches) != 1:
            raise coded(codes.NON_UNIQUE_ORDER_LABEL, f"{len(matches)} open orders with this label", "label")
        return self._edit_order(matches[0], params, now_ms, batch)

    def _edit_order(self, order: SimOrder, params: dict[str, Any], now_ms: int, batch: EventBatch) -> dict[str, Any]:
        """Change amount/price/trigger of a live order; it keeps id and priority is lost (re-indexed)."""
        if not order.is_live:
            raise coded(codes.NOT_OPEN_ORDER, f"order is {order.state}", "order_id")
        inst = self.instruments[order.instrument]
        amount = v.amount(params, inst, required=False)
        if amount is None:
            amount = order.amount
        if amount <= order.filled_amount + EPS:
            raise coded(codes.INVALID_AMOUNT, "amount must exceed the filled amount", "amount")
        price = v.number(params, "price")
        if order.order_type in LIMIT_LIKE_TYPES:
            price = order.price if price is None else price
            assert price is not None
            v.check_price(inst, price)
        else:
            price = order.price
        trigger_price = v.number(params, "trigger_price")
        if trigger_price is not None:
            if not order.is_trigger:
                raise invalid_params("trigger_price", "only for trigger orders")
            v.check_price(inst, trigger_price, "trigger_price")
            if order.state == "untriggered" and not order.waiting_primary:
                probe = v.OrderSpec(inst, order.direction, order.order_type, amount, price,
                                    trigger=order.trigger, trigger_price=trigger_price)
                v.check_trigger_not_breached(probe, self.markets[inst.name])
        post_only = v.boolean(params, "post_only", order.post_only)
        reject = v.boolean(params, "reject_post_only", order.reject_post_only)
        reduce_only = v.boolean(params, "reduce_only", order.reduce_only)
        self.core.amend(order, amount, price, trigger_price, post_only, reject, reduce_only, now_ms, batch)
        return self.core.order_result(order, batch)

    def _cancel(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: EventBatch) -> dict[str, Any]:
        order = v.find_order(account, params)
        if not order.is_live:
            raise coded(codes.NOT_OPEN_ORDER, f"order is {order.state}", "order_id")
        self.core.cancel(order, now_ms, batch)
        return order.to_deribit(self.instruments[order.instrument].contract_size)

    def _cancel_all(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: EventBatch) -> int:
        return self.core.cancel_where(account, lambda o: True, now_ms, batch)

    def _cancel_all_by_instrument(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: EventBatch) -> int:
        inst = v.instrument(params, self.instruments)
        type_filter = v.string(params, "type", default="all")
        return self.core.cancel_where(account, lambda o: o.instrument == inst.name and type_matches(o, type_filter),
                                      now_ms, batch)

    def _cancel_all_by_currency(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: EventBatch) -> int:
        currency = (v.string(params, "currency", required=True) or "").upper()
        type_filter = v.string(params, "type", default="all")
        return self.core.cancel_where(account, lambda o: self._in_currency(o, currency)
                                      and type_matches(o, type_filter), now_ms, batch)

    def _cancel_by_label(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: EventBatch) -> int:
        label = v.string(params, "label", required=True)
        currency = (v.string(params, "currency") or "").upper()
        return self.core.cancel_where(account, lambda o: o.label == label and (
            not currency or self._in_currency(o, currency)), now_ms, batch)

    def _in_currency(self, order: SimOrder, currency: str) -> bool:
        return in_currency(self.instruments[order.instrument], currency)

    def _close_position(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: EventBatch) -> dict[str, Any]:
        inst = v.instrument(params, self.instruments)
        order_type = v.string(params, "type", required=True, choices=("limit", "market"))
        size = account.size(inst.name)
        if not size:
            raise coded(codes.OTHER_REJECT, "no position to close", "instrument_name")
        item: dict[str, Any] = {"amount": abs(size), "type": order_type, "reduce_only": True,
                                "price": params.get("price")}
        direction = "sell" if size > 0 else "buy"
        spec = self._spec(item, direction, inst)
        self._validate(account, spec)
        return self.core.order_result(self.core.place(account, spec, now_ms, batch), batch)

    # ------------------------------------------------------------------------------------------- events

    def _events(self, batch: EventBatch) -> list[SimEvent]:
        """EventBatch -> notifications: each order change, trades per instrument, changes, then portfolio."""
        events = [SimEvent("user.orders", acct, inst, obj) for acct, inst, obj in batch.orders]
        for (acct, inst), trades in batch.trades.items():
            events.append(SimEvent("user.trades", acct, inst, [dict(t) for t in trades]))
        for (acct, inst), orders in batch.changes.items():
            account = self.accounts[acct]
            events.append(SimEvent("user.changes", acct, inst, {
                "instrument_name": inst,
                "trades": [dict(t) for t in batch.trades.get((acct, inst), ())],
                "orders": list(orders.values()),
                "positions": [self.queries.position(account, self.instruments[inst])],
            }))
        for acct, cur in batch.portfolio:
            events.append(SimEvent("user.portfolio", acct, None, self.queries.summary(self.accounts[acct], cur)))
        return events
