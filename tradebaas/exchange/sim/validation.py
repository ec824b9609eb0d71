"""Order validation for the simulator: request parameters in, a checked ``OrderSpec`` (or Deribit's refusal) out.

Why apart from the matching core: every refusal the simulator gives for a malformed or unacceptable request is
decided here, so the codes a client sees can be read (and tested) in one place, and the core only ever handles
requests that passed. Nothing here changes state: the functions read the parameters, the instrument, the market
and the account, and either return or raise ``SimRefusal``; a refused call therefore changes nothing.

Choices where Deribit's behaviour is unknown or not modelled (keep clients honest, document, don't guess silently):
- Unknown ``instrument_name``: 10020 invalid_or_unsupported_instrument (ccxt maps it to BadSymbol), not -32602.
- Amount: <= 0 -> 10021; below min_trade_amount -> 10002 qty_too_low; not a multiple of contract_size -> 10027
  non_integer_contract_amount; ``amount`` and ``contracts`` disagreeing or both missing -> -32602.
- Price off tick -> 10043 price_wrong_tick; trigger price off tick -> 10044; missing price/trigger_price -> -32602.
- A stop/take whose trigger source already passed its trigger -> 10034 trigger_price_too_high / 10035 _too_low
  (OTO secondaries released later fire at once instead). ``trigger`` defaults to ``last_price`` when omitted.
- Not enough funds (10009): initial margin (notional / max_leverage) of the position-increasing part of a
  non-reduce-only order must fit available funds (equity - position margin - open-order margin); not rechecked
  on edit or at trigger time.
- A reduce-only non-trigger order with no opposite position -> 11030 other_reject.
- post_only + reject_post_only crossing -> 11054. A market order before any market data -> 10012 book_closed.
- trailing_stop -> 10033 not_implemented (Deribit has it; the simulator does not: Deribit's own error for an
  unsupported request). An unknown order id -> 10004 order_not_found.
- Classic-code refusals carry no ``data`` (Deribit's do not); -32602 carries ``{reason, param}`` (``errors.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tradebaas.exchange.deribit import codes
from tradebaas.instruments import Instrument

from .accounts import SimAccount, initial_margin
from .errors import coded, invalid_params
from .market import MarketState, fires
from .orders import (
    EPS,
    LIMIT_LIKE_TYPES,
    MARKET_LIKE_TRIGGER_TYPES,
    ORDER_TYPES,
    TIME_IN_FORCE,
    TRIGGER_SOURCES,
    SimOrder,
    q,
)

MAX_LABEL = 64


@dataclass(slots=True)
class OrderSpec:
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


# --------------------------------------------------------------------------------------------------- parameters


def number(params: dict[str, Any], name: str, required: bool = False) -> float | None:
    """A finite number (booleans are not numbers), None when absent and not required."""
    value = params.get(name)
    if value is None:
        if required:
            raise invalid_params(name, "must be present")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid_params(name, "must be a number")
    return float(value)


def string(params: dict[str, Any], name: str, required: bool = False, choices: Iterable[str] | None = None,
           default: str | None = None) -> str | None:
    """A string, one of ``choices`` when given; ``default`` when absent and not required."""
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


def boolean(params: dict[str, Any], name: str, default: bool = False) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_params(name, "must be a boolean")
    return value


def integer(params: dict[str, Any], name: str, default: int | None = None) -> int | None:
    """An integral number (``5.0`` is accepted as 5)."""
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise invalid_params(name, "must be an integer")
    return int(value)


def instrument(params: dict[str, Any], instruments: dict[str, Instrument], name: str = "instrument_name") -> Instrument:
    """Unknown names answer 10020 invalid_or_unsupported_instrument (ccxt maps it to BadSymbol)."""
    inst_name = string(params, name, required=True)
    inst = instruments.get(inst_name or "")
    if inst is None:
        raise coded(codes.INVALID_OR_UNSUPPORTED_INSTRUMENT, f"unknown instrument {inst_name}", name)
    return inst


def find_order(account: SimAccount, params: dict[str, Any]) -> SimOrder:
    """The account's order named by ``order_id`` (live or still kept); else 10004 order_not_found."""
    order_id = string(params, "order_id", required=True)
    order = account.orders.get(order_id or "")
    if order is None:
        raise coded(codes.ORDER_NOT_FOUND, "order not found", "order_id")
    return order


def amount(params: dict[str, Any], inst: Instrument, required: bool = True) -> float | None:
    """The order amount from ``amount`` or ``contracts`` (which must agree when both are given)."""
    value = number(params, "amount")
    contracts = number(params, "contracts")
    if value is None and contracts is None:
        if required:
            raise invalid_params("amount", "must be present (amount or contracts)")
        return None
    if contracts is not None:
        from_contracts = q(contracts * inst.contract_size)
        if value is not None and abs(value - from_contracts) > EPS * max(1.0, abs(value)):
            raise invalid_params("contracts", "amount and contracts do not match")
        value = from_contracts
    assert value is not None
    check_amount(inst, value)
    return q(value)


def check_amount(inst: Instrument, value: float) -> None:
    if value <= 0:
        raise coded(codes.INVALID_AMOUNT, "amount must be positive", "amount")
    if value < inst.min_trade_amount - EPS * inst.min_trade_amount:
        raise coded(codes.QTY_TOO_LOW, f"must be at least {inst.min_trade_amount}", "amount")
    if not _multiple(value, inst.contract_size):
        raise coded(codes.NON_INTEGER_CONTRACT_AMOUNT, f"must be a multiple of contract size {inst.contract_size}",
                    "amount")
    if not _multiple(value, inst.min_trade_amount):
        raise coded(codes.INVALID_AMOUNT, f"must be a multiple of {inst.min_trade_amount}", "amount")


def check_price(inst: Instrument, price: float, param: str = "price") -> None:
    """A (trigger) price must be positive and on the tick grid."""
    code = codes.PRICE_WRONG_TICK if param == "price" else codes.TRIGGER_PRICE_WRONG_TICK
    if price <= 0:
        raise coded(codes.INVALID_PRICE if param == "price" else codes.INVALID_TRIGGER_PRICE, "must be positive", param)
    if not inst.is_on_tick(price):
        raise coded(code, f"must be a multiple of tick size {inst.tick_size}", param)


def order_spec(params: dict[str, Any], direction: str, inst: Instrument) -> OrderSpec:
    """One buy/sell (or otoco_config item) on ``inst`` as an ``OrderSpec``; Deribit's codes on refusal."""
    order_type = string(params, "type", choices=ORDER_TYPES, default="limit") or "limit"
    if order_type == "trailing_stop":
        raise coded(codes.NOT_IMPLEMENTED, "trailing_stop is not simulated", "type")
    size = amount(params, inst)
    assert size is not None
    label = string(params, "label", default="") or ""
    if len(label) > MAX_LABEL:
        raise invalid_params("label", f"must be at most {MAX_LABEL} characters")
    price: float | None = None
    if order_type in LIMIT_LIKE_TYPES:
        price = number(params, "price", required=True)
        assert price is not None
        check_price(inst, price)
    spec = OrderSpec(inst, direction, order_type, size, price, label=label,
                     time_in_force=string(params, "time_in_force", choices=TIME_IN_FORCE,
                                          default="good_til_cancelled") or "good_til_cancelled",
                     post_only=boolean(params, "post_only") and order_type in LIMIT_LIKE_TYPES,
                     reject_post_only=boolean(params, "reject_post_only"),
                     reduce_only=boolean(params, "reduce_only"))
    if order_type in MARKET_LIKE_TRIGGER_TYPES or order_type in ("stop_limit", "take_limit"):
        trigger_price = number(params, "trigger_price", required=True)
        assert trigger_price is not None
        check_price(inst, trigger_price, "trigger_price")
        spec.trigger_price = trigger_price
        spec.trigger = string(params, "trigger", choices=TRIGGER_SOURCES, default="last_price")
    return spec


# --------------------------------------------------------------------------------------------------- against state


def check_market(spec: OrderSpec, market: MarketState) -> None:
    """A market order needs a price to fill at: 10012 book_closed before the instrument's first tick."""
    if spec.order_type in ("market", "market_limit") and not market.seen:
        raise coded(codes.BOOK_CLOSED, "no market data for this instrument yet", "instrument_name")


def check_trigger_not_breached(spec: OrderSpec, market: MarketState) -> None:
    """A stop/take whose trigger the market already passed is refused (10034 too high / 10035 too low)."""
    if spec.trigger_price is None or spec.trigger is None:
        return
    now = market.source_price(spec.trigger)
    if now and fires(spec.order_type, spec.direction, spec.trigger_price, now):
        too_high = spec.trigger_price >= now
        raise coded(codes.TRIGGER_PRICE_TOO_HIGH if too_high else codes.TRIGGER_PRICE_TOO_LOW,
                    f"{spec.trigger} is {now}", "trigger_price")


def check_reduce_only(spec: OrderSpec, position_size: float) -> None:
    """A reduce-only order (not a trigger order) must face an opposite position, else 11030 other_reject."""
    if not spec.reduce_only or spec.trigger_price is not None:
        return
    if position_size == 0 or (position_size > 0) == (spec.direction == "buy"):
        raise coded(codes.OTHER_REJECT, "reduce_only order would increase the position", "reduce_only")


def check_post_only(spec: OrderSpec, market: MarketState) -> None:
    """A post-only limit with ``reject_post_only`` that would take liquidity: 11054 post_only_reject."""
    if spec.post_only and spec.reject_post_only and spec.order_type == "limit" and spec.price is not None:
        if market.would_cross(spec.direction, spec.price):
            raise coded(codes.POST_ONLY_REJECT, "post_only order would take liquidity", "price")


def check_funds(spec: OrderSpec, market: MarketState, position_size: float, available: float) -> None:
    """Initial margin of the position-increasing part must fit the ``available`` funds (else 10009)."""
    if spec.reduce_only:
        return
    ref = spec.price or spec.trigger_price or market.taker_price(spec.direction)
    increase = spec.amount
    if position_size and (position_size > 0) != (spec.direction == "buy"):
        increase = max(0.0, spec.amount - abs(position_size))
    required = initial_margin(spec.instrument, increase, ref)
    if required > available + EPS:
        raise coded(codes.NOT_ENOUGH_FUNDS)


def _multiple(value: float, step: float) -> bool:
    ratio = value / step
    return abs(ratio - round(ratio)) < 1e-6
