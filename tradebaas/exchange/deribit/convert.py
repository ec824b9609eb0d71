"""Deribit JSON <-> tradebaas domain types: the edge where the exchange's dicts stop.

Everything past this module sees ``Order``, ``Fill``, ``PositionSnapshot``, ``Ticker``, ``Candle`` and
``Instrument``. The rule is *tolerant parsing, conservative action*:

- Lenient where Deribit is inconsistent or may grow: ``price: "market_price"`` on trigger-market orders, numbers
  sent as strings over HTTP, extra fields (ignored), optional fields missing (defaults), and enum values this
  version does not know. An unknown ``order_state`` or ``order_type`` becomes ``OrderState.UNKNOWN`` /
  ``OrderType.UNKNOWN`` (the text kept in ``raw_state``/``raw_type``), an unknown ``liquidity`` reads as taker, an
  unknown position ``direction`` keeps the sign of ``size``; each unknown value is logged once per process, never
  raised. A missing ``order_state``/``order_type`` is unknown too, and an order without ``amount`` cannot be
  reasoned about either: it reads as an order in an unknown state (a missing ``filled_amount`` reads as 0). What the engine then does with such an order is conservative (``OrderState.UNKNOWN`` counts as
  live; reconciliation never cancels or replaces it blindly: ``engine/core/reconcile.py``).
- Empty book sides: Deribit sends ``best_bid_price: 0`` (amount 0) when a side is empty; that is "no price"
  (``None``), never a price of 0. ``null`` likewise.
- Strict where a missing field would corrupt money or state: an order without ``order_id``,
  ``instrument_name`` or a known ``direction``; a user trade without ``trade_id``, ``direction``, ``instrument_name``, ``amount``, ``price``,
  ``fee`` or ``timestamp``; a position without ``instrument_name`` or a numeric ``size``; a ticker without
  ``instrument_name``. Those raise ``ValueError`` with a one-line reason; callers fail closed (a reconciliation
  built on it is abandoned and retried, a notification is dropped and logged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from tradebaas.domain import (
    Candle,
    Fill,
    Liquidity,
    Order,
    OrderState,
    OrderType,
    PositionSnapshot,
    Side,
    Ticker,
)
from tradebaas.instruments import Instrument

log = logging.getLogger("tradebaas.exchange.deribit.convert")

#: (field, value) pairs already logged as unknown: each is logged once per process, not on every message.
_SEEN_UNKNOWN: set[tuple[str, str]] = set()


def note_unknown(field: str, value: object) -> None:
    """Log (once per process and value) that Deribit sent a value this version does not know."""
    key = (field, str(value))
    if key not in _SEEN_UNKNOWN:
        _SEEN_UNKNOWN.add(key)
        log.warning("Deribit sent %s=%r, which this version does not know; treated conservatively", field, value)

# ------------------------------------------------------------------------------------------------- to domain


def order_from_deribit(obj: dict[str, Any]) -> Order:
    """Deribit's order object -> ``Order``. ``price`` is None for market and trigger-market orders; see the module
    docstring for unknown states and types and for what is required."""
    if not isinstance(obj, dict) or "order_id" not in obj:
        raise ValueError(f"not a Deribit order object: {obj!r:.200}")
    if not obj.get("instrument_name"):
        raise ValueError(f"order {obj['order_id']} has no instrument_name")
    state, raw_state = _order_state(obj.get("order_state"))
    order_type, raw_type = _order_type(obj.get("order_type"))
    if state is not OrderState.UNKNOWN and _num(obj.get("amount"), -1.0) < 0:
        note_unknown("order without amount, order_state", obj.get("order_state"))
        state, raw_state = OrderState.UNKNOWN, f"{obj.get('order_state')} (without amount)"
    return Order(
        order_id=str(obj["order_id"]),
        instrument=str(obj["instrument_name"]),
        side=_side(obj.get("direction"), f"order {obj['order_id']}"),
        order_type=order_type,
        amount=_num(obj.get("amount"), 0.0),
        filled_amount=_num(obj.get("filled_amount"), 0.0),
        state=state,
        label=str(obj.get("label") or ""),
        price=_opt_num(obj.get("price")),
        trigger_price=_opt_num(obj.get("trigger_price")),
        average_price=_num(obj.get("average_price"), 0.0),
        reduce_only=_bool(obj.get("reduce_only")),
        ts_ms=int(_num(obj.get("last_update_timestamp") or obj.get("creation_timestamp"), 0)),
        cancel_reason=str(obj.get("cancel_reason") or ""),
        raw_state=raw_state,
        raw_type=raw_type,
    )


def fill_from_deribit(obj: dict[str, Any]) -> Fill:
    """Deribit's user trade -> ``Fill`` (fee as Deribit reports it: positive paid, negative rebate)."""
    if not isinstance(obj, dict) or "trade_id" not in obj:
        raise ValueError(f"not a Deribit user trade: {obj!r:.200}")
    what = f"user trade {obj['trade_id']}"
    liquidity = obj.get("liquidity")
    if liquidity not in (None, "M", "T"):
        note_unknown("liquidity", liquidity)
    if not obj.get("instrument_name"):
        raise ValueError(f"{what} has no instrument_name")
    return Fill(
        trade_id=str(obj["trade_id"]),
        order_id=str(obj.get("order_id") or ""),
        instrument=str(obj["instrument_name"]),
        side=_side(obj.get("direction"), what),
        amount=_req_num(obj, "amount", what),
        price=_req_num(obj, "price", what),
        fee=_req_num(obj, "fee", what),
        fee_currency=str(obj.get("fee_currency") or ""),
        ts_ms=int(_req_num(obj, "timestamp", what)),
        label=str(obj.get("label") or ""),
        liquidity=Liquidity.MAKER if liquidity == "M" else Liquidity.TAKER,
        reduce_only=_bool(obj.get("reduce_only")),
        order_type=str(obj.get("order_type") or ""),
        trade_seq=int(_num(obj.get("trade_seq"), 0)),
    )


def fills_from_deribit(objs: Any) -> list[Fill]:
    """A list of user trades (``user.trades`` payload, ``trades`` of a buy/sell answer) -> fills."""
    if objs is None:
        return []
    if isinstance(objs, dict):
        objs = objs.get("trades", [objs] if "trade_id" in objs else [])
    return [fill_from_deribit(o) for o in objs]


def order_result(result: dict[str, Any]) -> tuple[Order, list[Fill]]:
    """``{order, trades}`` answer of buy/sell/edit/close_position -> (order, its immediate fills)."""
    return order_from_deribit(result["order"]), fills_from_deribit(result.get("trades"))


def position_from_deribit(obj: dict[str, Any]) -> PositionSnapshot:
    """Deribit's position -> ``PositionSnapshot`` with a signed size (positive long, negative short).

    Deribit already signs ``size`` for shorts; the ``direction`` field is used only when a server sends an
    unsigned size (so either convention gives the same snapshot). An unknown ``direction`` keeps the sign of
    ``size``. Without a numeric ``size`` the position is unknown, which is not the same as flat: ``ValueError``.
    """
    if not isinstance(obj, dict) or not obj.get("instrument_name"):
        raise ValueError(f"not a Deribit position: {obj!r:.200}")
    size = _req_num(obj, "size", f"position on {obj['instrument_name']}")
    direction = obj.get("direction")
    if direction == "sell" and size > 0:
        size = -size
    elif direction == "zero":
        size = 0.0
    elif direction not in (None, "buy", "sell"):
        note_unknown("position direction", direction)
    return PositionSnapshot(
        instrument=str(obj["instrument_name"]),
        size=size,
        average_price=_num(obj.get("average_price"), 0.0),
        floating_pnl=_num(obj.get("floating_profit_loss"), 0.0),
        mark_price=_num(obj.get("mark_price"), 0.0),
        realized_pnl=_num(obj.get("realized_profit_loss"), 0.0),
    )


def ticker_from_deribit(obj: dict[str, Any]) -> Ticker:
    """``public/ticker`` object (or ``ticker.*`` payload) -> ``Ticker``.

    An empty book side (``best_bid_price: 0``/``null``) is ``None``: no price, never a price of 0."""
    if not isinstance(obj, dict) or not obj.get("instrument_name"):
        raise ValueError(f"not a Deribit ticker: {obj!r:.200}")
    mark = _num(obj.get("mark_price"), 0.0)
    return Ticker(
        instrument=str(obj["instrument_name"]),
        ts_ms=int(_num(obj.get("timestamp"), 0)),
        last_price=_num(obj.get("last_price"), mark),
        mark_price=mark,
        index_price=_num(obj.get("index_price"), mark),
        best_bid_price=_quote(obj.get("best_bid_price")),
        best_ask_price=_quote(obj.get("best_ask_price")),
    )


def candles_from_chart_data(result: dict[str, Any]) -> list[Candle]:
    """``public/get_tradingview_chart_data`` columns -> candles ordered by time (``no_data`` -> [])."""
    if not result or result.get("status") == "no_data":
        return []
    ticks = result.get("ticks") or []
    cols = [result.get(k) or [] for k in ("open", "high", "low", "close")]
    volume = result.get("volume") or [0.0] * len(ticks)
    if any(len(c) != len(ticks) for c in cols) or len(volume) != len(ticks):
        raise ValueError("chart data columns have different lengths")
    out = [
        Candle(int(t), float(o), float(h), float(lo), float(c), float(v))
        for t, o, h, lo, c, v in zip(ticks, *cols, volume, strict=True)
    ]
    out.sort(key=lambda c: c.ts_ms)
    return out


def candle_from_chart_bar(obj: dict[str, Any]) -> Candle:
    """One ``chart.trades.*`` payload ``{tick, open, high, low, close, volume, cost}`` -> ``Candle``.

    The exchange re-sends the bar while it forms: equal ``ts_ms`` means "same bar, updated", and a bar is final
    only once a later ``ts_ms`` arrives. Deciding that is the candle builder's job, not the edge's.
    """
    if not isinstance(obj, dict) or obj.get("tick") is None:
        raise ValueError(f"not a Deribit chart bar: {obj!r:.200}")
    return Candle(
        ts_ms=int(_req_num(obj, "tick", "chart bar")),
        open=_num(obj.get("open"), 0.0),
        high=_num(obj.get("high"), 0.0),
        low=_num(obj.get("low"), 0.0),
        close=_num(obj.get("close"), 0.0),
        volume=_num(obj.get("volume"), 0.0),
    )


def instruments_from_deribit(objs: list[dict[str, Any]]) -> list[Instrument]:
    return [Instrument.from_deribit(o) for o in objs]


def channel_kind(channel: str) -> str:
    """The family of a channel name: ``user.orders``, ``user.trades``, ``user.portfolio``, ``user.changes``,
    ``ticker``, ``chart.trades``, ``trades``, ``book`` (or the first segment for anything else)."""
    parts = channel.split(".")
    if parts[0] in ("user", "chart") and len(parts) > 1:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def parse_notification(channel: str, data: Any) -> Any:
    """A notification payload as domain types, by channel family.

    ``user.orders`` -> ``Order`` (or ``list[Order]`` on aggregated intervals), ``user.trades`` -> ``list[Fill]``,
    ``ticker`` -> ``Ticker``, ``chart.trades`` -> ``Candle`` (the forming bar), ``user.portfolio`` -> ``dict``
    (the account summary, currency upper-cased), anything else -> the raw data unchanged.
    """
    try:
        return _parse_notification(channel_kind(channel), data)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:  # a shape no Deribit message has
        raise ValueError(f"malformed {channel} payload ({type(exc).__name__}: {exc})") from None


def _parse_notification(kind: str, data: Any) -> Any:
    if kind == "user.orders":
        if isinstance(data, list):
            return [order_from_deribit(o) for o in data]
        return order_from_deribit(data)
    if kind == "user.trades":
        return fills_from_deribit(data if isinstance(data, list) else [data])
    if kind == "ticker":
        return ticker_from_deribit(data)
    if kind == "chart.trades":
        return candle_from_chart_bar(data)
    if kind == "user.portfolio":
        summary = dict(data)
        if isinstance(summary.get("currency"), str):
            summary["currency"] = summary["currency"].upper()
        return summary
    return data


def iter_notification_payloads(channel: str, data: Any) -> Iterator[Any]:
    """``parse_notification`` with aggregated order lists split, so each callback gets one ``Order``."""
    payload = parse_notification(channel, data)
    if channel_kind(channel) == "user.orders" and isinstance(payload, list):
        yield from payload
    else:
        yield payload


# ----------------------------------------------------------------------------------------------- from domain


def order_params(
    instrument: str,
    amount: float,
    type: OrderType | str = OrderType.LIMIT,
    label: str = "",
    *,
    price: float | None = None,
    trigger_price: float | None = None,
    trigger: str | None = "mark_price",
    reduce_only: bool = False,
    post_only: bool | None = None,
    time_in_force: str | None = None,
    linked_order_type: str | None = None,
    trigger_fill_condition: str | None = None,
    otoco_config: list[dict[str, Any]] | None = None,
    valid_until: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Params of ``private/buy``/``private/sell``. Only fields that apply are sent (Deribit rejects, e.g., a
    ``trigger`` on a plain limit order). ``label`` must fit Deribit's 64 characters."""
    order_type = OrderType(type)
    if order_type is OrderType.UNKNOWN:
        raise ValueError("cannot send an order of unknown type")
    if len(label) > 64:
        raise ValueError(f"label longer than 64 characters: {label!r}")
    params: dict[str, Any] = {"instrument_name": instrument, "amount": amount, "type": order_type.value}
    if label:
        params["label"] = label
    if price is not None:
        params["price"] = price
    if trigger_price is not None:
        params["trigger_price"] = trigger_price
    if trigger is not None and (trigger_price is not None or _is_trigger_type(order_type)):
        params["trigger"] = trigger
    if reduce_only:
        params["reduce_only"] = True
    if post_only is not None:
        params["post_only"] = post_only
    if time_in_force is not None:
        params["time_in_force"] = time_in_force
    if linked_order_type is not None:
        params["linked_order_type"] = linked_order_type
    if trigger_fill_condition is not None:
        params["trigger_fill_condition"] = trigger_fill_condition
    if otoco_config is not None:
        params["otoco_config"] = otoco_config
    if valid_until is not None:
        params["valid_until"] = valid_until
    params.update({k: v for k, v in extra.items() if v is not None})
    return params


def _is_trigger_type(t: OrderType) -> bool:
    return t in (OrderType.STOP_LIMIT, OrderType.STOP_MARKET, OrderType.TAKE_LIMIT, OrderType.TAKE_MARKET)


# ---------------------------------------------------------------------------------------------------- values


def _num(value: Any, default: float) -> float:
    if value is None or isinstance(value, bool):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _req_num(obj: dict[str, Any], key: str, what: str) -> float:
    """A number the caller cannot do without (money, size, time): missing or not a number is ``ValueError``."""
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        raise ValueError(f"{what} has no {key}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} has a {key} that is not a number: {value!r:.40}") from None


def _opt_num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):  # "market_price" on trigger-market orders
        return None


def _quote(value: Any) -> float | None:
    """A best bid/ask: Deribit's 0 (and null) on an empty side is no price."""
    price = _opt_num(value)
    return price if price is not None and price > 0 else None


def _side(value: Any, what: str) -> Side:
    """``buy``/``sell``; anything else is ``ValueError``: a side cannot be guessed."""
    try:
        return Side(value)
    except ValueError:
        raise ValueError(f"{what} has direction {value!r:.40}, neither buy nor sell") from None


def _order_state(value: Any) -> tuple[OrderState, str]:
    """A known state, or ``UNKNOWN`` with the text Deribit sent ("(missing)" when it sent none)."""
    try:
        state = OrderState(value)
    except ValueError:
        state = OrderState.UNKNOWN
    if state is OrderState.UNKNOWN:  # also the literal "unknown": not a state Deribit documents
        note_unknown("order_state", value)
        return OrderState.UNKNOWN, "(missing)" if value is None else str(value)
    return state, ""


def _order_type(value: Any) -> tuple[OrderType, str]:
    """A known type, or ``UNKNOWN`` with the text Deribit sent ("(missing)" when it sent none)."""
    try:
        kind = OrderType(value)
    except ValueError:
        kind = OrderType.UNKNOWN
    if kind is OrderType.UNKNOWN:
        note_unknown("order_type", value)
        return OrderType.UNKNOWN, "(missing)" if value is None else str(value)
    return kind, ""


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)
