"""The simulator's matching core as a specification: plain calls in, Deribit objects and events out."""

from __future__ import annotations

import json

import pytest

from tradebaas.exchange.deribit import codes as E
from tradebaas.exchange.sim.errors import SimRefusal, invalid_params
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


def err(ex: SimExchange, method: str, **params) -> SimRefusal:
    with pytest.raises(SimRefusal) as info:
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
    with pytest.raises(SimRefusal) as info:
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


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(("params", "code", "param"), [
    ({"instrument_name": "ETH-PERPETUAL", "amount": 10, "type": "market"}, E.INVALID_OR_UNSUPPORTED_INSTRUMENT, None),
    ({"instrument_name": LIN, "type": "market"}, E.INVALID_PARAMS, "amount"),
    ({"instrument_name": INV, "amount": 15, "type": "market"}, E.NON_INTEGER_CONTRACT_AMOUNT, None),
    ({"instrument_name": LIN, "amount": 0.0005, "type": "market"}, E.QTY_TOO_LOW, None),
    ({"instrument_name": LIN, "amount": -1, "type": "market"}, E.INVALID_AMOUNT, None),
    ({"instrument_name": LIN, "amount": 0.01, "contracts": 11}, E.INVALID_PARAMS, "contracts"),
    ({"instrument_name": INV, "amount": 10, "price": 50_000.3}, E.PRICE_WRONG_TICK, None),
    ({"instrument_name": LIN, "amount": 0.01}, E.INVALID_PARAMS, "price"),
    ({"instrument_name": LIN, "amount": 0.01, "type": "stop_market", "trigger_price": 51_000.5}, E.TRIGGER_PRICE_WRONG_TICK, None),
    ({"instrument_name": LIN, "amount": 0.01, "type": "stop_market"}, E.INVALID_PARAMS, "trigger_price"),
    ({"instrument_name": LIN, "amount": 0.01, "type": "stop_market", "trigger_price": 49_000}, E.TRIGGER_PRICE_TOO_LOW, None),
    ({"instrument_name": LIN, "amount": 0.01, "type": "take_market", "trigger_price": 51_000}, E.TRIGGER_PRICE_TOO_HIGH, None),
    ({"instrument_name": LIN, "amount": 0.01, "price": 50_000, "label": "x" * 65}, E.INVALID_PARAMS, "label"),
    ({"instrument_name": LIN, "amount": 0.01, "type": "iceberg"}, E.INVALID_PARAMS, "type"),
    ({"instrument_name": LIN, "amount": 0.01, "price": 50_000, "time_in_force": "forever"}, E.INVALID_PARAMS, "time_in_force"),
    ({"instrument_name": LIN, "amount": 100, "type": "market"}, E.NOT_ENOUGH_FUNDS, None),
    ({"instrument_name": LIN, "amount": 0.01, "price": 50_001, "post_only": True, "reject_post_only": True}, E.POST_ONLY_REJECT, None),
    ({"instrument_name": LIN, "amount": 0.01, "type": "market", "reduce_only": True}, E.OTHER_REJECT, None),
])
def test_buy_is_refused_with_deribit_codes_and_changes_nothing(ex, params, code, param):
    before = ex.to_state()
    e = err(ex, "buy", **params)
    assert e.code == code
    if param is not None:
        assert e.data["param"] == param and e.to_json()["message"] == "Invalid params"
    assert ex.to_state() == before


def test_error_json_has_deribit_shape():
    assert SimRefusal(E.ORDER_NOT_FOUND).to_json() == {"code": 10004, "message": "order_not_found"}
    assert invalid_params("amount", "must be present").to_json() == {
        "code": -32602, "message": "Invalid params", "data": {"reason": "must be present", "param": "amount"}}


def test_unknown_method_and_unknown_order(ex):
    assert err(ex, "transfer").code == E.METHOD_NOT_FOUND
    assert err(ex, "cancel", order_id="nope").code == E.ORDER_NOT_FOUND
    assert err(ex, "get_order_state", order_id="nope").code == E.ORDER_NOT_FOUND


def test_orders_of_another_account_are_not_found(ex):
    ex.create_account("b", {"USDC": 1000.0})
    oid = call(ex, "buy", instrument_name=LIN, amount=0.01, price=49_000)[0]["order"]["order_id"]
    assert err_b(ex, "cancel", order_id=oid).code == E.ORDER_NOT_FOUND


def err_b(ex, method, **params):
    with pytest.raises(SimRefusal) as info:
        ex.handle("b", method, params, 10)
    return info.value


def test_contracts_alone_give_the_amount(ex):
    order = call(ex, "buy", instrument_name=INV, contracts=3, price=40_000)[0]["order"]
    assert order["amount"] == 30 and order["contracts"] == 3


# ------------------------------------------------------------------------------------------------ limits


def test_post_only_crossing_is_repriced_just_behind_the_spread(ex):
    order = call(ex, "buy", instrument_name=LIN, amount=0.01, price=50_500, post_only=True)[0]["order"]
    assert order["order_state"] == "open" and order["price"] == 50_000 and order["post_only"] is True
    order = call(ex, "sell", instrument_name=LIN, amount=0.01, price=49_000, post_only=True)[0]["order"]
    assert order["order_state"] == "open" and order["price"] == 50_000


def test_ioc_not_crossing_is_cancelled_and_fok_crossing_fills(ex):
    order = call(ex, "buy", instrument_name=LIN, amount=0.01, price=49_000, time_in_force="immediate_or_cancel")[0]["order"]
    assert order["order_state"] == "cancelled" and order["filled_amount"] == 0
    order = call(ex, "buy", instrument_name=LIN, amount=0.01, price=50_001, time_in_force="fill_or_kill")[0]["order"]
    assert order["order_state"] == "filled"
    assert call(ex, "get_open_orders")[0] == []


def test_good_til_day_expires_at_the_0800_utc_session_end(ex):
    day = 1_700_000_000_000 // 86_400_000 * 86_400_000
    order = call(ex, "buy", now=day + 1000, instrument_name=LIN, amount=0.01, price=49_000,
                 time_in_force="good_til_day")[0]["order"]
    tick(ex, LIN, 50_000, day + 8 * 3_600_000 - 1)
    assert call(ex, "get_order_state", order_id=order["order_id"])[0]["order_state"] == "open"
    events = tick(ex, LIN, 50_000, day + 8 * 3_600_000)
    [o] = [e.data for e in events if e.kind == "user.orders"]
    assert o["order_state"] == "cancelled"


def test_market_limit_fills_at_best_price(ex):
    order = call(ex, "sell", instrument_name=LIN, amount=0.01, type="market_limit")[0]["order"]
    assert order["order_state"] == "filled" and order["average_price"] == 49_999 and order["price"] == 49_999


def test_take_limit_sell_fires_when_price_rises(ex):
    call(ex, "buy", instrument_name=LIN, amount=0.02, type="market")
    order = call(ex, "sell", instrument_name=LIN, amount=0.02, type="take_limit", trigger_price=52_000, price=52_000,
                 trigger="index_price", reduce_only=True)[0]["order"]
    tick(ex, LIN, 52_500, 20, index=51_999)
    assert call(ex, "get_order_state", order_id=order["order_id"])[0]["order_state"] == "untriggered"
    tick(ex, LIN, 52_500, 30, index=52_000, bid=52_499, ask=52_501)
    o = call(ex, "get_order_state", order_id=order["order_id"])[0]
    assert o["order_state"] == "filled" and o["average_price"] == 52_499  # fired limit crossed the bid: taker
    assert position(ex)["direction"] == "zero"


# ------------------------------------------------------------------------------------------------ PnL math


def test_linear_round_trip_pnl_and_fees_hand_computed(ex):
    call(ex, "buy", instrument_name=LIN, amount=0.1, type="market")  # 0.1 @ 50_001, fee 2.50005 USDC
    tick(ex, LIN, 52_000, 20, bid=51_999, ask=52_001)
    assert position(ex)["floating_profit_loss"] == pytest.approx(0.1 * (52_000 - 50_001))
    call(ex, "sell", instrument_name=LIN, amount=0.1, price=52_500)  # rests, maker fee 0
    tick(ex, LIN, 52_500, 30, bid=52_499, ask=52_501)
    s = usdc(ex)
    assert s["balance"] == pytest.approx(100_000 - 2.50005 + 0.1 * (52_500 - 50_001))
    assert s["session_rpl"] == pytest.approx(249.9) and s["session_upl"] == 0
    assert position(ex)["realized_profit_loss"] == pytest.approx(249.9)


def test_inverse_round_trip_pnl_in_btc_hand_computed(ex):
    tick(ex, INV, 40_000, 20, bid=40_000, ask=40_000)
    r = call(ex, "buy", instrument_name=INV, amount=1000, type="market")[0]
    assert r["trades"][0]["fee"] == pytest.approx(1000 * 0.0005 / 40_000) and r["trades"][0]["fee_currency"] == "BTC"
    tick(ex, INV, 50_000, 30, bid=50_000, ask=50_000)
    pos = position(ex, INV)
    assert pos["size"] == 1000 and pos["size_currency"] == pytest.approx(0.02)
    assert pos["floating_profit_loss"] == pytest.approx(0.005)
    call(ex, "sell", instrument_name=INV, amount=1000, type="market")
    btc = call(ex, "get_account_summary", currency="BTC")[0]
    assert btc["balance"] == pytest.approx(10 - 1.25e-5 + 0.005 - 1000 * 0.0005 / 50_000)


def test_inverse_average_price_is_harmonic_so_pnl_adds_up(ex):
    tick(ex, INV, 40_000, 20, bid=40_000, ask=40_000)
    call(ex, "buy", instrument_name=INV, amount=1000, type="market")
    tick(ex, INV, 60_000, 30, bid=60_000, ask=60_000)
    call(ex, "buy", instrument_name=INV, amount=1000, type="market")
    assert position(ex, INV)["average_price"] == pytest.approx(48_000)
    tick(ex, INV, 50_000, 40, bid=50_000, ask=50_000)
    trade = call(ex, "sell", instrument_name=INV, amount=2000, type="market")[0]["trades"][0]
    assert trade["profit_loss"] == pytest.approx(1000 * (1 / 40_000 - 1 / 50_000) + 1000 * (1 / 60_000 - 1 / 50_000))


def test_flip_through_zero_realizes_old_side_and_opens_rest_at_fill_price(ex):
    tick(ex, LIN, 50_000, 20, bid=50_000, ask=50_000)
    call(ex, "buy", instrument_name=LIN, amount=0.1, type="market")
    tick(ex, LIN, 51_000, 30, bid=51_000, ask=51_000)
    trade = call(ex, "sell", instrument_name=LIN, amount=0.3, type="market")[0]["trades"][0]
    assert trade["profit_loss"] == pytest.approx(100.0)
    pos = position(ex)
    assert pos["size"] == pytest.approx(-0.2) and pos["average_price"] == 51_000 and pos["direction"] == "sell"


# ------------------------------------------------------------------------------------------------ reduce-only


def test_reduce_only_larger_than_position_is_cut_to_it(ex):
    call(ex, "buy", instrument_name=LIN, amount=0.05, type="market")
    r = call(ex, "sell", instrument_name=LIN, amount=0.2, type="market", reduce_only=True)[0]
    assert r["order"]["amount"] == 0.05 and r["order"]["order_state"] == "filled"
    assert position(ex)["size"] == 0


def test_resting_reduce_only_is_cancelled_when_the_position_goes_away(ex):
    call(ex, "buy", instrument_name=LIN, amount=0.05, type="market")
    tp = call(ex, "sell", instrument_name=LIN, amount=0.05, price=55_000, reduce_only=True)[0]["order"]
    _, events = call(ex, "close_position", instrument_name=LIN, type="market")
    closed = [e.data for e in events if e.kind == "user.orders" and e.data["order_id"] == tp["order_id"]]
    assert closed[-1]["order_state"] == "cancelled"
    assert position(ex)["size"] == 0


def test_reduce_only_stop_with_no_position_at_trigger_time_is_cancelled_not_filled(ex):
    order = call(ex, "sell", instrument_name=LIN, amount=0.05, type="stop_market", trigger_price=49_000,
                 reduce_only=True)[0]["order"]
    tick(ex, LIN, 48_000, 20)
    o = call(ex, "get_order_state", order_id=order["order_id"])[0]
    assert o["order_state"] == "cancelled" and o["filled_amount"] == 0 and position(ex)["size"] == 0


def test_close_position_without_position_is_refused(ex):
    assert err(ex, "close_position", instrument_name=LIN, type="market").code == E.OTHER_REJECT


def test_close_position_limit_rests_reduce_only(ex):
    call(ex, "sell", instrument_name=LIN, amount=0.05, type="market")
    order = call(ex, "close_position", instrument_name=LIN, type="limit", price=49_000)[0]["order"]
    assert order["direction"] == "buy" and order["reduce_only"] is True and order["amount"] == 0.05
    assert order["order_state"] == "open"


# ------------------------------------------------------------------------------------------------ linked orders


def test_oco_take_profit_fill_cancels_the_stop(ex):
    call(ex, "buy", instrument_name=LIN, amount=0.05, type="market")
    r = call(ex, "sell", instrument_name=LIN, amount=0.05, price=52_000, reduce_only=True, label="tp",
             linked_order_type="one_cancels_other",
             otoco_config=[{"type": "stop_market", "trigger_price": 48_000, "trigger": "mark_price",
                            "reduce_only": True, "label": "sl"}])[0]
    tp = r["order"]
    assert tp["oco_ref"]
    [sl] = [o for o in call(ex, "get_open_orders")[0] if o["label"] == "sl"]
    assert sl["oco_ref"] == tp["oco_ref"] and sl["direction"] == "sell" and sl["order_state"] == "untriggered"
    events = tick(ex, LIN, 52_000, 20)
    orders = {e.data["order_id"]: e.data for e in events if e.kind == "user.orders"}
    assert orders[tp["order_id"]]["order_state"] == "filled"
    assert orders[sl["order_id"]]["order_state"] == "cancelled"
    assert orders[sl["order_id"]]["cancel_reason"] == "oco_other_closed"


def test_otoco_entry_releases_bracket_and_stop_fill_cancels_take_profit(ex):
    r = call(ex, "buy", instrument_name=LIN, amount=0.05, price=49_500, label="entry",
             linked_order_type="one_triggers_one_cancels_other", trigger_fill_condition="first_hit",
             otoco_config=[
                 {"direction": "sell", "type": "stop_market", "trigger_price": 48_000, "trigger": "last_price",
                  "reduce_only": True, "label": "sl", "amount": 0.05},
                 {"direction": "sell", "type": "limit", "price": 52_000, "reduce_only": True, "label": "tp",
                  "amount": 0.05},
             ])[0]
    entry = r["order"]
    assert entry["is_primary_otoco"] is True and len(entry["oto_order_ids"]) == 2
    secs = {o["label"]: o for o in call(ex, "get_open_orders")[0] if o["label"] != "entry"}
    assert all(o["order_state"] == "untriggered" and o["is_secondary_oto"] for o in secs.values())
    assert secs["sl"]["primary_order_id"] == entry["order_id"]
    tick(ex, LIN, 53_000, 15)  # the TP price passes while still waiting: nothing fills
    assert position(ex)["size"] == 0
    tick(ex, LIN, 49_400, 20)  # entry fills as maker; bracket is released
    assert position(ex)["size"] == 0.05
    live = {o["label"]: o for o in call(ex, "get_open_orders")[0]}
    assert live["tp"]["order_state"] == "open" and live["sl"]["order_state"] == "untriggered"
    tick(ex, LIN, 47_900, 30)
    assert position(ex)["size"] == 0
    tp = call(ex, "get_order_state", order_id=live["tp"]["order_id"])[0]
    assert tp["order_state"] == "cancelled" and tp["cancel_reason"] in ("oco_other_closed", "risk_mitigation")


def test_cancelling_oto_primary_cancels_waiting_secondaries(ex):
    r = call(ex, "buy", instrument_name=LIN, amount=0.05, price=49_500, linked_order_type="one_triggers_other",
             otoco_config=[{"type": "limit", "price": 52_000, "reduce_only": True}])[0]
    _, events = call(ex, "cancel", order_id=r["order"]["order_id"])
    sec_id = r["order"]["oto_order_ids"][0]
    sec = call(ex, "get_order_state", order_id=sec_id)[0]
    assert sec["order_state"] == "cancelled" and sec["cancel_reason"] == "oto_primary_closed"
    assert call(ex, "get_open_orders")[0] == []


def test_oto_with_market_entry_places_secondary_immediately(ex):
    r = call(ex, "buy", instrument_name=LIN, amount=0.05, type="market", linked_order_type="one_triggers_other",
             otoco_config=[{"type": "stop_market", "trigger_price": 45_000, "reduce_only": True, "label": "sl"}])[0]
    sec = call(ex, "get_order_state", order_id=r["order"]["oto_order_ids"][0])[0]
    assert sec["order_state"] == "untriggered" and sec["amount"] == 0.05 and sec["direction"] == "sell"


def test_linked_order_needs_otoco_config(ex):
    assert err(ex, "buy", instrument_name=LIN, amount=0.01, price=49_000,
               linked_order_type="one_triggers_other").data["param"] == "otoco_config"


# ------------------------------------------------------------------------------------------------ edit / cancel


def test_edit_moves_price_and_a_crossing_edit_fills(ex):
    oid = call(ex, "buy", instrument_name=LIN, amount=0.01, price=49_000)[0]["order"]["order_id"]
    order = call(ex, "edit", order_id=oid, amount=0.02, price=49_100)[0]["order"]
    assert order["price"] == 49_100 and order["amount"] == 0.02 and order["replaced"] is True
    tick(ex, LIN, 49_050, 20, bid=49_040, ask=49_200)  # old price would not fill, new one does
    assert call(ex, "get_order_state", order_id=oid)[0]["order_state"] == "filled"
    oid = call(ex, "buy", instrument_name=LIN, amount=0.01, price=49_000)[0]["order"]["order_id"]
    r = call(ex, "edit", order_id=oid, price=49_300)[0]
    assert r["order"]["order_state"] == "filled" and r["trades"][0]["price"] == 49_200


def test_edit_trigger_price_of_stop(ex):
    oid = call(ex, "buy", instrument_name=LIN, amount=0.01, type="stop_market", trigger_price=51_000)[0]["order"]["order_id"]
    call(ex, "edit", order_id=oid, trigger_price=52_000)
    tick(ex, LIN, 51_500, 20)
    assert call(ex, "get_order_state", order_id=oid)[0]["order_state"] == "untriggered"
    tick(ex, LIN, 52_000, 30)
    assert call(ex, "get_order_state", order_id=oid)[0]["order_state"] == "filled"


def test_edit_by_label_needs_exactly_one_open_order(ex):
    assert err(ex, "edit_by_label", label="x", instrument_name=LIN, price=1).code == E.NON_UNIQUE_ORDER_LABEL
    call(ex, "buy", instrument_name=LIN, amount=0.01, price=49_000, label="x")
    assert call(ex, "edit_by_label", label="x", instrument_name=LIN, amount=0.01, price=48_000)[0]["order"]["price"] == 48_000
    call(ex, "buy", instrument_name=LIN, amount=0.01, price=49_000, label="x")
    assert err(ex, "edit_by_label", label="x", instrument_name=LIN, price=1).code == E.NON_UNIQUE_ORDER_LABEL


def test_cancel_filled_order_is_not_open(ex):
    oid = call(ex, "buy", instrument_name=LIN, amount=0.01, type="market")[0]["order"]["order_id"]
    assert err(ex, "cancel", order_id=oid).code == E.NOT_OPEN_ORDER
    assert err(ex, "edit", order_id=oid, price=1).code == E.NOT_OPEN_ORDER


def test_cancel_family_counts_and_filters(ex):
    call(ex, "buy", instrument_name=LIN, amount=0.01, price=49_000, label="grid")
    call(ex, "buy", instrument_name=LIN, amount=0.01, type="stop_market", trigger_price=52_000, label="grid")
    call(ex, "buy", instrument_name=INV, amount=10, price=40_000)
    order = call(ex, "buy", instrument_name=LIN, amount=0.01, price=48_000)[0]["order"]
    cancelled = call(ex, "cancel", order_id=order["order_id"])[0]
    assert cancelled["order_state"] == "cancelled" and cancelled["cancel_reason"] == "user_request"
    assert call(ex, "cancel_by_label", label="grid")[0] == 2
    call(ex, "buy", instrument_name=LIN, amount=0.01, type="stop_market", trigger_price=52_000)
    call(ex, "buy", instrument_name=LIN, amount=0.01, price=49_000)
    assert call(ex, "cancel_all_by_instrument", instrument_name=LIN, type="trigger_all")[0] == 1
    assert call(ex, "cancel_all")[0] == 2
    assert call(ex, "get_open_orders")[0] == []


def test_open_order_queries(ex):
    a = call(ex, "buy", instrument_name=LIN, amount=0.01, price=49_000, label="l")[0]["order"]
    b = call(ex, "buy", instrument_name=INV, amount=10, type="stop_market", trigger_price=60_000, label="l")[0]["order"]
    assert [o["order_id"] for o in call(ex, "get_open_orders")[0]] == [a["order_id"], b["order_id"]]
    assert [o["order_id"] for o in call(ex, "get_open_orders", type="trigger_all")[0]] == [b["order_id"]]
    assert [o["order_id"] for o in call(ex, "get_open_orders_by_currency", currency="BTC")[0]] == [b["order_id"]]
    assert [o["order_id"] for o in call(ex, "get_order_state_by_label", currency="USDC", label="l")[0]] == [a["order_id"]]


# ------------------------------------------------------------------------------------------------ reads


def test_user_trades_paging_and_sorting(ex):
    for i in range(5):
        call(ex, "buy", now=100 + i, instrument_name=LIN, amount=0.001, type="market")
    page = call(ex, "get_user_trades_by_instrument", instrument_name=LIN, count=2)[0]
    assert [t["timestamp"] for t in page["trades"]] == [104, 103] and page["has_more"] is True
    page = call(ex, "get_user_trades_by_instrument", instrument_name=LIN, sorting="asc", start_timestamp=102,
                count=10)[0]
    assert [t["timestamp"] for t in page["trades"]] == [102, 103, 104] and page["has_more"] is False
    assert [t["trade_seq"] for t in page["trades"]] == [3, 4, 5]


def test_position_when_flat_and_positions_list(ex):
    pos = position(ex, INV)
    assert pos["size"] == 0 and pos["direction"] == "zero" and pos["kind"] == "future" and pos["leverage"] == 50
    assert call(ex, "get_positions", currency="BTC")[0] == []
    assert call(ex, "get_positions", currency="USDC")[0] == []
    call(ex, "sell", instrument_name=INV, amount=100, type="market")
    [p] = call(ex, "get_positions", currency="BTC", kind="future")[0]
    assert p["size"] == -100 and p["direction"] == "sell"
    assert p["estimated_liquidation_price"] is None  # 10 BTC cover any rise against a 100 USD short
    call(ex, "sell", instrument_name=LIN, amount=1, type="market")
    [p] = call(ex, "get_positions", currency="USDC")[0]
    assert p["estimated_liquidation_price"] == pytest.approx(49_999 + (100_000 - 0.0005 * 49_999 - 50_000 / 50 / 2))


def test_account_summaries_and_margin(ex):
    call(ex, "buy", instrument_name=LIN, amount=1, price=49_000)
    s = usdc(ex)
    assert s["initial_margin"] == pytest.approx(49_000 / 50) and s["available_funds"] == pytest.approx(100_000 - 980)
    assert s["equity"] == s["balance"] == 100_000
    summaries = call(ex, "get_account_summaries")[0]["summaries"]
    assert [x["currency"] for x in summaries] == ["BTC", "USDC"]
    assert err(ex, "get_account_summary", currency="DOGE").code == E.INVALID_PARAMS
    assert call(ex, "get_account_summary", currency="usdc", extended=True)[0]["username"] == "a"


def test_portfolio_event_carries_the_affected_currency(ex):
    _, events = call(ex, "buy", instrument_name=INV, amount=10, type="market")
    [p] = [e for e in events if e.kind == "user.portfolio"]
    assert p.data["currency"] == "BTC" and p.instrument is None and p.account_id == "a"
    [c] = [e for e in events if e.kind == "user.changes"]
    assert c.data["instrument_name"] == INV and c.data["positions"][0]["size"] == 10
    assert len(c.data["trades"]) == 1 and len(c.data["orders"]) == 1


def test_expiry_before_a_refused_call_is_reported_with_the_next_events(ex):
    day = 1_700_000_000_000 // 86_400_000 * 86_400_000
    oid = call(ex, "buy", now=day, instrument_name=LIN, amount=0.01, price=49_000,
               time_in_force="good_til_day")[0]["order"]["order_id"]
    with pytest.raises(SimRefusal):
        ex.handle("a", "cancel", {"order_id": "nope"}, day + 9 * 3_600_000)
    _, events = ex.handle("a", "get_open_orders", {}, day + 9 * 3_600_000)
    assert [(e.data["order_id"], e.data["order_state"]) for e in events if e.kind == "user.orders"] == [(oid, "cancelled")]


def test_market_order_uses_last_price_when_the_book_side_is_empty(ex):
    ex.on_market(MarketTick(LIN, 20, 50_500, 50_500, 50_500, None, None), 20)
    assert call(ex, "buy", instrument_name=LIN, amount=0.01, type="market")[0]["trades"][0]["price"] == 50_500


def test_complete_fill_condition_waits_for_the_whole_primary(ex):
    call(ex, "sell", instrument_name=LIN, amount=0.02, type="market")  # short 0.02, so the entry nets to a 0.03 long
    r = call(ex, "buy", instrument_name=LIN, amount=0.05, price=49_000, linked_order_type="one_triggers_other",
             trigger_fill_condition="complete_fill",
             otoco_config=[{"type": "limit", "price": 55_000, "reduce_only": True, "amount": 0.05}])[0]
    sec_id = r["order"]["oto_order_ids"][0]
    assert call(ex, "get_order_state", order_id=sec_id)[0]["order_state"] == "untriggered"
    tick(ex, LIN, 48_900, 20)
    sec = call(ex, "get_order_state", order_id=sec_id)[0]
    assert sec["order_state"] == "open" and sec["amount"] == pytest.approx(0.03)  # cut to the 0.03 long


def test_otoco_stop_that_fires_on_release_cancels_its_take_profit_before_it_is_released(ex):
    """Found by the property test: the entry fills at once, the stop is already through its trigger and fills on
    release; the take-profit (still waiting for the primary then) must be cancelled, not released to fill later."""
    r = call(ex, "sell", instrument_name=LIN, amount=0.01, price=49_000, linked_order_type="one_triggers_one_cancels_other",
             otoco_config=[{"type": "stop_market", "trigger_price": 50_000, "reduce_only": True},
                           {"type": "limit", "price": 48_000, "reduce_only": True}])[0]
    sl_id, tp_id = r["order"]["oto_order_ids"]
    assert call(ex, "get_order_state", order_id=sl_id)[0]["order_state"] == "filled"
    tp = call(ex, "get_order_state", order_id=tp_id)[0]
    assert tp["order_state"] == "cancelled" and tp["cancel_reason"] == "oco_other_closed"
    assert position(ex)["size"] == 0


def test_placing_and_cancelling_forever_does_not_grow_the_order_indexes(ex):
    """Cancelled orders far from the market are dropped from the lazy heaps once they outnumber live ones."""
    keep, _ = call(ex, "buy", instrument_name=LIN, amount=0.01, type="limit", price=40_000, label="keep")
    for i in range(2_000):
        (placed, _) = call(ex, "buy", instrument_name=LIN, amount=0.01, type="limit", price=30_000 + i % 50)
        call(ex, "cancel", order_id=placed["order"]["order_id"])
        (stop, _) = call(ex, "sell", instrument_name=LIN, amount=0.01, type="stop_market", trigger_price=20_000,
                         trigger="mark_price", reduce_only=False)
        call(ex, "cancel", order_id=stop["order"]["order_id"])
    index = ex.core.index
    assert len(index.bids[LIN]) < 200
    assert all(len(h) < 200 for h in index.down.values()) and all(len(h) < 200 for h in index.up.values())
    tick(ex, LIN, 39_990, 20, bid=39_989, ask=39_991)  # the live order still fills after the compactions
    assert call(ex, "get_order_state", order_id=keep["order"]["order_id"])[0]["order_state"] == "filled"
