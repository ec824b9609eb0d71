"""The simulator's matching core as a specification: plain calls in, Deribit objects and events out."""

from __future__ import annotations

import json

import pytest

from tradebaas.exchange.sim import errors as E
from tradebaas.exchange.sim.errors import DeribitError
from tradebaas.exchange.sim.matching import MarketTick, SimExchange
from tradebaas.instruments import DEFAULT_INSTRUMENTS

LIN = "BTC_USDC-PERPETUAL"
INV = "BTC-PERPETUAL"


def tick(ex: SimExchange, inst: str, price: float, now: int, *, bid: float | None = None, ask: float | None = None,
         mark: float | None = None, index: float | None = None):
    half = DEFAULT_INSTRUMENTS[inst].tick_size
    t = MarketTick(inst, now, price, price if mark is None else mark, price if index is None else index,
                   price - half if bid is None else bid, price + half if ask is None else ask)
    return ex.on_market(t, now)


@pytest.fixture
def ex() -> SimExchange:
    ex = SimExchange(DEFAULT_INSTRUMENTS)
    ex.create_account("a", {"USDC": 100_000.0, "BTC": 10.0})
    tick(ex, LIN, 50_000, 1, bid=49_999, ask=50_001)
    tick(ex, INV, 50_000, 1, bid=49_999.5, ask=50_000.5)
    return ex


def call(ex: SimExchange, method: str, now: int = 10, account: str = "a", **params):
    return ex.handle(account, method, params, now)


def err(ex: SimExchange, method: str, **params) -> DeribitError:
    with pytest.raises(DeribitError) as info:
        call(ex, method, **params)
    return info.value


def position(ex: SimExchange, inst: str = LIN) -> dict:
    return call(ex, "get_position", instrument_name=inst)[0]


def usdc(ex: SimExchange) -> dict:
    return call(ex, "get_account_summary", currency="USDC")[0]


def test_market_buy_fills_whole_amount_at_best_ask_as_taker(ex):
    result, events = call(ex, "buy", instrument_name=LIN, amount=0.1, type="market", label="entry")
    order, trades = result["order"], result["trades"]
    assert order["order_state"] == "filled" and order["filled_amount"] == 0.1 and order["average_price"] == 50_001
    assert order["price"] == "market_price" and order["label"] == "entry" and order["contracts"] == 100
    assert order["order_id"].startswith("USDC-")
    [t] = trades
    assert t["liquidity"] == "T" and t["price"] == 50_001 and t["trade_id"].startswith("USDC-")
    assert t["fee"] == pytest.approx(0.1 * 50_001 * 0.0005) and t["fee_currency"] == "USDC"
    assert [e.kind for e in events] == ["user.orders", "user.trades", "user.changes", "user.portfolio"]
    pos = position(ex)
    assert pos["size"] == 0.1 and pos["direction"] == "buy" and pos["average_price"] == 50_001


def test_market_order_without_market_data_is_refused_as_book_closed():
    ex = SimExchange(DEFAULT_INSTRUMENTS)
    ex.create_account("a", {"USDC": 1000.0})
    with pytest.raises(DeribitError) as info:
        ex.handle("a", "buy", {"instrument_name": LIN, "amount": 0.001, "type": "market"}, 1)
    assert info.value.code == E.BOOK_CLOSED


def test_limit_rests_then_fills_as_maker_at_its_price_when_market_reaches_it(ex):
    result, _ = call(ex, "buy", instrument_name=LIN, amount=0.01, price=49_000)
    oid = result["order"]["order_id"]
    assert result["order"]["order_state"] == "open" and result["trades"] == []
    assert [o["order_id"] for o in call(ex, "get_open_orders_by_instrument", instrument_name=LIN)[0]] == [oid]
    assert tick(ex, LIN, 49_500, 20) == []
    events = tick(ex, LIN, 48_990, 30)
    trades = next(e.data for e in events if e.kind == "user.trades")
    assert trades[0]["price"] == 49_000 and trades[0]["liquidity"] == "M" and trades[0]["fee"] == 0.0
    assert call(ex, "get_order_state", order_id=oid)[0]["order_state"] == "filled"


def test_crossing_limit_takes_at_best_ask(ex):
    result, _ = call(ex, "buy", instrument_name=LIN, amount=0.01, price=50_100)
    assert result["order"]["order_state"] == "filled" and result["trades"][0]["price"] == 50_001
    assert result["trades"][0]["liquidity"] == "T"


def test_sell_stop_market_on_mark_fires_and_fills_at_best_bid(ex):
    call(ex, "buy", instrument_name=LIN, amount=0.01, type="market")
    result, _ = call(ex, "sell", instrument_name=LIN, amount=0.01, type="stop_market", trigger_price=49_000,
                     trigger="mark_price", reduce_only=True, label="sl")
    oid = result["order"]["order_id"]
    assert result["order"]["order_state"] == "untriggered" and result["order"]["triggered"] is False
    assert tick(ex, LIN, 48_000, 20, mark=49_500, bid=47_999) == []  # last below, mark not yet
    events = tick(ex, LIN, 48_000, 30, mark=48_950, bid=47_999)
    order = [e.data for e in events if e.kind == "user.orders"][-1]
    assert order["order_id"] == oid and order["order_state"] == "filled" and order["triggered"] is True
    assert order["average_price"] == 47_999
    assert position(ex)["size"] == 0


def test_stop_limit_triggers_into_a_resting_limit(ex):
    result, _ = call(ex, "buy", instrument_name=LIN, amount=0.01, type="stop_limit", trigger_price=51_000,
                     price=51_500, trigger="last_price")
    oid = result["order"]["order_id"]
    tick(ex, LIN, 51_600, 20, bid=51_599, ask=51_601)
    o = call(ex, "get_order_state", order_id=oid)[0]
    assert o["order_state"] == "open" and o["triggered"] is True and o["price"] == 51_500
    tick(ex, LIN, 51_400, 30, bid=51_399, ask=51_401)
    assert call(ex, "get_order_state", order_id=oid)[0]["order_state"] == "filled"


def test_state_round_trips_exactly(ex):
    call(ex, "buy", instrument_name=LIN, amount=0.01, price=49_000, label="x")
    call(ex, "buy", instrument_name=INV, amount=100, type="market")
    call(ex, "sell", instrument_name=INV, amount=100, type="stop_market", trigger_price=40_000, reduce_only=True)
    state = ex.to_state()
    json.dumps(state)
    again = SimExchange.from_state(json.loads(json.dumps(state)), DEFAULT_INSTRUMENTS)
    assert again.to_state() == state
    tick(ex, LIN, 48_000, 50)
    tick(again, LIN, 48_000, 50)
    assert again.to_state() == ex.to_state()
