"""Where the simulator used to be kinder than Deribit (issue 12): instrument answers, public trades, empty book
sides, BTC fee rounding, error ``data`` and methods it does not implement."""

from __future__ import annotations

import pytest

from tradebaas.domain import Liquidity
from tradebaas.exchange.deribit import codes
from tradebaas.exchange.deribit import methods as deribit_methods
from tradebaas.exchange.sim import marketdata as md
from tradebaas.exchange.sim.errors import SimRefusal
from tradebaas.exchange.sim.matching import MarketTick, SimExchange
from tradebaas.exchange.sim.public import PublicViews
from tradebaas.exchange.sim.server import SERVER_PRIVATE
from tradebaas.fillmodel import fee as model_fee
from tradebaas.instruments import DEFAULT_INSTRUMENTS

LIN, INV = "BTC_USDC-PERPETUAL", "BTC-PERPETUAL"
#: Every field Deribit's spec (v2.1.1, ``PublicGetInstrument(s)Response``) lists for an instrument, but the
#: option-only ``option_type`` and ``strike``.
SPEC_INSTRUMENT_FIELDS = {
    "base_currency", "block_trade_commission", "block_trade_min_trade_amount", "block_trade_tick_size",
    "contract_size", "counter_currency", "creation_timestamp", "expiration_timestamp", "future_type", "instrument_id",
    "instrument_name", "instrument_type", "is_active", "kind", "maker_commission", "max_leverage",
    "max_liquidation_commission", "min_trade_amount", "price_index", "quote_currency", "settlement_currency",
    "settlement_period", "state", "taker_commission", "tick_size", "tick_size_steps"}
#: Public methods the server answers itself (the rest come from ``PublicViews.methods``).
SERVER_PUBLIC = {"test", "hello", "get_time", "status", "auth", "set_heartbeat", "disable_heartbeat", "subscribe",
                 "unsubscribe", "unsubscribe_all"}


@pytest.fixture(scope="module")
def views() -> PublicViews:
    return PublicViews(dict(DEFAULT_INSTRUMENTS), md.synthetic(7, minutes=600))


def refusal(fn, *args) -> SimRefusal:
    with pytest.raises(SimRefusal) as info:
        fn(*args)
    return info.value


def test_get_instrument_answers_every_field_the_spec_lists(views: PublicViews) -> None:
    listed = {i["instrument_name"]: i for i in views.methods["get_instruments"]({"currency": "any"}, 0)}
    for name in (LIN, INV):
        one = views.methods["get_instrument"]({"instrument_name": name}, 0)
        assert one == listed[name]
        assert SPEC_INSTRUMENT_FIELDS <= set(one), SPEC_INSTRUMENT_FIELDS - set(one)
    unknown = refusal(views.methods["get_instrument"], {"instrument_name": "ETH-PERPETUAL"}, 0)
    assert unknown.to_json() == {"code": codes.INVALID_OR_UNSUPPORTED_INSTRUMENT,
                                 "message": "invalid_or_unsupported_instrument"}


def test_public_trades_carry_contracts(views: PublicViews) -> None:
    tick = md.PriceTick(1_000, 50_000.0, 0.5, "buy", 1)
    for name in (LIN, INV):
        m = views.markets[name]
        trade, _ = views.instrument_tick(m, tick, md.quote_for(tick, m.inst), True)
        assert trade is not None
        assert trade["contracts"] == pytest.approx(trade["amount"] / m.inst.contract_size)


def test_an_empty_book_side_shows_as_deribits_zero_and_comes_back(views: PublicViews) -> None:
    m = views.markets[INV]
    full = md.PriceTick(2_000, 50_000.0, 0.0, "buy", 2, bid=49_999.0, ask=50_001.0)
    views.instrument_tick(m, full, md.quote_for(full, m.inst), True)
    no_bids = md.PriceTick(3_000, 50_000.0, 0.0, "buy", 3, bid=0.0, ask=50_001.0)
    q = md.quote_for(no_bids, m.inst)
    assert q.best_bid == 0.0
    _, changes = views.instrument_tick(m, no_bids, q, True)
    assert changes is not None
    bids, asks = changes
    assert [c[0] for c in bids] == ["delete"] * 20 and asks == []
    t = m.ticker
    assert (t["best_bid_price"], t["best_bid_amount"]) == (0.0, 0.0) and t["best_ask_price"] == 50_001.0
    book = views.methods["get_order_book"]({"instrument_name": INV}, 3_000)
    assert book["bids"] == [] and len(book["asks"]) == 5
    _, changes = views.instrument_tick(m, full, md.quote_for(full, m.inst), True)
    assert changes is not None and [c[0] for c in changes[0]] == ["new"] * 20 and changes[0][0][1] == 49_999.0


def test_the_matching_core_takes_a_zero_quote_for_no_price() -> None:
    ex = SimExchange(DEFAULT_INSTRUMENTS)
    ex.create_account("a", {"BTC": 10.0})
    ex.on_market(MarketTick(INV, 1, 50_000, 50_000, 50_000, 0.0, 50_000.5), 1)
    assert not ex.markets[INV].would_cross("sell", 1.0)  # nothing to sell into at 0
    order = ex.handle("a", "sell", {"instrument_name": INV, "amount": 10, "price": 40_000}, 2)[0]["order"]
    assert order["order_state"] == "open"  # a limit below an empty bid side rests; it never fills at 0


def test_btc_fees_are_whole_satoshis_rounded_to_nearest_as_deribit_reports_them() -> None:
    ex = SimExchange(DEFAULT_INSTRUMENTS)
    ex.create_account("a", {"BTC": 10.0, "USDC": 100_000.0})
    ex.on_market(MarketTick(INV, 1, 9_681.5, 9_681.5, 9_681.5, 9_681.0, 9_681.5), 1)
    before = ex.accounts["a"].balances["BTC"]
    trade = ex.handle("a", "buy", {"instrument_name": INV, "amount": 190, "type": "market"}, 2)[0]["trades"][0]
    exact = model_fee(DEFAULT_INSTRUMENTS[INV], 190, 9_681.5, Liquidity.TAKER)
    assert exact != round(exact, 8) and trade["fee"] == round(exact, 8)
    assert ex.accounts["a"].balances["BTC"] == pytest.approx(before - trade["fee"], abs=1e-15)
    assert ex.handle("a", "get_order_state", {"order_id": trade["order_id"]}, 3)[0]["commission"] == trade["fee"]


def test_classic_errors_carry_no_data_invalid_params_does() -> None:
    ex = SimExchange(DEFAULT_INSTRUMENTS)
    ex.create_account("a", {"BTC": 10.0})
    ex.on_market(MarketTick(INV, 1, 50_000, 50_000, 50_000, 49_999.5, 50_000.5), 1)
    for params, code in (({"instrument_name": INV, "amount": 15, "type": "market"}, codes.NON_INTEGER_CONTRACT_AMOUNT),
                         ({"instrument_name": INV, "amount": 10, "price": 50_000.3}, codes.PRICE_WRONG_TICK),
                         ({"instrument_name": INV, "amount": 10, "type": "trailing_stop", "trigger_offset": 100},
                          codes.NOT_IMPLEMENTED)):
        e = refusal(ex.handle, "a", "buy", params, 2)
        assert e.to_json() == {"code": code, "message": codes.message(code)} and e.reason
    e = refusal(ex.handle, "a", "buy", {"instrument_name": INV, "type": "market"}, 2)
    assert e.to_json()["data"] == {"reason": "must be present (amount or contracts)", "param": "amount"}


def test_a_deribit_method_the_simulator_lacks_is_not_implemented_a_foreign_one_not_found() -> None:
    ex = SimExchange(DEFAULT_INSTRUMENTS)
    ex.create_account("a", {"BTC": 10.0})
    assert refusal(ex.handle, "a", "private/get_transfers", {}, 1).to_json() == {
        "code": codes.NOT_IMPLEMENTED, "message": "not_implemented"}
    assert refusal(ex.handle, "a", "private/make_me_rich", {}, 1).to_json() == {
        "code": codes.METHOD_NOT_FOUND, "message": "Method not found"}


def test_every_method_the_simulator_answers_is_one_of_deribits(views: PublicViews) -> None:
    ex = SimExchange(DEFAULT_INSTRUMENTS)
    answered = ({f"public/{m}" for m in set(views.methods) | SERVER_PUBLIC}
                | {f"private/{m}" for m in set(ex.methods) | SERVER_PRIVATE})
    assert answered - deribit_methods.ALL == set()
    assert {"public/get_instrument", "private/get_user_trades_by_instrument_and_time"} <= answered
