"""Deribit JSON <-> tradebaas domain types: the edge where the exchange's dicts stop.

Everything past this module sees ``Order``, ``Fill``, ``PositionSnapshot``, ``Ticker``, ``Candle`` and
``Instrument``. Parsing is lenient where Deribit is inconsistent (``price: "market_price"`` on trigger-market
orders, ``null`` best quotes on an empty book, numbers sent as strings over HTTP) and strict where a missing
field would corrupt state (an order without ``order_id``, a trade without ``trade_id`` raise ``ValueError``).
"""

from __future__ import annotations

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

# ------------------------------------------------------------------------------------------------- to domain


def order_from_deribit(obj: dict[str, Any]) -> Order:
    """Deribit's order object -> ``Order``. ``price`` is None for market and trigger-market orders."""
    if not isinstance(obj, dict) or "order_id" not in obj:
        raise ValueError(f"not a Deribit order object: {obj!r:.200}")
    return Order(
        order_id=str(obj["order_id"]),
        instrument=str(obj.get("instrument_name", "")),
        side=Side(obj["direction"]),
        order_type=OrderType(obj.get("order_type", "limit")),
        amount=_num(obj.get("amount"), 0.0),
        filled_amount=_num(obj.get("filled_amount"), 0.0),
        state=OrderState(obj.get("order_state", "open")),
        label=str(obj.get("label") or ""),
        price=_opt_num(obj.get("price")),
        trigger_price=_opt_num(obj.get("trigger_price")),
        average_price=_num(obj.get("average_price"), 0.0),
        reduce_only=_bool(obj.get("reduce_only")),
        ts_ms=int(_num(obj.get("last_update_timestamp") or obj.get("creation_timestamp"), 0)),
        cancel_reason=str(obj.get("cancel_reason") or ""),
    )


def fill_from_deribit(obj: dict[str, Any]) -> Fill:
    """Deribit's user trade -> ``Fill`` (fee as Deribit reports it: positive paid, negative rebate)."""
    if not isinstance(obj, dict) or "trade_id" not in obj:
        raise ValueError(f"not a Deribit user trade: {obj!r:.200}")
    liquidity = obj.get("liquidity")
    return Fill(
        trade_id=str(obj["trade_id"]),
        order_id=str(obj.get("order_id", "")),
        instrument=str(obj.get("instrument_name", "")),
        side=Side(obj["direction"]),
        amount=_num(obj.get("amount"), 0.0),
        price=_num(obj.get("price"), 0.0),
        fee=_num(obj.get("fee"), 0.0),
        fee_currency=str(obj.get("fee_currency", "")),
        ts_ms=int(_num(obj.get("timestamp"), 0)),
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
    unsigned size (so either convention gives the same snapshot).
    """
    size = _num(obj.get("size"), 0.0)
    direction = obj.get("direction")
    if direction == "sell" and size > 0:
        size = -size
    elif direction == "zero":
        size = 0.0
    return PositionSnapshot(
        instrument=str(obj["instrument_name"]),
        size=size,
        average_price=_num(obj.get("average_price"), 0.0),
        floating_pnl=_num(obj.get("floating_profit_loss"), 0.0),
        mark_price=_num(obj.get("mark_price"), 0.0),
        realized_pnl=_num(obj.get("realized_profit_loss"), 0.0),
    )


def ticker_from_deribit(obj: dict[str, Any]) -> Ticker:
    """``public/ticker`` object (or ``ticker.*`` payload) -> ``Ticker``; empty book sides stay None."""
    mark = _num(obj.get("mark_price"), 0.0)
    return Ticker(
        instrument=str(obj["instrument_name"]),
        ts_ms=int(_num(obj.get("timestamp"), 0)),
        last_price=_num(obj.get("last_price"), mark),
        mark_price=mark,
        index_price=_num(obj.get("index_price"), mark),
        best_bid_price=_opt_num(obj.get("best_bid_price")),
        best_ask_price=_opt_num(obj.get("best_ask_price")),
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
    return Candle(
        ts_ms=int(_num(obj["tick"], 0)),
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
    kind = channel_kind(channel)
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


def _opt_num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):  # "market_price" on trigger-market orders
        return None


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)
