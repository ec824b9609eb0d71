"""Deribit JSON <-> domain types. Examples are Deribit's own answers (OpenAPI spec v2.1.1 response examples)."""

from __future__ import annotations

import pytest

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
from tradebaas.exchange.deribit.convert import (
    candle_from_chart_bar,
    candles_from_chart_data,
    channel_kind,
    fill_from_deribit,
    fills_from_deribit,
    instruments_from_deribit,
    iter_notification_payloads,
    order_from_deribit,
    order_params,
    order_result,
    parse_notification,
    position_from_deribit,
    ticker_from_deribit,
)
from tradebaas.instruments import BTC_PERPETUAL, BTC_USDC_PERPETUAL

# private/buy response example (OpenAPI PrivateBuyAndSellResponse)
BUY_RESULT = {
    "trades": [
        {
            "trade_seq": 1966068, "trade_id": "ETH-2696097", "timestamp": 1590486335742, "tick_direction": 0,
            "state": "filled", "reduce_only": True, "price": 202.8, "post_only": False, "order_type": "limit",
            "order_id": "ETH-584864807", "matching_id": None, "mark_price": 202.79, "liquidity": "T",
            "instrument_name": "ETH-PERPETUAL", "index_price": 202.86, "fee_currency": "ETH", "fee": 7.766e-05,
            "direction": "sell", "amount": 21,
        }
    ],
    "order": {
        "web": False, "time_in_force": "good_til_cancelled", "replaced": False, "reduce_only": True, "price": 198.75,
        "post_only": False, "order_type": "limit", "order_state": "filled", "order_id": "ETH-584864807",
        "max_show": 21, "last_update_timestamp": 1590486335742, "label": "", "is_rebalance": False,
        "is_liquidation": False, "instrument_name": "ETH-PERPETUAL", "filled_amount": 21, "direction": "sell",
        "creation_timestamp": 1590486335742, "average_price": 202.8, "api": True, "amount": 21,
    },
}

# public/ticker response example (OpenAPI PublicTickerResponse)
TICKER = {
    "best_ask_amount": 53040, "best_ask_price": 36290, "best_bid_amount": 4600, "best_bid_price": 36289.5,
    "current_funding": 0, "estimated_delivery_price": 36297.02, "funding_8h": 2.203e-05, "index_price": 36297.02,
    "instrument_name": "BTC-PERPETUAL", "interest_value": 1.7362511643080387, "last_price": 36289.5,
    "mark_price": 36288.31, "max_price": 36833.4, "min_price": 35744.73, "open_interest": 502231260,
    "settlement_price": 36169.49, "state": "open",
    "stats": {"high": 36824.5, "low": 35213.5, "price_change": 0.2362, "volume": 7831.26548117, "volume_usd": 282615600},
    "timestamp": 1623059681955,
}

# public/get_tradingview_chart_data response example
CHART = {
    "volume": [19.007942601, 20.095877981], "cost": [19000, 23400], "ticks": [1554373800000, 1554375600000],
    "status": "ok", "open": [4963.42, 4986.29], "low": [4728.94, 4726.6], "high": [5185.45, 5250.87],
    "close": [5052.95, 5013.59],
}

# private/get_positions response example
POSITION = {
    "average_price": 7440.18, "delta": 0.006687487, "direction": "buy", "estimated_liquidation_price": 1.74,
    "floating_profit_loss": 0, "index_price": 7466.79, "initial_margin": 0.000197283,
    "instrument_name": "BTC-PERPETUAL", "interest_value": 1.7362511643080387, "kind": "future", "leverage": 34,
    "maintenance_margin": 0.000143783, "mark_price": 7476.65, "open_orders_margin": 0.000197288,
    "realized_funding": -1e-08, "realized_profit_loss": -9e-09, "settlement_price": 7476.65, "size": 50,
    "size_currency": 0.006687487, "total_profit_loss": 3.2781e-05,
}

STOP_ORDER = {
    "order_id": "USDC-99", "order_state": "untriggered", "order_type": "stop_market", "instrument_name":
    "BTC_USDC-PERPETUAL", "direction": "sell", "price": "market_price", "trigger_price": 60000.0, "trigger":
    "mark_price", "label": "tb:razor-1:t7:sl", "amount": 0.01, "filled_amount": 0, "average_price": 0,
    "reduce_only": True, "creation_timestamp": 1700000000000, "last_update_timestamp": 1700000000100,
}


def test_buy_answer_becomes_order_and_fills() -> None:
    order, fills = order_result(BUY_RESULT)
    assert order == Order(
        order_id="ETH-584864807", instrument="ETH-PERPETUAL", side=Side.SELL, order_type=OrderType.LIMIT,
        amount=21.0, filled_amount=21.0, state=OrderState.FILLED, label="", price=198.75, trigger_price=None,
        average_price=202.8, reduce_only=True, ts_ms=1590486335742,
    )
    assert fills == [
        Fill(
            trade_id="ETH-2696097", order_id="ETH-584864807", instrument="ETH-PERPETUAL", side=Side.SELL,
            amount=21.0, price=202.8, fee=7.766e-05, fee_currency="ETH", ts_ms=1590486335742, label="",
            liquidity=Liquidity.TAKER, reduce_only=True, order_type="limit", trade_seq=1966068,
        )
    ]


def test_trigger_market_order_has_no_price_and_keeps_trigger_price() -> None:
    order = order_from_deribit(STOP_ORDER)
    assert order.price is None
    assert order.trigger_price == 60000.0
    assert order.state is OrderState.UNTRIGGERED and order.state.is_live
    assert order.order_type is OrderType.STOP_MARKET
    assert order.label == "tb:razor-1:t7:sl"
    assert order.ts_ms == 1700000000100


def test_order_without_label_or_timestamps_gets_defaults() -> None:
    order = order_from_deribit({"order_id": "1", "instrument_name": "BTC-PERPETUAL", "direction": "buy", "label": None,
                                "amount": "10"})
    assert order.label == "" and order.amount == 10.0 and order.ts_ms == 0
    # no order_state/order_type: not known, so not "open" either (tolerant parsing, conservative action)
    assert order.state is OrderState.UNKNOWN and order.order_type is OrderType.UNKNOWN and order.state.is_live


def test_malformed_order_or_trade_raises() -> None:
    with pytest.raises(ValueError):
        order_from_deribit({"direction": "buy"})
    with pytest.raises(ValueError):
        fill_from_deribit({"order_id": "1"})


def test_maker_fill_with_rebate_keeps_negative_fee() -> None:
    fill = fill_from_deribit(
        {"trade_id": "47958936", "trade_seq": 299513, "timestamp": 1589923311862, "price": 9681.5,
         "order_id": "3993343822", "liquidity": "M", "instrument_name": "BTC-26JUN20", "fee_currency": "BTC",
         "fee": -2.1e-07, "direction": "buy", "amount": 10}
    )
    assert fill.liquidity is Liquidity.MAKER and fill.fee == -2.1e-07 and fill.side is Side.BUY


def test_fills_accept_list_dict_with_trades_and_none() -> None:
    assert fills_from_deribit(None) == []
    assert len(fills_from_deribit(BUY_RESULT["trades"])) == 1
    assert len(fills_from_deribit({"trades": BUY_RESULT["trades"], "has_more": False})) == 1


def test_long_position_keeps_positive_size() -> None:
    assert position_from_deribit(POSITION) == PositionSnapshot(
        instrument="BTC-PERPETUAL", size=50.0, average_price=7440.18, floating_pnl=0.0, realized_pnl=-9e-09,
        mark_price=POSITION["mark_price"],
    )


@pytest.mark.parametrize("size", [-0.02, 0.02])
def test_short_position_size_is_negative_whether_or_not_the_server_signs_it(size: float) -> None:
    pos = position_from_deribit({**POSITION, "instrument_name": "BTC_USDC-PERPETUAL", "direction": "sell", "size": size})
    assert pos.size == -0.02


def test_flat_position_is_zero() -> None:
    assert position_from_deribit({"instrument_name": "BTC-PERPETUAL", "direction": "zero", "size": 0}).size == 0.0
    assert position_from_deribit({**POSITION, "size": 0, "average_price": 0}).size == 0.0


def test_ticker_example() -> None:
    assert ticker_from_deribit(TICKER) == Ticker(
        instrument="BTC-PERPETUAL", ts_ms=1623059681955, last_price=36289.5, mark_price=36288.31,
        index_price=36297.02, best_bid_price=36289.5, best_ask_price=36290.0,
    )


def test_ticker_with_empty_book_and_no_trades() -> None:
    t = ticker_from_deribit(
        {"instrument_name": "X", "timestamp": 1, "mark_price": 10.0, "index_price": 11.0, "last_price": None,
         "best_bid_price": None, "best_ask_price": None}
    )
    assert t.best_bid_price is None and t.best_ask_price is None and t.last_price == 10.0


def test_chart_data_becomes_time_ordered_candles() -> None:
    assert candles_from_chart_data(CHART) == [
        Candle(1554373800000, 4963.42, 5185.45, 4728.94, 5052.95, 19.007942601),
        Candle(1554375600000, 4986.29, 5250.87, 4726.6, 5013.59, 20.095877981),
    ]
    assert candles_from_chart_data({"status": "no_data", "ticks": []}) == []
    with pytest.raises(ValueError):
        candles_from_chart_data({**CHART, "close": [1.0]})


def test_chart_bar_notification_becomes_candle() -> None:
    bar = {"tick": 1554373800000, "open": 1, "high": 3, "low": 0.5, "close": 2, "volume": 7, "cost": 100}
    assert candle_from_chart_bar(bar) == Candle(1554373800000, 1.0, 3.0, 0.5, 2.0, 7.0)


def test_instruments_round_trip_through_deribit_json() -> None:
    objs = [BTC_USDC_PERPETUAL.to_deribit(), BTC_PERPETUAL.to_deribit()]
    assert instruments_from_deribit(objs) == [BTC_USDC_PERPETUAL, BTC_PERPETUAL]


@pytest.mark.parametrize(
    ("channel", "kind"),
    [
        ("user.orders.BTC-PERPETUAL.raw", "user.orders"),
        ("user.orders.any.any.raw", "user.orders"),
        ("user.trades.future.BTC.100ms", "user.trades"),
        ("user.portfolio.btc", "user.portfolio"),
        ("ticker.BTC_USDC-PERPETUAL.100ms", "ticker"),
        ("chart.trades.BTC-PERPETUAL.1", "chart.trades"),
        ("book.BTC-PERPETUAL.100ms", "book"),
    ],
)
def test_channel_kind(channel: str, kind: str) -> None:
    assert channel_kind(channel) == kind


def test_notifications_parse_by_channel_family() -> None:
    assert isinstance(parse_notification("user.orders.BTC_USDC-PERPETUAL.raw", STOP_ORDER), Order)
    fills = parse_notification("user.trades.ETH-PERPETUAL.raw", BUY_RESULT["trades"])
    assert [f.trade_id for f in fills] == ["ETH-2696097"]
    assert isinstance(parse_notification("ticker.BTC-PERPETUAL.100ms", TICKER), Ticker)
    assert isinstance(parse_notification("chart.trades.BTC-PERPETUAL.1", {"tick": 1, "open": 1}), Candle)
    summary = parse_notification("user.portfolio.btc", {"currency": "btc", "equity": 1.5})
    assert summary == {"currency": "BTC", "equity": 1.5}
    raw = [{"price": 1}]
    assert parse_notification("trades.BTC-PERPETUAL.100ms", raw) is raw


def test_aggregated_order_notifications_are_split_one_order_each() -> None:
    second = {**STOP_ORDER, "order_id": "USDC-100"}
    payloads = list(iter_notification_payloads("user.orders.any.any.100ms", [STOP_ORDER, second]))
    assert [p.order_id for p in payloads] == ["USDC-99", "USDC-100"]
    [fills] = list(iter_notification_payloads("user.trades.any.any.raw", BUY_RESULT["trades"]))
    assert isinstance(fills, list)


def test_order_params_for_a_market_entry_send_only_what_applies() -> None:
    assert order_params("BTC_USDC-PERPETUAL", 0.01, "market", "tb:s:t:entry") == {
        "instrument_name": "BTC_USDC-PERPETUAL", "amount": 0.01, "type": "market", "label": "tb:s:t:entry",
    }


def test_order_params_for_a_stop_include_trigger_and_reduce_only() -> None:
    p = order_params("BTC-PERPETUAL", 100, OrderType.STOP_MARKET, "tb:s:t:sl", trigger_price=59000.5, reduce_only=True)
    assert p == {
        "instrument_name": "BTC-PERPETUAL", "amount": 100, "type": "stop_market", "label": "tb:s:t:sl",
        "trigger_price": 59000.5, "trigger": "mark_price", "reduce_only": True,
    }


def test_order_params_for_otoco_entry() -> None:
    otoco = [{"amount": 0.01, "direction": "sell", "type": "stop_market", "trigger_price": 59000, "trigger": "mark_price",
              "reduce_only": True, "label": "tb:s:t:sl"}]
    p = order_params("BTC_USDC-PERPETUAL", 0.01, "limit", "tb:s:t:entry", price=60000, time_in_force="good_til_cancelled",
                     linked_order_type="one_triggers_one_cancels_other", trigger_fill_condition="first_hit",
                     otoco_config=otoco, post_only=False)
    assert p["linked_order_type"] == "one_triggers_one_cancels_other"
    assert p["otoco_config"] == otoco and p["price"] == 60000 and p["post_only"] is False
    assert "trigger" not in p


def test_order_params_reject_long_labels() -> None:
    with pytest.raises(ValueError):
        order_params("X", 1, "limit", "x" * 65)
