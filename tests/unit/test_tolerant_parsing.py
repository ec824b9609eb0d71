"""Tolerant parsing, conservative action (issue 12): generated Deribit order, trade, position and ticker objects
with enum values this version does not know, optional fields missing and extra fields, through the conversion
(``exchange/deribit/convert.py``) and reconciliation (``engine/core/reconcile.py``) paths.

Properties:
- conversion never raises on an object that has the fields money and state need, whatever else is missing, added
  or unknown; an unknown ``order_state``/``order_type`` reads as ``UNKNOWN`` (the text kept), which counts as live;
  a missing needed field is a ``ValueError`` (never a ``KeyError``/``TypeError`` that would end a task);
- an empty book side (``0`` or ``null``) is no price;
- reconciliation never cancels, replaces or duplicates an order of ours it cannot read while the exchange holds a
  position there, tells the strategy (needs_attention), still protects every position of ours, and planning again
  after applying the plan changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradebaas.domain import (
    Direction,
    ExchangeSnapshot,
    Liquidity,
    Order,
    OrderRole,
    OrderState,
    OrderType,
    Side,
    StrategyState,
)
from tradebaas.engine.core.labels import make_label, parse_label
from tradebaas.engine.core.reconcile import (
    CancelOrder,
    JournalView,
    MarkNeedsAttention,
    PlaceStop,
    PlaceTakeProfit,
    ProtectPosition,
    StrategyView,
    apply,
    plan,
)
from tradebaas.engine.core.tradebook import apply_fill, new_trade
from tradebaas.exchange.deribit import convert
from tradebaas.instruments import DEFAULT_INSTRUMENTS

PROPS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INST = "BTC-PERPETUAL"
KNOWN_STATES: list[str] = [s.value for s in OrderState if s is not OrderState.UNKNOWN]
KNOWN_TYPES: list[str] = [t.value for t in OrderType if t is not OrderType.UNKNOWN]
#: Values Deribit does not send today (some it might one day), and garbage.
NEW_WORDS = st.one_of(st.sampled_from(["pending", "archived", "partially_filled", "", "OPEN", "untriggered ",
                                       "trailing_limit", "twap"]),
                      st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6)


def maybe_unknown(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(known), NEW_WORDS.filter(lambda w: w not in known))


@st.composite
def with_gaps(draw: Any, obj: dict[str, Any], needed: tuple[str, ...]) -> dict[str, Any]:
    """``obj`` with any of its other fields dropped and a few unknown fields added."""
    out = {k: v for k, v in obj.items() if k in needed or draw(st.booleans())}
    for name in draw(st.lists(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=3, max_size=10), max_size=3)):
        out.setdefault(f"x_{name}", draw(JSON))
    return out


ORDER_NEEDS = ("order_id", "instrument_name", "direction", "amount")


@st.composite
def order_objects(draw: Any, label: str = "", direction: str | None = None,
                  types: list[str] = KNOWN_TYPES) -> dict[str, Any]:
    price = float(draw(st.integers(40_000, 60_000)))
    obj = {
        "order_id": str(draw(st.integers(1, 10**9))), "order_state": draw(maybe_unknown(KNOWN_STATES)),
        "order_type": draw(maybe_unknown(types)), "time_in_force": draw(maybe_unknown(["good_til_cancelled"])),
        "instrument_name": INST, "creation_timestamp": 1, "last_update_timestamp": 2,
        "direction": direction or draw(st.sampled_from(["buy", "sell"])), "price": draw(st.sampled_from([price, "market_price"])),
        "label": label, "post_only": False, "api": True, "amount": float(draw(st.integers(1, 5)) * 10),
        "filled_amount": 0.0, "trigger_price": price, "trigger": draw(maybe_unknown(["mark_price", "last_price"])),
        "reduce_only": draw(st.booleans()), "average_price": 0.0, "cancel_reason": draw(maybe_unknown(["user_request"])),
        "triggered": False, "contracts": 1.0, "mmp": False, "replaced": False,
    }
    return draw(with_gaps(obj, ORDER_NEEDS))


@st.composite
def trade_objects(draw: Any) -> dict[str, Any]:
    obj = {
        "trade_id": str(draw(st.integers(1, 10**9))), "trade_seq": 1, "instrument_name": INST,
        "timestamp": draw(st.integers(1, 10**13)), "order_id": "1", "matching_id": None,
        "direction": draw(st.sampled_from(["buy", "sell"])), "tick_direction": draw(st.integers(-1, 9)),
        "index_price": 50_000.0, "mark_price": 50_000.0, "price": 50_000.0, "amount": 10.0, "fee": 1e-6,
        "fee_currency": "BTC", "state": draw(maybe_unknown(KNOWN_STATES)), "liquidity": draw(maybe_unknown(["M", "T"])),
        "label": "", "order_type": draw(maybe_unknown(KNOWN_TYPES)), "profit_loss": 0.0, "reduce_only": False,
    }
    return draw(with_gaps(obj, ("trade_id", "direction", "instrument_name", "amount", "price", "fee", "timestamp")))


@st.composite
def position_objects(draw: Any) -> dict[str, Any]:
    size = float(draw(st.integers(-5, 5)) * 10)
    obj = {"instrument_name": INST, "kind": draw(maybe_unknown(["future"])), "size": size,
           "direction": draw(maybe_unknown(["buy", "sell", "zero"])), "average_price": 50_000.0,
           "mark_price": 50_000.0, "floating_profit_loss": 0.0, "realized_profit_loss": 0.0, "delta": 0.0}
    return draw(with_gaps(obj, ("instrument_name", "size")))


@st.composite
def ticker_objects(draw: Any) -> dict[str, Any]:
    side = st.sampled_from([0, 0.0, None, 49_999.5, 50_000.5])
    obj = {"instrument_name": INST, "timestamp": 1, "state": draw(maybe_unknown(["open", "closed"])),
           "best_bid_price": draw(side), "best_bid_amount": draw(st.sampled_from([0, 10])),
           "best_ask_price": draw(side), "best_ask_amount": 0, "last_price": draw(st.sampled_from([None, 50_000.0])),
           "mark_price": 50_000.0, "index_price": 50_000.0, "stats": draw(JSON)}
    return draw(with_gaps(obj, ("instrument_name",)))


# ---------------------------------------------------------------------------------------------------- conversion


@PROPS
@given(order_objects())
def test_an_order_with_unknown_values_or_missing_fields_converts_and_unknown_means_possibly_live(obj):
    order = convert.order_from_deribit(obj)
    state = obj.get("order_state")
    if state in KNOWN_STATES:
        assert order.state is OrderState(state) and order.raw_state == ""
    else:
        assert order.state is OrderState.UNKNOWN and order.raw_state == ("(missing)" if state is None else str(state))
    assert order.state.is_live or state in ("filled", "rejected", "cancelled")
    kind = obj.get("order_type")
    assert order.order_type is (OrderType(kind) if kind in KNOWN_TYPES else OrderType.UNKNOWN)
    assert order.is_uncertain == (state not in KNOWN_STATES or kind not in KNOWN_TYPES)


@PROPS
@given(order_objects(), st.sampled_from(ORDER_NEEDS))
def test_an_order_without_a_needed_field_is_a_value_error_or_uncertain(obj, missing):
    del obj[missing]
    if missing == "amount":  # its size is unknown: read as an order in an unknown state
        order = convert.order_from_deribit(obj)
        assert order.state is OrderState.UNKNOWN and order.is_uncertain
    else:
        with pytest.raises(ValueError):
            convert.order_from_deribit(obj)


@PROPS
@given(trade_objects())
def test_a_user_trade_with_unknown_values_converts(obj):
    fill = convert.fill_from_deribit(obj)
    assert fill.liquidity is (Liquidity.MAKER if obj.get("liquidity") == "M" else Liquidity.TAKER)
    assert (fill.amount, fill.price, fill.fee) == (obj["amount"], obj["price"], obj["fee"])
    for needed in ("direction", "amount", "price", "fee", "timestamp", "instrument_name"):
        broken = {k: v for k, v in obj.items() if k != needed}
        with pytest.raises(ValueError):
            convert.fill_from_deribit(broken)


@PROPS
@given(position_objects())
def test_a_position_keeps_its_sign_whatever_its_direction_says_and_needs_a_size(obj):
    pos = convert.position_from_deribit(obj)
    direction = obj.get("direction")
    expected = 0.0 if direction == "zero" else -abs(obj["size"]) if direction == "sell" else obj["size"]
    assert pos.size == expected
    with pytest.raises(ValueError):
        convert.position_from_deribit({k: v for k, v in obj.items() if k != "size"})


@PROPS
@given(ticker_objects())
def test_an_empty_book_side_is_no_price_never_zero(obj):
    t = convert.ticker_from_deribit(obj)
    for side in ("bid", "ask"):
        raw = obj.get(f"best_{side}_price")
        assert getattr(t, f"best_{side}_price") == (raw if raw else None)
    assert t.last_price == (obj.get("last_price") or obj.get("mark_price", 0.0))


@PROPS
@given(st.one_of(order_objects().map(lambda o: ("user.orders.any.any.raw", o)),
                 trade_objects().map(lambda t: ("user.trades.any.any.raw", [t])),
                 ticker_objects().map(lambda t: (f"ticker.{INST}.100ms", t)),
                 st.tuples(st.sampled_from(["user.orders.any.any.raw", "user.trades.any.any.raw", f"ticker.{INST}.raw",
                                            "chart.trades.BTC-PERPETUAL.1"]), JSON)))
def test_a_notification_either_converts_or_is_a_value_error(item):
    channel, data = item
    try:
        list(convert.iter_notification_payloads(channel, data))
    except ValueError:
        pass  # the client logs and drops it; anything else would end its dispatch task


def test_each_unknown_value_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    obj = {"order_id": "1", "instrument_name": INST, "direction": "buy", "amount": 10, "order_state": "brand_new_state_x"}
    with caplog.at_level(logging.WARNING, logger="tradebaas.exchange.deribit.convert"):
        for _ in range(3):
            convert.order_from_deribit(obj)
    assert [r.getMessage() for r in caplog.records if "brand_new_state_x" in r.getMessage()] == [
        "Deribit sent order_state='brand_new_state_x', which this version does not know; treated conservatively"]


def test_an_unknown_type_is_never_sent() -> None:
    with pytest.raises(ValueError):
        convert.order_params(INST, 10, OrderType.UNKNOWN, "x")


# ------------------------------------------------------------------------------------------------ reconciliation


#: The types tradebaas sends for each role (the types it does not know are drawn besides).
ROLE_TYPES = {OrderRole.ENTRY: ["market", "limit"], OrderRole.STOP_LOSS: ["stop_market"],
              OrderRole.TAKE_PROFIT: ["limit"], OrderRole.EXIT: ["market"]}


@st.composite
def worlds(draw: Any) -> tuple[JournalView, ExchangeSnapshot]:
    """One strategy with one open long trade on INST (filled 20, journaled), the exchange's orders for it built
    from generated Deribit objects (any state, any type, fields missing), a position that may or may not match."""
    inst = DEFAULT_INSTRUMENTS[INST]
    strategy = StrategyView("s1", INST, StrategyState.RUNNING, StrategyState.RUNNING, sl_pct=1.0, tp_pct=2.0,
                            uses_brackets=draw(st.booleans()))
    trade = new_trade("t1", "s1", inst, Direction.LONG, 20.0, sl_pct=1.0, tp_pct=2.0)
    entry = convert.fill_from_deribit({"trade_id": "f1", "order_id": "e1", "instrument_name": INST, "direction": "buy",
                                       "amount": 20.0, "price": 50_000.0, "fee": 1e-6, "timestamp": 10,
                                       "label": make_label("s1", "t1", OrderRole.ENTRY), "liquidity": "T"})
    trade = apply_fill(trade, entry, inst, OrderRole.ENTRY)
    orders: list[Order] = []
    for role in draw(st.lists(st.sampled_from(list(OrderRole)), max_size=4)):
        side = "buy" if role is OrderRole.ENTRY else "sell"
        obj = draw(order_objects(make_label("s1", "t1", role), side, ROLE_TYPES[role]))
        if obj.get("order_state") in ("filled", "rejected", "cancelled"):
            continue  # open-order queries list live orders (and, for what we cannot read, possibly live ones)
        obj["order_id"] = f"o{len(orders)}"
        orders.append(convert.order_from_deribit(obj))
    size = draw(st.sampled_from([20.0, 20.0, 0.0, 30.0]))
    position = convert.position_from_deribit(draw(position_objects()) | {"size": size, "direction": "buy"})
    view = JournalView(strategies=(strategy,), trades=(trade,), journaled_fill_ids=frozenset({"f1"}))
    return view, ExchangeSnapshot(open_orders=tuple(orders), positions=(position,), fills=(entry,), ts_ms=1_000)


@PROPS
@given(worlds())
def test_reconciliation_never_cancels_or_replaces_an_order_it_cannot_read_and_says_so(world):
    view, snapshot = world
    actions = plan(view, snapshot)
    position = sum(p.size for p in snapshot.positions)
    held = {o.order_id: o for o in snapshot.open_orders if o.is_uncertain and position and parse_label(o.label)}
    cancelled = {a.order_id for a in actions if isinstance(a, CancelOrder)}
    assert not cancelled & set(held)
    for o in held.values():
        role = parse_label(o.label).role  # type: ignore[union-attr]
        if role is OrderRole.STOP_LOSS:
            assert not any(isinstance(a, PlaceStop | ProtectPosition) for a in actions), actions
        if role is OrderRole.TAKE_PROFIT:
            assert not any(isinstance(a, PlaceTakeProfit) for a in actions), actions
    if held:
        assert any(isinstance(a, MarkNeedsAttention) and a.strategy_id == "s1" for a in actions)
    # Protection first: a long position of ours ends the plan with a sell stop (an unreadable one labelled sl counts).
    if position > 0 and view.strategies[0].uses_brackets:
        stops = [o for o in snapshot.open_orders if o.side is Side.SELL and o.order_id not in cancelled
                 and (o.order_type in (OrderType.STOP_MARKET, OrderType.STOP_LIMIT)
                      or (o.order_type is OrderType.UNKNOWN and o.label.endswith(":sl")))]
        assert stops or any(isinstance(a, PlaceStop | ProtectPosition) for a in actions), actions
    again = plan(*apply(view, snapshot, actions))
    assert again == [], again


def test_a_stop_of_ours_in_an_unknown_state_stays_and_its_strategy_waits_for_a_person() -> None:
    inst = DEFAULT_INSTRUMENTS[INST]
    trade = new_trade("t1", "s1", inst, Direction.LONG, 20.0, sl_pct=1.0)
    entry = convert.fill_from_deribit({"trade_id": "f1", "instrument_name": INST, "direction": "buy", "amount": 20.0,
                                       "price": 50_000.0, "fee": 0.0, "timestamp": 10,
                                       "label": make_label("s1", "t1", OrderRole.ENTRY)})
    trade = apply_fill(trade, entry, inst, OrderRole.ENTRY)
    stop = convert.order_from_deribit({
        "order_id": "o9", "instrument_name": INST, "direction": "sell", "amount": 10.0, "filled_amount": 0.0,
        "order_state": "pending_review", "order_type": "stop_market", "trigger_price": 49_500.0,
        "label": make_label("s1", "t1", OrderRole.STOP_LOSS)})
    view = JournalView(strategies=(StrategyView("s1", INST, StrategyState.RUNNING, StrategyState.RUNNING, sl_pct=1.0),),
                       trades=(trade,), journaled_fill_ids=frozenset({"f1"}))
    position = convert.position_from_deribit({"instrument_name": INST, "size": 20.0, "direction": "buy"})
    actions = plan(view, ExchangeSnapshot(open_orders=(stop,), positions=(position,), fills=(entry,)))
    assert [type(a) for a in actions] == [MarkNeedsAttention]  # no cancel, no replacement of the wrong-sized stop
    assert "o9" in actions[0].message and "'pending_review'" in actions[0].message  # type: ignore[union-attr]
    # Flat on the exchange: nothing it could touch, so an order in an unknown state is handled like a live one.
    flat = convert.position_from_deribit({"instrument_name": INST, "size": 0.0, "direction": "zero"})
    actions = plan(view, ExchangeSnapshot(open_orders=(stop,), positions=(flat,), fills=(entry,)))
    assert any(isinstance(a, CancelOrder) and a.order_id == "o9" for a in actions)
