"""Deribit's history windows in the simulator (``deribit/history.py``), on the simulated clock: user trades are
served for 24 h and closed orders for 30 min without ``historical``; ``historical: true`` serves only the older
ones; each record is in exactly one window."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradebaas.exchange.deribit import codes
from tradebaas.exchange.deribit import history as h
from tradebaas.exchange.sim.errors import SimRefusal
from tradebaas.exchange.sim.matching import MarketTick, SimExchange
from tradebaas.instruments import DEFAULT_INSTRUMENTS

LIN = "BTC_USDC-PERPETUAL"
INV = "BTC-PERPETUAL"
T0 = 1_736_000_000_000
HOUR = 3_600_000


def make() -> SimExchange:
    ex = SimExchange(DEFAULT_INSTRUMENTS)
    ex.create_account("a", {"USDC": 1_000_000.0, "BTC": 100.0})
    for inst, half in ((LIN, 1.0), (INV, 0.5)):
        ex.on_market(MarketTick(inst, T0, 50_000, 50_000, 50_000, 50_000 - half, 50_000 + half), T0)
    return ex


def call(ex: SimExchange, method: str, now: int, **params):
    return ex.handle("a", method, params, now)[0]


def trade_ids(answer) -> list[str]:
    return [t["trade_id"] for t in answer["trades"]]


@pytest.mark.parametrize("method", ["get_user_trades_by_instrument", "get_user_trades_by_instrument_and_time"])
def test_a_fill_is_recent_for_24_hours_then_only_historical(method: str) -> None:
    ex = make()
    fill = call(ex, "buy", T0, instrument_name=LIN, amount=0.01, type="market")["trades"][0]
    q = {"instrument_name": LIN, "start_timestamp": T0 - 1, "count": 100}
    for now, recent in ((T0, True), (T0 + 24 * HOUR, True), (T0 + 24 * HOUR + 1, False), (T0 + 30 * HOUR, False)):
        assert trade_ids(call(ex, method, now, **q)) == ([fill["trade_id"]] if recent else []), now
        assert trade_ids(call(ex, method, now, historical=True, **q)) == ([] if recent else [fill["trade_id"]]), now
        by_order = call(ex, "get_user_trades_by_order", now, order_id=fill["order_id"], historical=not recent)
        assert [t["trade_id"] for t in by_order] == [fill["trade_id"]]


def test_currency_queries_follow_the_same_windows() -> None:
    ex = make()
    old = call(ex, "buy", T0, instrument_name=INV, amount=10, type="market")["trades"][0]["trade_id"]
    new = call(ex, "sell", T0 + 25 * HOUR, instrument_name=INV, amount=10, type="market")["trades"][0]["trade_id"]
    now = T0 + 26 * HOUR
    for method in ("get_user_trades_by_currency", "get_user_trades_by_currency_and_time"):
        q = {"currency": "BTC", "start_timestamp": 0, "count": 100}
        assert trade_ids(call(ex, method, now, **q)) == [new]
        assert trade_ids(call(ex, method, now, historical=True, **q)) == [old]


def test_closed_orders_are_recent_for_30_minutes_filled_ones_by_default() -> None:
    ex = make()
    filled = call(ex, "buy", T0, instrument_name=LIN, amount=0.01, type="market")["order"]["order_id"]
    resting = call(ex, "buy", T0, instrument_name=LIN, amount=0.01, price=40_000)["order"]["order_id"]
    call(ex, "cancel", T0 + 10 * 60_000, order_id=resting)

    def ids(now: int, **params) -> list[str]:
        return [o["order_id"] for o in call(ex, "get_order_history_by_instrument", now, instrument_name=LIN, **params)]

    assert ids(T0 + 30 * 60_000) == [filled]
    assert ids(T0 + 30 * 60_000, include_unfilled=True) == [resting, filled]
    assert ids(T0 + 30 * 60_000 + 1, include_unfilled=True) == [resting]  # the filled one closed at T0
    assert ids(T0 + 30 * 60_000 + 1, include_unfilled=True, historical=True) == [filled]
    assert ids(T0 + 2 * HOUR, include_unfilled=True, historical=True) == [resting, filled]
    by_currency = call(ex, "get_order_history_by_currency", T0 + 2 * HOUR, currency="USDC", historical=True)
    assert [o["order_id"] for o in by_currency] == [filled]
    assert call(ex, "get_order_state", T0 + 100 * HOUR, order_id=filled)["order_state"] == "filled"  # not windowed


def test_and_time_methods_need_a_start_or_an_end_and_count_from_the_start() -> None:
    ex = make()
    for i in range(5):
        call(ex, "buy" if i % 2 == 0 else "sell", T0 + i, instrument_name=LIN, amount=0.01, type="market")
    with pytest.raises(SimRefusal) as info:
        call(ex, "get_user_trades_by_instrument_and_time", T0 + 10, instrument_name=LIN)
    assert info.value.code == codes.INVALID_PARAMS
    since = call(ex, "get_user_trades_by_instrument_and_time", T0 + 10, instrument_name=LIN, start_timestamp=T0 + 1,
                 count=2)
    assert [t["timestamp"] for t in since["trades"]] == [T0 + 1, T0 + 2] and since["has_more"]
    until = call(ex, "get_user_trades_by_instrument_and_time", T0 + 10, instrument_name=LIN, end_timestamp=T0 + 3,
                 count=2)
    assert [t["timestamp"] for t in until["trades"]] == [T0 + 3, T0 + 2] and until["has_more"]


@settings(max_examples=200, deadline=None)
@given(ts=st.integers(0, 10**13), age=st.integers(-10**6, 10**9), window=st.sampled_from([h.RECENT_TRADES_MS,
                                                                                          h.RECENT_ORDERS_MS]))
def test_every_record_is_served_by_exactly_one_window(ts: int, age: int, window: int) -> None:
    now = ts + age
    assert h.served(ts, now, window, False) != h.served(ts, now, window, True)
    if h.served(ts, now, window, True):  # old enough for the historical window: a query from ts must ask it
        assert h.needs_historical(ts, now, window)
