"""The simulator's pure matching core: accounts, orders, triggers, fills, positions (``SimExchange``).

Sans-I/O like ``websockets``' protocol class: no sockets, no clock, no threads, no randomness. The server decodes
JSON-RPC and calls ``handle(account_id, method, params, now_ms)``; the market data feed calls
``on_market(tick, now_ms)``. Both return Deribit-shaped results and ``SimEvent`` notifications for the ``user.*``
channels. Fees and PnL come from ``tradebaas.fillmodel`` so the backtester and the simulator agree.

The book is not simulated: a market order (or a limit that crosses) fills in full at the best ask/bid of the last
``MarketTick`` as taker; a resting limit fills in full at its own price as maker when the last trade price or the
opposite best quote reaches it (``MarketTick.trade_amount`` is not used to cap fills: fills are whole).

Choices where Deribit's behaviour is unknown or not modelled (keep clients honest, document, don't guess silently):
- Unknown ``instrument_name``: 10020 invalid_or_unsupported_instrument (ccxt maps it to BadSymbol), not -32602.
- Amount: <= 0 -> 10021; below min_trade_amount -> 10002 qty_too_low; not a multiple of contract_size -> 10027
  non_integer_contract_amount; ``amount`` and ``contracts`` disagreeing or both missing -> -32602.
- Price off tick -> 10043 price_wrong_tick; trigger price off tick -> 10044; missing price/trigger_price -> -32602.
- A stop/take whose trigger source already passed its trigger -> 10034 trigger_price_too_high / 10035 _too_low
  (OTO secondaries released later fire at once instead). ``trigger`` defaults to ``last_price`` when omitted.
- Not enough funds (10009): initial margin (notional / max_leverage) of the position-increasing part of a
  non-reduce-only order must fit available funds (equity - position margin - open-order margin); not rechecked
  on edit or at trigger time. Maintenance margin is half the initial margin. Nothing is ever liquidated.
- A reduce-only non-trigger order with no opposite position -> 11030 other_reject; one larger than the position is
  cut to it. Live reduce-only orders follow the position (cut, or cancelled with ``cancel_reason``
  "risk_mitigation" when it is gone or flipped); a reduce-only trigger order firing with nothing to reduce is
  cancelled the same way. ``close_position`` when flat -> 11030.
- post_only + reject_post_only crossing -> 11054; post_only alone is repriced one tick behind the spread. A
  crossing post-only *edit* with reject cancels the order (``edit_post_only_reject``) and returns it, no error.
- Triggered orders keep their order_id (no new order with ``trigger_order_id``); ``triggered`` becomes true;
  stop/take market fill at once, stop/take limit become ``open`` limits. trailing_stop -> 10033 not_implemented.
- Linked orders: OCO = the primary plus the ``otoco_config`` orders, all live, sharing ``oco_ref``; a fill of one
  (``complete_fill``: its full fill) cancels the others ("oco_other_closed"); a user cancel of one leg does not.
  OTO/OTOCO secondaries wait as ``untriggered`` with ``is_secondary_oto`` until the primary fills
  (first_hit/complete_fill/incremental), and are cancelled ("oto_primary_closed") if it closes unfilled.
- good_til_day orders expire at the next 08:00 UTC (``cancel_reason`` "settlement"). Cancelling an order that is
  no longer live -> 11044 not_open_order; an order of another account -> 10004.
- Session PnL never resets (no daily settlement, no funding): session_rpl/upl are totals since the account opened.
- ``user.portfolio`` is sent when an order or fill touches a currency, not on every mark move; the server sends
  ``portfolio_events()`` periodically (throttled) to subscribers.
- History is bounded (Deribit, too, serves history in bounded pages): per account and instrument the last
  ``history`` closed orders (in closing order) and the last ``history`` user trades are kept; older ones are
  pruned when an order closes or a trade is added, so the state and its saves stay small however long it runs.
  Open orders, positions, balances, cumulative realized PnL/fees and id counters are always kept in full. Queries
  (``get_user_trades_*``, ``get_order_state`` of a closed order, ``get_order_history_by_instrument``) answer from
  the kept window: a pruned order answers 10004 order_not_found, a pruned trade is simply absent. Reconciliation
  (trades since a timestamp, open orders, positions) is unaffected as long as it looks back less than the window.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tradebaas.domain import Liquidity, OrderType, Side
from tradebaas.exchange.deribit import codes as E
from tradebaas.fillmodel import fee as fill_fee
from tradebaas.fillmodel import limit_crosses, stop_fill_price, trigger_fires
from tradebaas.instruments import Instrument

from .accounts import (
    MAINTENANCE_FRACTION,
    SimAccount,
    SimPosition,
    initial_margin,
    liquidation_price,
    position_object,
    weighted_average,
)
from .errors import SimRefusal, coded, invalid_params
from .orders import (
    FILL_CONDITIONS,
    LIMIT_LIKE_TYPES,
    LINKED_TYPES,
    MARKET_LIKE_TRIGGER_TYPES,
    ORDER_TYPES,
    TIME_IN_FORCE,
    TRIGGER_SOURCES,
    SimOrder,
    q,
)

STATE_VERSION = 1
#: Closed orders and user trades kept per account and instrument (``--history``); see the module docs.
DEFAULT_HISTORY = 2000
MAX_LABEL = 64
DAY_MS = 86_400_000
SETTLEMENT_OFFSET_MS = 8 * 3_600_000  # Deribit's daily session ends at 08:00 UTC (good_til_day expiry)
FIRST_ORDER_ID = 1_000_000
FIRST_TRADE_ID = 100_000
EPS = 1e-9


@dataclass(slots=True, frozen=True)
class MarketTick:
    """A market move on one instrument (prices in the quote currency; best quotes may be unknown)."""

    instrument: str
    ts_ms: int
    last_price: float
    mark_price: float
    index_price: float
    best_bid: float | None
    best_ask: float | None
    trade_amount: float = 0.0
    #: The price came here from the previous tick through every price in between (ticks of a replayed candle path,
    #: after its open): a stop/take market order fired by this tick fills at its trigger (``fillmodel``), as in a
    #: backtest over the same candle. False (a jump, e.g. recorded ticks or a candle's open): at the market.
    continuous: bool = False


@dataclass(slots=True, frozen=True)
class SimEvent:
    """A user notification: ``kind`` is the channel family, ``data`` Deribit's payload for it.

    ``instrument`` is None for ``user.portfolio`` (whose data carries ``currency``).
    """

    kind: str
    account_id: str
    instrument: str | None
    data: Any


@dataclass(slots=True)
class _Market:
    last_price: float = 0.0
    mark_price: float = 0.0
    index_price: float = 0.0
    best_bid: float | None = None
    best_ask: float | None = None
    ts_ms: int = 0
    last_trade_price: float = 0.0  # of our own fills, for tick_direction
    tick_direction: int = 1
    continuous: bool = False  # of the last MarketTick

    @property
    def seen(self) -> bool:
        return bool(self.last_price or self.best_bid or self.best_ask)

    def taker_price(self, direction: str) -> float:
        """What a taker pays: best ask for a buy, best bid for a sell, the last price when that side is empty."""
        quote = self.best_ask if direction == "buy" else self.best_bid
        return quote if quote else self.last_price

    def source_price(self, source: str) -> float:
        return self.mark_price if source == "mark_price" else self.index_price if source == "index_price" else self.last_price

    def to_state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class _Batch:
    """What one call changed, turned into ``SimEvent``s at its end (order snapshots in change order)."""

    __slots__ = ("orders", "trades", "changes", "portfolio", "cancelled")

    def __init__(self) -> None:
        self.orders: list[tuple[str, str, dict[str, Any]]] = []
        self.trades: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.changes: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.portfolio: dict[tuple[str, str], None] = {}
        self.cancelled = 0


@dataclass(slots=True)
class _Spec:
    """A validated order request (before it becomes a ``SimOrder``)."""

    instrument: Instrument
    direction: str
    order_type: str
    amount: float
    price: float | None
    time_in_force: str = "good_til_cancelled"
    label: str = ""
    post_only: bool = False
    reject_post_only: bool = False
    reduce_only: bool = False
    trigger: str | None = None
    trigger_price: float | None = None


# --------------------------------------------------------------------------------------------------- params


def _num(params: dict[str, Any], name: str, required: bool = False) -> float | None:
    value = params.get(name)
    if value is None:
        if required:
            raise invalid_params(name, "must be present")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid_params(name, "must be a number")
    return float(value)


def _str(params: dict[str, Any], name: str, required: bool = False, choices: Iterable[str] | None = None,
         default: str | None = None) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise invalid_params(name, "must be present")
        return default
    if not isinstance(value, str):
        raise invalid_params(name, "must be a string")
    if choices is not None and value not in choices:
        raise invalid_params(name, "must be one of " + ", ".join(sorted(choices)))
    return value


def _bool(params: dict[str, Any], name: str, default: bool = False) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_params(name, "must be a boolean")
    return value


def _int(params: dict[str, Any], name: str, default: int | None = None) -> int | None:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise invalid_params(name, "must be an integer")
    return int(value)


def _fires(order_type: str, direction: str, trigger_price: float, price: float) -> bool:
    return trigger_fires(OrderType(order_type), Side(direction), trigger_price, price)


def _crosses(direction: str, limit_price: float, price: float) -> bool:
    return limit_crosses(Side(direction), limit_price, price)


def _type_matches(order: SimOrder, type_filter: str | None) -> bool:
    """Deribit's ``type`` filter of the open-order and cancel methods."""
    t = order.order_type
    if type_filter in (None, "all"):
        return True
    if type_filter == "limit":
        return not order.is_trigger
    if type_filter == "trigger_all":
        return order.is_trigger
    if type_filter == "stop_all":
        return t.startswith("stop_")
    if type_filter == "take_all":
        return t.startswith("take_")
    if type_filter == "trailing_all":
        return t == "trailing_stop"
    return t == type_filter


# --------------------------------------------------------------------------------------------------- exchange


class SimExchange:
    """Deribit's trading and account methods over simulated accounts; pure, every call gets ``now_ms``.

    Orders are indexed by instrument and side in lazy-deletion heaps (resting limits by price, triggers by trigger
    price per trigger source), so placing, cancelling and matching cost O(log n) in the number of live orders.
    """

    def __init__(self, instruments: dict[str, Instrument], history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise ValueError("history must be >= 1")
        self.instruments = dict(instruments)
        self.history = int(history)
        #: (account, instrument) -> ids of its closed orders still kept, oldest closed first (pruned from the left)
        self._closed: dict[tuple[str, str], deque[str]] = {}
        self.accounts: dict[str, SimAccount] = {}
        self.markets: dict[str, _Market] = {name: _Market() for name in self.instruments}
        self._next_order = FIRST_ORDER_ID
        self._next_trade = FIRST_TRADE_ID
        self._next_seq = 0
        self._next_oco = 1
        self._trade_seq: dict[str, int] = {name: 0 for name in self.instruments}
        self._live: dict[str, SimOrder] = {}
        self._live_by: dict[tuple[str, str], dict[str, SimOrder]] = {}
        self._oco: dict[str, list[str]] = {}
        self._order_margin: dict[tuple[str, str], float] = {}  # (account, currency) -> margin of open orders
        self._reserved: dict[str, float] = {}  # order_id -> its part of _order_margin
        self._inst_margin: dict[tuple[str, str], float] = {}  # (account, instrument) -> open-order margin (display)
        self._reduce_only: dict[tuple[str, str], dict[str, SimOrder]] = {}  # live reduce-only orders
        self._bids: dict[str, list[tuple[float, int, int, str]]] = {n: [] for n in self.instruments}
        self._asks: dict[str, list[tuple[float, int, int, str]]] = {n: [] for n in self.instruments}
        self._up: dict[tuple[str, str], list[tuple[float, int, int, str]]] = {}
        self._down: dict[tuple[str, str], list[tuple[float, int, int, str]]] = {}
        self._expiry: list[tuple[int, int, str]] = []
        self._pending: list[SimEvent] = []
        self._methods: dict[str, Callable[[SimAccount, dict[str, Any], int, _Batch], Any]] = {
            "buy": lambda a, p, n, b: self._buy_sell(a, p, n, b, "buy"),
            "sell": lambda a, p, n, b: self._buy_sell(a, p, n, b, "sell"),
            "edit": self._edit,
            "edit_by_label": self._edit_by_label,
            "cancel": self._cancel_method,
            "cancel_all": self._cancel_all,
            "cancel_all_by_instrument": self._cancel_all_by_instrument,
            "cancel_all_by_currency": self._cancel_all_by_currency,
            "cancel_by_label": self._cancel_by_label,
            "close_position": self._close_position,
            "get_open_orders": self._get_open_orders,
            "get_open_orders_by_instrument": self._get_open_orders_by_instrument,
            "get_open_orders_by_currency": self._get_open_orders_by_currency,
            "get_order_state": self._get_order_state,
            "get_order_state_by_label": self._get_order_state_by_label,
            "get_order_history_by_instrument": self._get_order_history_by_instrument,
            "get_position": self._get_position,
            "get_positions": self._get_positions,
            "get_user_trades_by_instrument": self._get_user_trades_by_instrument,
            "get_user_trades_by_currency": self._get_user_trades_by_currency,
            "get_user_trades_by_order": self._get_user_trades_by_order,
            "get_account_summary": self._get_account_summary,
            "get_account_summaries": self._get_account_summaries,
        }

    # ------------------------------------------------------------------------------------------- public API

    @property
    def methods(self) -> frozenset[str]:
        """The ``private/*`` method names ``handle`` answers (without the prefix)."""
        return frozenset(self._methods)

    def create_account(self, account_id: str, balances: dict[str, float], now_ms: int = 0) -> None:
        """Open an account with starting balances per currency (BTC for inverse, USDC for linear)."""
        if account_id in self.accounts:
            raise ValueError(f"account {account_id!r} exists")
        self.accounts[account_id] = SimAccount(account_id, {c.upper(): float(v) for c, v in balances.items()},
                                               created_ms=now_ms)

    def handle(self, account_id: str, method: str, params: dict[str, Any] | None, now_ms: int) -> tuple[Any, list[SimEvent]]:
        """Answer one ``private/<method>`` call; raises ``SimRefusal`` with Deribit's code when refused.

        A refused call changes nothing (validation happens before any state changes).
        """
        fn = self._methods.get(method.removeprefix("private/"))
        if fn is None:
            raise SimRefusal(E.METHOD_NOT_FOUND, "Method not found")
        account = self.accounts.get(account_id)
        if account is None:
            raise coded(E.UNAUTHORIZED, "unknown account")
        batch = _Batch()
        if self._expiry and self._expiry[0][0] <= now_ms:
            self._expire(now_ms, batch)
            self._pending += self._events(batch)
            batch = _Batch()
        result = fn(account, params or {}, now_ms, batch)
        return result, self._take_pending() + self._events(batch)

    def on_market(self, tick: MarketTick, now_ms: int) -> list[SimEvent]:
        """A market move: fire triggers on their source price, then fill resting limits the market reached."""
        m = self.markets.get(tick.instrument)
        if m is None:
            return []
        m.last_price, m.mark_price, m.index_price = tick.last_price, tick.mark_price, tick.index_price
        m.best_bid, m.best_ask, m.ts_ms = tick.best_bid, tick.best_ask, tick.ts_ms
        m.continuous = tick.continuous
        batch = _Batch()
        self._expire(now_ms, batch)
        self._fire_triggers(tick.instrument, m, now_ms, batch)
        self._match_resting(tick.instrument, m, now_ms, batch)
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
        return [SimEvent("user.portfolio", acct.account_id, None, self._summary(acct, cur))
                for acct in accounts for cur in sorted(self._currencies(acct))]

    def market(self, instrument: str) -> _Market:
        return self.markets[instrument]

    # ------------------------------------------------------------------------------------------- validation

    def _instrument(self, params: dict[str, Any], name: str = "instrument_name") -> Instrument:
        """Unknown names answer 10020 invalid_or_unsupported_instrument (ccxt maps it to BadSymbol)."""
        inst_name = _str(params, name, required=True)
        inst = self.instruments.get(inst_name or "")
        if inst is None:
            raise coded(E.INVALID_OR_UNSUPPORTED_INSTRUMENT, f"unknown instrument {inst_name}", name)
        return inst

    def _amount(self, params: dict[str, Any], inst: Instrument, required: bool = True) -> float | None:
        amount = _num(params, "amount")
        contracts = _num(params, "contracts")
        if amount is None and contracts is None:
            if required:
                raise invalid_params("amount", "must be present (amount or contracts)")
            return None
        if contracts is not None:
            from_contracts = q(contracts * inst.contract_size)
            if amount is not None and abs(amount - from_contracts) > EPS * max(1.0, abs(amount)):
                raise invalid_params("contracts", "amount and contracts do not match")
            amount = from_contracts
        assert amount is not None
        self._check_amount(inst, amount)
        return q(amount)

    @staticmethod
    def _check_amount(inst: Instrument, amount: float) -> None:
        if amount <= 0:
            raise coded(E.INVALID_AMOUNT, "amount must be positive", "amount")
        if amount < inst.min_trade_amount - EPS * inst.min_trade_amount:
            raise coded(E.QTY_TOO_LOW, f"must be at least {inst.min_trade_amount}", "amount")
        if not _multiple(amount, inst.contract_size):
            raise coded(E.NON_INTEGER_CONTRACT_AMOUNT, f"must be a multiple of contract size {inst.contract_size}", "amount")
        if not _multiple(amount, inst.min_trade_amount):
            raise coded(E.INVALID_AMOUNT, f"must be a multiple of {inst.min_trade_amount}", "amount")

    @staticmethod
    def _check_price(inst: Instrument, price: float, param: str = "price") -> None:
        code = E.PRICE_WRONG_TICK if param == "price" else E.TRIGGER_PRICE_WRONG_TICK
        if price <= 0:
            raise coded(E.INVALID_PRICE if param == "price" else E.INVALID_TRIGGER_PRICE, "must be positive", param)
        if not inst.is_on_tick(price):
            raise coded(code, f"must be a multiple of tick size {inst.tick_size}", param)

    def _spec(self, params: dict[str, Any], direction: str, inst: Instrument | None = None) -> _Spec:
        """Validate one buy/sell (or otoco_config item) into a ``_Spec``; Deribit's codes on refusal."""
        inst = inst or self._instrument(params)
        order_type = _str(params, "type", choices=ORDER_TYPES, default="limit") or "limit"
        if order_type == "trailing_stop":
            raise coded(E.NOT_IMPLEMENTED, "trailing_stop is not simulated", "type")
        amount = self._amount(params, inst)
        assert amount is not None
        label = _str(params, "label", default="") or ""
        if len(label) > MAX_LABEL:
            raise invalid_params("label", f"must be at most {MAX_LABEL} characters")
        price: float | None = None
        if order_type in LIMIT_LIKE_TYPES:
            price = _num(params, "price", required=True)
            assert price is not None
            self._check_price(inst, price)
        spec = _Spec(inst, direction, order_type, amount, price, label=label,
                     time_in_force=_str(params, "time_in_force", choices=TIME_IN_FORCE,
                                        default="good_til_cancelled") or "good_til_cancelled",
                     post_only=_bool(params, "post_only") and order_type in LIMIT_LIKE_TYPES,
                     reject_post_only=_bool(params, "reject_post_only"),
                     reduce_only=_bool(params, "reduce_only"))
        if order_type in MARKET_LIKE_TRIGGER_TYPES or order_type in ("stop_limit", "take_limit"):
            trigger_price = _num(params, "trigger_price", required=True)
            assert trigger_price is not None
            self._check_price(inst, trigger_price, "trigger_price")
            spec.trigger_price = trigger_price
            spec.trigger = _str(params, "trigger", choices=TRIGGER_SOURCES, default="last_price")
        return spec

    def _check_trigger_not_breached(self, spec: _Spec) -> None:
        """A stop/take whose trigger the market already passed is refused (10034 too high / 10035 too low)."""
        if spec.trigger_price is None or spec.trigger is None:
            return
        now = self.markets[spec.instrument.name].source_price(spec.trigger)
        if now and _fires(spec.order_type, spec.direction, spec.trigger_price, now):
            too_high = spec.trigger_price >= now
            raise coded(E.TRIGGER_PRICE_TOO_HIGH if too_high else E.TRIGGER_PRICE_TOO_LOW,
                        f"{spec.trigger} is {now}", "trigger_price")

    def _check_reduce_only(self, account: SimAccount, spec: _Spec) -> None:
        """A reduce-only order (not a trigger order) must face an opposite position, else 11030 other_reject."""
        if not spec.reduce_only or spec.trigger_price is not None:
            return
        size = account.size(spec.instrument.name)
        if size == 0 or (size > 0) == (spec.direction == "buy"):
            raise coded(E.OTHER_REJECT, "reduce_only order would increase the position", "reduce_only")

    def _check_funds(self, account: SimAccount, spec: _Spec) -> None:
        """Initial margin of the position-increasing part must fit the available funds (else 10009)."""
        if spec.reduce_only:
            return
        inst = spec.instrument
        m = self.markets[inst.name]
        ref = spec.price or spec.trigger_price or m.taker_price(spec.direction)
        size = account.size(inst.name)
        increase = spec.amount
        if size and (size > 0) != (spec.direction == "buy"):
            increase = max(0.0, spec.amount - abs(size))
        required = initial_margin(inst, increase, ref)
        if required > self._available(account, inst.settlement_currency) + EPS:
            raise coded(E.NOT_ENOUGH_FUNDS)

    def _check_market(self, spec: _Spec) -> None:
        if spec.order_type in ("market", "market_limit") and not self.markets[spec.instrument.name].seen:
            raise coded(E.BOOK_CLOSED, "no market data for this instrument yet", "instrument_name")

    def _check_post_only(self, spec: _Spec) -> None:
        if spec.post_only and spec.reject_post_only and spec.order_type == "limit" and spec.price is not None:
            if self._would_cross(spec.instrument.name, spec.direction, spec.price):
                raise coded(E.POST_ONLY_REJECT, "post_only order would take liquidity", "price")

    def _validate(self, account: SimAccount, spec: _Spec) -> None:
        self._check_market(spec)
        self._check_trigger_not_breached(spec)
        self._check_reduce_only(account, spec)
        self._check_post_only(spec)
        self._check_funds(account, spec)

    # ------------------------------------------------------------------------------------------- orders

    def _new_order(self, account: SimAccount, spec: _Spec, now_ms: int) -> SimOrder:
        inst = spec.instrument
        prefix = "" if inst.settlement_currency == "BTC" else f"{inst.settlement_currency}-"
        order_id = f"{prefix}{self._next_order}"
        self._next_order += 1
        self._next_seq += 1
        order = SimOrder(
            order_id=order_id, account_id=account.account_id, instrument=inst.name, direction=spec.direction,
            order_type=spec.order_type, time_in_force=spec.time_in_force, amount=spec.amount, price=spec.price,
            state="untriggered" if spec.trigger_price is not None else "open", creation_ms=now_ms,
            update_ms=now_ms, seq=self._next_seq, label=spec.label, post_only=spec.post_only,
            reject_post_only=spec.reject_post_only, reduce_only=spec.reduce_only, trigger=spec.trigger,
            trigger_price=spec.trigger_price, triggered=False if spec.trigger_price is not None else None,
        )
        if spec.time_in_force == "good_til_day":
            order.expire_ms = _session_end(now_ms)
        account.orders[order_id] = order
        self._live[order_id] = order
        self._live_by.setdefault((account.account_id, inst.name), {})[order_id] = order
        self._track_reduce_only(order)
        return order

    def _track_reduce_only(self, order: SimOrder) -> None:
        """Keep the per-instrument index of live reduce-only orders (what the reduce-only sweep visits)."""
        key = (order.account_id, order.instrument)
        if order.reduce_only and order.is_live:
            self._reduce_only.setdefault(key, {})[order.order_id] = order
        elif key in self._reduce_only:
            self._reduce_only[key].pop(order.order_id, None)

    def _activate(self, order: SimOrder, now_ms: int, batch: _Batch) -> None:
        """Put a live order to work: wait for its trigger, execute it, or rest it (maybe filling first)."""
        if order.expire_ms is not None:
            heapq.heappush(self._expiry, (order.expire_ms, order.seq, order.order_id))
        if order.is_trigger and not order.triggered:
            order.state = "untriggered"
            self._touch(order, batch)
            m = self.markets[order.instrument]
            now = m.source_price(order.trigger or "last_price")
            if now and _fires(order.order_type, order.direction, order.trigger_price or 0.0, now):
                self._fire(order, now_ms, batch)
            else:
                self._index_trigger(order)
            return
        if order.order_type in ("market", "market_limit") or order.order_type in MARKET_LIKE_TRIGGER_TYPES:
            self._execute_market(order, now_ms, batch)
            return
        self._execute_limit(order, now_ms, batch)

    def _execute_market(self, order: SimOrder, now_ms: int, batch: _Batch, price: float | None = None) -> None:
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

    def _execute_limit(self, order: SimOrder, now_ms: int, batch: _Batch) -> None:
        """A (possibly just triggered) limit: reprice post-only, take what crosses, rest or cancel the rest."""
        assert order.price is not None
        m = self.markets[order.instrument]
        order.state = "open"
        if self._would_cross(order.instrument, order.direction, order.price):
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
        self._touch(order, batch)
        self._index_limit(order)

    def _would_cross(self, instrument: str, direction: str, price: float) -> bool:
        m = self.markets[instrument]
        quote = m.best_ask if direction == "buy" else m.best_bid
        return bool(quote) and _crosses(direction, price, quote or 0.0)

    def _post_only_price(self, instrument: str, direction: str) -> float:
        """Just behind the spread, as Deribit reprices a crossing post-only order."""
        inst = self.instruments[instrument]
        m = self.markets[instrument]
        if direction == "buy":
            return inst.round_price(max(inst.tick_size, (m.best_ask or 0.0) - inst.tick_size))
        return inst.round_price((m.best_bid or 0.0) + inst.tick_size)

    def _take(self, order: SimOrder, price: float, now_ms: int, batch: _Batch) -> None:
        amount = self._fillable(order, now_ms, batch)
        if amount > 0:
            self._fill(order, amount, price, Liquidity.TAKER, now_ms, batch)

    def _fillable(self, order: SimOrder, now_ms: int, batch: _Batch) -> float:
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

    def _fill(self, order: SimOrder, amount: float, price: float, liquidity: Liquidity, now_ms: int, batch: _Batch) -> None:
        """One fill: position, balance (+ realized PnL - fee), order progress, user trade, then linked orders."""
        inst = self.instruments[order.instrument]
        account = self.accounts[order.account_id]
        cur = inst.settlement_currency
        fee = fill_fee(inst, amount, price, liquidity)
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
        if order.state == "filled":
            self._retire(order)
        self._touch(order, batch)
        self._after_fill(order, now_ms, batch)
        self._sweep_reduce_only(account, inst.name, now_ms, batch)

    def _trade(self, order: SimOrder, inst: Instrument, amount: float, price: float, fee: float, pnl: float,
               liquidity: Liquidity, now_ms: int) -> dict[str, Any]:
        m = self.markets[inst.name]
        prefix = "" if inst.settlement_currency == "BTC" else f"{inst.settlement_currency}-"
        trade_id = f"{prefix}{self._next_trade}"
        self._next_trade += 1
        self._trade_seq[inst.name] = seq = self._trade_seq.get(inst.name, 0) + 1
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

    def _fire(self, order: SimOrder, now_ms: int, batch: _Batch, continuous: bool = False) -> None:
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

    def _close(self, order: SimOrder, state: str, now_ms: int, batch: _Batch, reason: str | None = None) -> None:
        """End a live order (cancelled/rejected); cancels the OTO secondaries its fill would have released."""
        if not order.is_live:
            return
        order.state = state
        order.cancel_reason = reason if state == "cancelled" else None
        order.update_ms = now_ms
        self._retire(order)
        batch.cancelled += 1
        self._touch(order, batch)
        for sec_id in order.oto_order_ids or ():
            sec = self._live.get(sec_id)
            if sec is not None and sec.waiting_primary:
                self._close(sec, "cancelled", now_ms, batch, reason="oto_primary_closed")

    def _retire(self, order: SimOrder) -> None:
        order.version += 1
        if self._live.pop(order.order_id, None) is not None:
            self._keep_closed(order)
        key = (order.account_id, order.instrument)
        by = self._live_by.get(key)
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
        closed = self._closed.get(key)
        if closed is None:
            closed = self._closed[key] = deque()
        closed.append(order.order_id)
        if len(closed) > self.history:
            self._forget(self.accounts[order.account_id], closed.popleft())

    def _forget(self, account: SimAccount, order_id: str) -> None:
        old = account.orders.pop(order_id, None)
        if old is not None and old.oco_ref is not None:
            group = self._oco.get(old.oco_ref)
            if group is not None:
                group[:] = [i for i in group if i != order_id]
                if not group:
                    del self._oco[old.oco_ref]

    def _touch(self, order: SimOrder, batch: _Batch) -> None:
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
            self._order_margin[key] = self._order_margin.get(key, 0.0) + new - old
            ikey = (order.account_id, order.instrument)
            self._inst_margin[ikey] = self._inst_margin.get(ikey, 0.0) + new - old
        obj = order.to_deribit(inst.contract_size)
        batch.orders.append((order.account_id, order.instrument, obj))
        batch.changes.setdefault((order.account_id, order.instrument), {})[order.order_id] = obj
        batch.portfolio[key] = None

    # ------------------------------------------------------------------------------------------- linked orders

    def _after_fill(self, order: SimOrder, now_ms: int, batch: _Batch) -> None:
        """OTO: release secondaries per ``trigger_fill_condition``; OCO: a fill closes the other legs."""
        condition = order.trigger_fill_condition or "first_hit"
        if order.oto_order_ids:
            self._release_secondaries(order, condition, now_ms, batch)
        if order.oco_ref is not None and (condition != "complete_fill" or order.state == "filled"):
            # Legs still waiting for their primary are closed too: an OTOCO secondary that fills the moment it is
            # released (a stop already through its trigger) must end its sibling before the release loop reaches it.
            for other_id in list(self._oco.get(order.oco_ref, ())):
                other = self._live.get(other_id)
                if other is not None and other is not order:
                    self._close(other, "cancelled", now_ms, batch, reason="oco_other_closed")

    def _release_secondaries(self, primary: SimOrder, condition: str, now_ms: int, batch: _Batch) -> None:
        if condition == "complete_fill" and primary.state != "filled":
            return
        inst = self.instruments[primary.instrument]
        for sec_id in primary.oto_order_ids or ():
            sec = self._live.get(sec_id)
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
                self._touch(sec, batch)

    # ------------------------------------------------------------------------------------------- reduce-only

    def _sweep_reduce_only(self, account: SimAccount, instrument: str, now_ms: int, batch: _Batch) -> None:
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
                self._touch(order, batch)

    # ------------------------------------------------------------------------------------------- indices

    def _index_limit(self, order: SimOrder) -> None:
        assert order.price is not None
        if order.direction == "buy":
            self._push(self._bids[order.instrument], (-order.price, order.seq, order.version, order.order_id))
        else:
            self._push(self._asks[order.instrument], (order.price, order.seq, order.version, order.order_id))

    def _index_trigger(self, order: SimOrder) -> None:
        """Index by the price move that fires it: up (buy stop, sell take) or down (sell stop, buy take)."""
        assert order.trigger_price is not None and order.trigger is not None
        key = (order.instrument, order.trigger)
        fires_up = (order.order_type.startswith("stop")) == (order.direction == "buy")
        if fires_up:
            self._push(self._up.setdefault(key, []), (order.trigger_price, order.seq, order.version, order.order_id))
        else:
            self._push(self._down.setdefault(key, []), (-order.trigger_price, order.seq, order.version, order.order_id))

    def _push(self, heap: list[tuple[float, int, int, str]], entry: tuple[float, int, int, str]) -> None:
        """Push onto a lazy-deletion heap; when stale entries (cancelled, edited, filled orders far from the market)
        outnumber the live ones, drop them, so a client placing and cancelling forever does not grow memory."""
        heapq.heappush(heap, entry)
        if len(heap) > 64 and len(heap) > 2 * len(self._live) + 64:
            live = [e for e in heap if (o := self._live.get(e[3])) is not None and o.version == e[2]]
            heapq.heapify(live)
            heap[:] = live

    def _pop_valid(self, heap: list[tuple[float, int, int, str]], reached: Callable[[float], bool],
                   want_state: str) -> list[SimOrder]:
        """Pop every entry whose key the market reached; keep only entries still current (lazy deletion)."""
        out: list[SimOrder] = []
        while heap and reached(heap[0][0]):
            _, _, version, order_id = heapq.heappop(heap)
            order = self._live.get(order_id)
            if order is not None and order.version == version and order.state == want_state and not order.waiting_primary:
                out.append(order)
        return out

    def _fire_triggers(self, instrument: str, m: _Market, now_ms: int, batch: _Batch) -> None:
        fired: list[SimOrder] = []
        for source in TRIGGER_SOURCES:
            price = m.source_price(source)
            if not price:
                continue
            up = self._up.get((instrument, source))
            if up:
                fired += self._pop_valid(up, lambda key, p=price: key <= p, "untriggered")
            down = self._down.get((instrument, source))
            if down:
                fired += self._pop_valid(down, lambda key, p=price: -key >= p, "untriggered")
        fired.sort(key=lambda o: o.seq)
        for order in fired:
            if order.state == "untriggered":
                self._fire(order, now_ms, batch, m.continuous)

    def _match_resting(self, instrument: str, m: _Market, now_ms: int, batch: _Batch) -> None:
        """Resting limits the last trade or the opposite best quote reached fill at their own price, as maker."""
        prices = [p for p in (m.last_price, m.best_ask) if p]
        if prices:
            low = min(prices)
            for order in self._pop_valid(self._bids[instrument], lambda key: -key >= low, "open"):
                self._make(order, now_ms, batch)
        prices = [p for p in (m.last_price, m.best_bid) if p]
        if prices:
            high = max(prices)
            for order in self._pop_valid(self._asks[instrument], lambda key: key <= high, "open"):
                self._make(order, now_ms, batch)

    def _make(self, order: SimOrder, now_ms: int, batch: _Batch) -> None:
        if not order.is_live or order.price is None:
            return
        amount = self._fillable(order, now_ms, batch)
        if amount > 0:
            self._fill(order, amount, order.price, Liquidity.MAKER, now_ms, batch)

    def _expire(self, now_ms: int, batch: _Batch) -> None:
        """good_til_day orders end with the session (08:00 UTC)."""
        while self._expiry and self._expiry[0][0] <= now_ms:
            _, _, order_id = heapq.heappop(self._expiry)
            order = self._live.get(order_id)
            if order is not None:
                self._close(order, "cancelled", now_ms, batch, reason="settlement")

    # ------------------------------------------------------------------------------------------- trading methods

    def _buy_sell(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: _Batch,
                  direction: str) -> dict[str, Any]:
        spec = self._spec(params, direction)
        linked = _str(params, "linked_order_type", choices=LINKED_TYPES)
        if linked is None:
            self._validate(account, spec)
            order = self._new_order(account, spec, now_ms)
            self._activate(order, now_ms, batch)
            return self._order_result(order, batch)
        return self._place_linked(account, spec, linked, params, now_ms, batch)

    def _place_linked(self, account: SimAccount, spec: _Spec, linked: str, params: dict[str, Any], now_ms: int,
                      batch: _Batch) -> dict[str, Any]:
        condition = _str(params, "trigger_fill_condition", choices=FILL_CONDITIONS, default="first_hit")
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
        primary = self._new_order(account, spec, now_ms)
        primary.trigger_fill_condition = condition
        oco_ref = None
        if linked != "one_triggers_other":
            oco_ref = f"OCO-{self._next_oco}"
            self._next_oco += 1
        if linked == "one_cancels_other":
            legs = [primary] + [self._new_order(account, s, now_ms) for s in secondaries]
            self._oco[oco_ref or ""] = [o.order_id for o in legs]
            for leg in legs:
                leg.oco_ref = oco_ref
                leg.trigger_fill_condition = condition
            for leg in legs:
                if leg.is_live:
                    self._activate(leg, now_ms, batch)
            return self._order_result(primary, batch)
        secs = [self._new_order(account, s, now_ms) for s in secondaries]
        primary.oto_order_ids = [s.order_id for s in secs]
        primary.is_primary_otoco = oco_ref is not None
        for sec in secs:
            sec.state, sec.waiting_primary, sec.is_secondary_oto = "untriggered", True, True
            sec.primary_order_id, sec.secondary_amount, sec.oco_ref = primary.order_id, sec.amount, oco_ref
            self._touch(sec, batch)
        if oco_ref is not None:
            self._oco[oco_ref] = [s.order_id for s in secs]
        self._activate(primary, now_ms, batch)
        return self._order_result(primary, batch)

    def _secondary_spec(self, primary: _Spec, item: dict[str, Any], same_side: bool) -> _Spec:
        """An otoco_config item: same instrument; amount defaults to the primary's; direction to the primary's for
        OCO legs (both exit the same position) and to the opposite for OTO secondaries (they exit the entry)."""
        item = dict(item)
        item.setdefault("amount", primary.amount if item.get("contracts") is None else None)
        opposite = "sell" if primary.direction == "buy" else "buy"
        direction = _str(item, "direction", choices=("buy", "sell"),
                         default=primary.direction if same_side else opposite) or opposite
        return self._spec(item, direction, primary.instrument)

    def _order_result(self, order: SimOrder, batch: _Batch) -> dict[str, Any]:
        inst = self.instruments[order.instrument]
        trades = [t for t in batch.trades.get((order.account_id, order.instrument), ()) if t["order_id"] == order.order_id]
        return {"order": order.to_deribit(inst.contract_size), "trades": [dict(t) for t in trades]}

    def _find(self, account: SimAccount, params: dict[str, Any]) -> SimOrder:
        order_id = _str(params, "order_id", required=True)
        order = account.orders.get(order_id or "")
        if order is None:
            raise coded(E.ORDER_NOT_FOUND, "order not found", "order_id")
        return order

    def _edit(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: _Batch) -> dict[str, Any]:
        return self._edit_order(account, self._find(account, params), params, now_ms, batch)

    def _edit_by_label(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: _Batch) -> dict[str, Any]:
        label = _str(params, "label", required=True)
        inst = self._instrument(params)
        by = self._live_by.get((account.account_id, inst.name), {})
        matches = [o for o in by.values() if o.label == label]
        if len(matches) != 1:
            raise coded(E.NON_UNIQUE_ORDER_LABEL, f"{len(matches)} open orders with this label", "label")
        return self._edit_order(account, matches[0], params, now_ms, batch)

    def _edit_order(self, account: SimAccount, order: SimOrder, params: dict[str, Any], now_ms: int,
                    batch: _Batch) -> dict[str, Any]:
        """Change amount/price/trigger of a live order; it keeps id and priority is lost (re-indexed)."""
        if not order.is_live:
            raise coded(E.NOT_OPEN_ORDER, f"order is {order.state}", "order_id")
        inst = self.instruments[order.instrument]
        amount = self._amount(params, inst, required=False)
        if amount is None:
            amount = order.amount
        if amount <= order.filled_amount + EPS:
            raise coded(E.INVALID_AMOUNT, "amount must exceed the filled amount", "amount")
        price = _num(params, "price")
        if order.order_type in LIMIT_LIKE_TYPES:
            price = order.price if price is None else price
            assert price is not None
            self._check_price(inst, price)
        else:
            price = order.price
        trigger_price = _num(params, "trigger_price")
        if trigger_price is not None:
            if not order.is_trigger:
                raise invalid_params("trigger_price", "only for trigger orders")
            self._check_price(inst, trigger_price, "trigger_price")
            if order.state == "untriggered" and not order.waiting_primary:
                probe = _Spec(inst, order.direction, order.order_type, amount, price,
                              trigger=order.trigger, trigger_price=trigger_price)
                self._check_trigger_not_breached(probe)
        post_only = _bool(params, "post_only", order.post_only)
        reject = _bool(params, "reject_post_only", order.reject_post_only)
        reduce_only = _bool(params, "reduce_only", order.reduce_only)
        order.amount, order.price, order.post_only, order.reject_post_only = amount, price, post_only, reject
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
            self._touch(order, batch)
        elif order.state == "untriggered":
            self._touch(order, batch)
            self._index_trigger(order)
        else:
            if order.reduce_only:
                self._fillable(order, now_ms, batch)
            if order.is_live:
                self._execute_limit(order, now_ms, batch)
        return self._order_result(order, batch)

    def _cancel_method(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: _Batch) -> dict[str, Any]:
        order = self._find(account, params)
        if not order.is_live:
            raise coded(E.NOT_OPEN_ORDER, f"order is {order.state}", "order_id")
        self._close(order, "cancelled", now_ms, batch, reason="user_request")
        return order.to_deribit(self.instruments[order.instrument].contract_size)

    def _cancel_where(self, account: SimAccount, keep: Callable[[SimOrder], bool], now_ms: int, batch: _Batch) -> int:
        """Cancel the account's live orders that match; count every order cancelled (cascades included)."""
        live = sorted((o for (acct, _), by in self._live_by.items() if acct == account.account_id
                       for o in by.values() if keep(o)), key=lambda o: o.seq)
        before = batch.cancelled
        for order in live:
            self._close(order, "cancelled", now_ms, batch, reason="user_request")
        return batch.cancelled - before

    def _cancel_all(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: _Batch) -> int:
        return self._cancel_where(account, lambda o: True, now_ms, batch)

    def _cancel_all_by_instrument(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: _Batch) -> int:
        inst = self._instrument(params)
        type_filter = _str(params, "type", default="all")
        return self._cancel_where(account, lambda o: o.instrument == inst.name and _type_matches(o, type_filter),
                                  now_ms, batch)

    def _cancel_all_by_currency(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: _Batch) -> int:
        currency = (_str(params, "currency", required=True) or "").upper()
        type_filter = _str(params, "type", default="all")
        return self._cancel_where(account, lambda o: self._in_currency(o.instrument, currency)
                                  and _type_matches(o, type_filter), now_ms, batch)

    def _cancel_by_label(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: _Batch) -> int:
        label = _str(params, "label", required=True)
        currency = (_str(params, "currency") or "").upper()
        return self._cancel_where(account, lambda o: o.label == label and (
            not currency or self._in_currency(o.instrument, currency)), now_ms, batch)

    def _close_position(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: _Batch) -> dict[str, Any]:
        inst = self._instrument(params)
        order_type = _str(params, "type", required=True, choices=("limit", "market"))
        size = account.size(inst.name)
        if not size:
            raise coded(E.OTHER_REJECT, "no position to close", "instrument_name")
        item: dict[str, Any] = {"amount": abs(size), "type": order_type, "reduce_only": True,
                                "price": params.get("price")}
        direction = "sell" if size > 0 else "buy"
        spec = self._spec(item, direction, inst)
        self._validate(account, spec)
        order = self._new_order(account, spec, now_ms)
        self._activate(order, now_ms, batch)
        return self._order_result(order, batch)

    # ------------------------------------------------------------------------------------------- read methods

    def _in_currency(self, instrument: str, currency: str) -> bool:
        inst = self.instruments[instrument]
        return currency in ("ANY", inst.settlement_currency)

    def _obj(self, order: SimOrder) -> dict[str, Any]:
        return order.to_deribit(self.instruments[order.instrument].contract_size)

    def _open_orders(self, account: SimAccount, keep: Callable[[SimOrder], bool]) -> list[dict[str, Any]]:
        live = sorted((o for (acct, _), by in self._live_by.items() if acct == account.account_id
                       for o in by.values() if keep(o)), key=lambda o: o.seq)
        return [self._obj(o) for o in live]

    def _get_open_orders(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: _Batch) -> list[dict[str, Any]]:
        kind = _str(params, "kind", default="any")
        type_filter = _str(params, "type", default="all")
        return self._open_orders(account, lambda o: kind in ("any", self.instruments[o.instrument].kind)
                                 and _type_matches(o, type_filter))

    def _get_open_orders_by_instrument(self, account: SimAccount, params: dict[str, Any], now_ms: int,
                                       batch: _Batch) -> list[dict[str, Any]]:
        inst = self._instrument(params)
        type_filter = _str(params, "type", default="all")
        by = self._live_by.get((account.account_id, inst.name), {})
        return [self._obj(o) for o in sorted(by.values(), key=lambda o: o.seq) if _type_matches(o, type_filter)]

    def _get_open_orders_by_currency(self, account: SimAccount, params: dict[str, Any], now_ms: int,
                                     batch: _Batch) -> list[dict[str, Any]]:
        currency = (_str(params, "currency", required=True) or "").upper()
        type_filter = _str(params, "type", default="all")
        return self._open_orders(account, lambda o: self._in_currency(o.instrument, currency)
                                 and _type_matches(o, type_filter))

    def _get_order_state(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: _Batch) -> dict[str, Any]:
        return self._obj(self._find(account, params))

    def _get_order_state_by_label(self, account: SimAccount, params: dict[str, Any], now_ms: int,
                                  batch: _Batch) -> list[dict[str, Any]]:
        currency = (_str(params, "currency", required=True) or "").upper()
        label = _str(params, "label", required=True)
        return [self._obj(o) for o in account.orders.values()
                if o.label == label and self._in_currency(o.instrument, currency)]

    def _get_order_history_by_instrument(self, account: SimAccount, params: dict[str, Any], now_ms: int,
                                         batch: _Batch) -> list[dict[str, Any]]:
        inst = self._instrument(params)
        count = _int(params, "count", 20) or 20
        offset = _int(params, "offset", 0) or 0
        done = [o for o in reversed(account.orders.values()) if o.instrument == inst.name and not o.is_live]
        return [self._obj(o) for o in done[offset:offset + count]]

    def _position_obj(self, account: SimAccount, inst: Instrument) -> dict[str, Any]:
        pos = account.positions.get(inst.name) or SimPosition(inst.name)
        m = self.markets[inst.name]
        margin = max(0.0, self._inst_margin.get((account.account_id, inst.name), 0.0))
        obj = position_object(pos, inst, m.mark_price, m.index_price, margin)
        if pos.size:
            cur = inst.settlement_currency
            free = account.balances.get(cur, 0.0) - self._maintenance(account, cur)
            obj["estimated_liquidation_price"] = liquidation_price(inst, pos.size, pos.average_price, free)
        else:
            obj["estimated_liquidation_price"] = 0.0
        return obj

    def _get_position(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: _Batch) -> dict[str, Any]:
        return self._position_obj(account, self._instrument(params))

    def _get_positions(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: _Batch) -> list[dict[str, Any]]:
        currency = (_str(params, "currency", default="any") or "any").upper()
        kind = _str(params, "kind", default="any")
        out = []
        for name, pos in account.positions.items():
            inst = self.instruments[name]
            if pos.size and kind in ("any", inst.kind) and currency in ("ANY", inst.settlement_currency):
                out.append(self._position_obj(account, inst))
        return out

    def _get_user_trades_by_instrument(self, account: SimAccount, params: dict[str, Any], now_ms: int,
                                       batch: _Batch) -> dict[str, Any]:
        inst = self._instrument(params)
        return self._trades_page(account.trades.get(inst.name, []), params)

    def _get_user_trades_by_currency(self, account: SimAccount, params: dict[str, Any], now_ms: int,
                                     batch: _Batch) -> dict[str, Any]:
        currency = (_str(params, "currency", required=True) or "").upper()
        trades = [t for name, ts in account.trades.items() if self._in_currency(name, currency) for t in ts]
        trades.sort(key=lambda t: (t["timestamp"], t["trade_seq"], t["instrument_name"]))
        return self._trades_page(trades, params)

    def _get_user_trades_by_order(self, account: SimAccount, params: dict[str, Any], now_ms: int,
                                  batch: _Batch) -> list[dict[str, Any]]:
        order = self._find(account, params)
        ids = set(order.trades)
        return [dict(t) for t in account.trades.get(order.instrument, []) if t["trade_id"] in ids]

    @staticmethod
    def _trades_page(trades: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        """Filter by timestamp/seq, sort (``asc`` or ``desc``; ``default`` is newest first), cut to ``count``."""
        start = _int(params, "start_timestamp")
        end = _int(params, "end_timestamp")
        start_seq = _int(params, "start_seq")
        end_seq = _int(params, "end_seq")
        count = max(1, min(1000, _int(params, "count", 10) or 10))
        sorting = _str(params, "sorting", choices=("asc", "desc", "default"), default="default")
        picked = [t for t in trades
                  if (start is None or t["timestamp"] >= start) and (end is None or t["timestamp"] <= end)
                  and (start_seq is None or t["trade_seq"] >= start_seq) and (end_seq is None or t["trade_seq"] <= end_seq)]
        if sorting != "asc":
            picked.reverse()
        return {"trades": [dict(t) for t in picked[:count]], "has_more": len(picked) > count}

    # ------------------------------------------------------------------------------------------- account math

    def _currencies(self, account: SimAccount) -> set[str]:
        return set(account.balances) | {self.instruments[n].settlement_currency for n in account.positions}

    def _floating(self, account: SimAccount, currency: str) -> float:
        total = 0.0
        for name, pos in account.positions.items():
            inst = self.instruments[name]
            if pos.size and inst.settlement_currency == currency:
                total += pos.floating(inst, self.markets[name].mark_price)
        return total

    def _position_margin(self, account: SimAccount, currency: str) -> float:
        total = 0.0
        for name, pos in account.positions.items():
            inst = self.instruments[name]
            if pos.size and inst.settlement_currency == currency:
                total += initial_margin(inst, pos.size, self.markets[name].mark_price or pos.average_price)
        return total

    def _maintenance(self, account: SimAccount, currency: str) -> float:
        return self._position_margin(account, currency) * MAINTENANCE_FRACTION

    def _equity(self, account: SimAccount, currency: str) -> float:
        return account.balances.get(currency, 0.0) + self._floating(account, currency)

    def _available(self, account: SimAccount, currency: str) -> float:
        im = self._position_margin(account, currency) + self._order_margin.get((account.account_id, currency), 0.0)
        return self._equity(account, currency) - im

    def _delta(self, account: SimAccount, currency: str) -> float:
        total = 0.0
        for name, pos in account.positions.items():
            inst = self.instruments[name]
            if pos.size and inst.settlement_currency == currency:
                ref = self.markets[name].mark_price or pos.average_price
                total += pos.size / ref if inst.is_inverse else pos.size
        return total

    def _summary(self, account: SimAccount, currency: str, extended: bool = False) -> dict[str, Any]:
        """Deribit's account summary for one currency (simple margin model, see module docs)."""
        balance = account.balances.get(currency, 0.0)
        floating = self._floating(account, currency)
        equity = balance + floating
        pos_im = self._position_margin(account, currency)
        orders_im = self._order_margin.get((account.account_id, currency), 0.0)
        im = pos_im + orders_im
        mm = pos_im * MAINTENANCE_FRACTION
        rpl = account.realized.get(currency, 0.0)
        available = equity - im
        delta = self._delta(account, currency)
        out: dict[str, Any] = {
            "currency": currency, "balance": balance, "equity": equity, "margin_balance": equity,
            "available_funds": available, "available_withdrawal_funds": max(0.0, min(balance, available)),
            "initial_margin": im, "maintenance_margin": mm, "projected_initial_margin": im,
            "projected_maintenance_margin": mm, "total_pl": rpl + floating, "session_upl": floating,
            "session_rpl": rpl, "futures_pl": rpl + floating, "futures_session_upl": floating,
            "futures_session_rpl": rpl, "options_pl": 0.0, "options_session_upl": 0.0, "options_session_rpl": 0.0,
            "options_value": 0.0, "options_delta": 0.0, "options_gamma": 0.0, "options_vega": 0.0,
            "options_theta": 0.0, "delta_total": delta, "projected_delta_total": delta, "fee_balance": 0.0,
            "spot_reserve": 0.0, "additional_reserve": 0.0,
            "estimated_liquidation_ratio": (mm / equity) if equity > 0 else 0.0,
            "margin_model": "segregated_sm", "portfolio_margining_enabled": False, "cross_collateral_enabled": False,
        }
        if extended:
            out.update({"id": _account_number(account.account_id), "username": account.account_id,
                        "system_name": account.account_id, "type": "main", "email": "",
                        "creation_timestamp": account.created_ms, "security_keys_enabled": False,
                        "mmp_enabled": False, "interuser_transfers_enabled": False, "login_enabled": False,
                        "self_trading_reject_mode": "cancel_maker", "referrer_id": None})
        return out

    def _currency_param(self, account: SimAccount, params: dict[str, Any]) -> str:
        currency = (_str(params, "currency", required=True) or "").upper()
        known = self._currencies(account) | {i.settlement_currency for i in self.instruments.values()}
        if currency not in known:
            raise invalid_params("currency", "unknown currency")
        return currency

    def _get_account_summary(self, account: SimAccount, params: dict[str, Any], now_ms: int, batch: _Batch) -> dict[str, Any]:
        return self._summary(account, self._currency_param(account, params), _bool(params, "extended"))

    def _get_account_summaries(self, account: SimAccount, params: dict[str, Any], now_ms: int,
                               batch: _Batch) -> dict[str, Any]:
        extended = _bool(params, "extended")
        out: dict[str, Any] = {"summaries": [self._summary(account, c) for c in sorted(self._currencies(account))]}
        if extended:
            out.update({"id": _account_number(account.account_id), "username": account.account_id,
                        "system_name": account.account_id, "type": "main"})
        return out

    # ------------------------------------------------------------------------------------------- events

    def _events(self, batch: _Batch) -> list[SimEvent]:
        """Batch -> notifications: each order change, trades per instrument, changes, then portfolio."""
        events = [SimEvent("user.orders", acct, inst, obj) for acct, inst, obj in batch.orders]
        for (acct, inst), trades in batch.trades.items():
            events.append(SimEvent("user.trades", acct, inst, [dict(t) for t in trades]))
        for (acct, inst), orders in batch.changes.items():
            account = self.accounts[acct]
            events.append(SimEvent("user.changes", acct, inst, {
                "instrument_name": inst,
                "trades": [dict(t) for t in batch.trades.get((acct, inst), ())],
                "orders": list(orders.values()),
                "positions": [self._position_obj(account, self.instruments[inst])],
            }))
        for acct, cur in batch.portfolio:
            events.append(SimEvent("user.portfolio", acct, None, self._summary(self.accounts[acct], cur)))
        return events

    # ------------------------------------------------------------------------------------------- state

    def to_state(self) -> dict[str, Any]:
        """Everything that defines the exchange, JSON-serialisable; ``from_state`` restores it exactly.

        Its size is bounded by the live orders plus ``history`` closed orders and trades per account and
        instrument (``closed`` lists the kept closed orders in closing order, so pruning resumes where it was).
        """
        return {
            "version": STATE_VERSION,
            "next_order": self._next_order, "next_trade": self._next_trade, "next_seq": self._next_seq,
            "next_oco": self._next_oco, "trade_seq": dict(self._trade_seq),
            "markets": {name: m.to_state() for name, m in self.markets.items()},
            "order_margin": [[a, c, v] for (a, c), v in self._order_margin.items()],
            "accounts": {aid: {
                "balances": dict(a.balances), "created_ms": a.created_ms, "realized": dict(a.realized),
                "fees": dict(a.fees), "positions": {n: p.to_state() for n, p in a.positions.items()},
                "orders": [o.to_state() for o in a.orders.values()],
                "trades": {n: [dict(t) for t in ts] for n, ts in a.trades.items()},
                "closed": {inst: list(ids) for (acct, inst), ids in self._closed.items() if acct == aid},
            } for aid, a in self.accounts.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], instruments: dict[str, Instrument],
                   history: int = DEFAULT_HISTORY) -> SimExchange:
        """Rebuild from ``to_state``; indices are derived again from the live orders in placement order.

        A state saved with a longer (or, before bounded history, unbounded) history is cut to ``history`` here.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported simulator state version {state.get('version')!r}")
        ex = cls(instruments, history)
        ex._next_order, ex._next_trade = state["next_order"], state["next_trade"]
        ex._next_seq, ex._next_oco = state["next_seq"], state["next_oco"]
        ex._trade_seq.update(state["trade_seq"])
        for name, m in state["markets"].items():
            ex.markets[name] = _Market(**m)
        ex._order_margin = {(a, c): v for a, c, v in state["order_margin"]}
        live: list[SimOrder] = []
        for aid, a in state["accounts"].items():
            acct = SimAccount(aid, dict(a["balances"]), created_ms=a["created_ms"], realized=dict(a["realized"]),
                              fees=dict(a["fees"]))
            acct.positions = {n: SimPosition.from_state(p) for n, p in a["positions"].items()}
            acct.trades = {n: deque((dict(t) for t in ts), maxlen=ex.history) for n, ts in a["trades"].items()}
            closed: list[SimOrder] = []
            for od in a["orders"]:
                order = SimOrder.from_state(od)
                acct.orders[order.order_id] = order
                if order.is_live:
                    live.append(order)
                else:
                    closed.append(order)
                if order.oco_ref is not None:
                    ex._oco.setdefault(order.oco_ref, []).append(order.order_id)
            ex.accounts[aid] = acct
            kept = a.get("closed")
            if kept is None:  # a state from before bounded history: closing order ~ last update, then placement
                kept = {}
                for order in sorted(closed, key=lambda o: (o.update_ms, o.seq)):
                    kept.setdefault(order.instrument, []).append(order.order_id)
            for inst_name, ids in kept.items():
                window = ex._closed[(aid, inst_name)] = deque(i for i in ids if i in acct.orders)
                while len(window) > ex.history:
                    ex._forget(acct, window.popleft())
        for order in sorted(live, key=lambda o: o.seq):
            ex._restore_live(order)
        return ex

    def _restore_live(self, order: SimOrder) -> None:
        inst = self.instruments[order.instrument]
        self._live[order.order_id] = order
        self._live_by.setdefault((order.account_id, order.instrument), {})[order.order_id] = order
        self._track_reduce_only(order)
        if order.state == "open" and not order.reduce_only and order.price:
            margin = self._reserved[order.order_id] = initial_margin(inst, order.remaining, order.price)
            key = (order.account_id, order.instrument)
            self._inst_margin[key] = self._inst_margin.get(key, 0.0) + margin
        if order.expire_ms is not None:
            heapq.heappush(self._expiry, (order.expire_ms, order.seq, order.order_id))
        if order.waiting_primary:
            return
        if order.state == "untriggered":
            self._index_trigger(order)
        elif order.price is not None:
            self._index_limit(order)


def _multiple(value: float, step: float) -> bool:
    ratio = value / step
    return abs(ratio - round(ratio)) < 1e-6


def _session_end(now_ms: int) -> int:
    """The next 08:00 UTC after ``now_ms`` (end of Deribit's trading day)."""
    return ((now_ms - SETTLEMENT_OFFSET_MS) // DAY_MS + 1) * DAY_MS + SETTLEMENT_OFFSET_MS


def _account_number(account_id: str) -> int:
    """A stable numeric id for an account name (Deribit's ``id``), without hashing randomness."""
    n = 0
    for ch in account_id.encode():
        n = (n * 131 + ch) % 1_000_000_007
    return n
