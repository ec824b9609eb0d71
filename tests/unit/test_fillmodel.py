"""The one fill model: fees, PnL (linear and inverse), triggers, brackets and exits inside a candle."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradebaas import fillmodel as fm
from tradebaas.domain import Candle, Direction, Liquidity, OrderType, Side
from tradebaas.instruments import BTC_PERPETUAL, BTC_USDC_PERPETUAL, get_instrument

LIN, INV = BTC_USDC_PERPETUAL, BTC_PERPETUAL


def test_linear_taker_fee_is_notional_times_rate_in_usdc() -> None:
    assert fm.fee(LIN, 0.002, 100_000.0, Liquidity.TAKER) == pytest.approx(0.002 * 100_000 * 0.0005)
    assert fm.fee(LIN, 0.002, 100_000.0, Liquidity.MAKER) == 0.0


def test_inverse_fee_is_usd_amount_over_price_in_btc() -> None:
    assert fm.fee(INV, 1_000.0, 50_000.0, Liquidity.TAKER) == pytest.approx(1_000 / 50_000 * 0.0005)


def test_linear_pnl_long_and_short() -> None:
    assert fm.realized_pnl(LIN, 1, 0.01, 100_000.0, 101_000.0) == pytest.approx(10.0)
    assert fm.realized_pnl(LIN, -1, 0.01, 100_000.0, 101_000.0) == pytest.approx(-10.0)


def test_inverse_pnl_is_paid_in_btc() -> None:
    # long 1,000 USD from 50,000 to 55,000: 1000 * (1/50000 - 1/55000) BTC
    assert fm.realized_pnl(INV, 1, 1_000.0, 50_000.0, 55_000.0) == pytest.approx(1000 * (1 / 50_000 - 1 / 55_000))
    assert fm.realized_pnl(INV, -1, 1_000.0, 50_000.0, 55_000.0) < 0


def test_floating_pnl_of_a_flat_position_is_zero() -> None:
    assert fm.floating_pnl(LIN, 0.0, 100_000.0, 101_000.0) == 0.0
    assert fm.floating_pnl(LIN, -0.01, 100_000.0, 99_000.0) == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("order_type", "side", "trigger", "price", "fires"),
    [
        (OrderType.STOP_MARKET, Side.SELL, 100.0, 100.0, True),  # sell stop: price falls to the trigger
        (OrderType.STOP_MARKET, Side.SELL, 100.0, 101.0, False),
        (OrderType.STOP_MARKET, Side.BUY, 100.0, 100.5, True),  # buy stop: price rises to the trigger
        (OrderType.STOP_MARKET, Side.BUY, 100.0, 99.0, False),
        (OrderType.TAKE_MARKET, Side.SELL, 100.0, 101.0, True),  # take orders the other way round
        (OrderType.TAKE_MARKET, Side.BUY, 100.0, 99.0, True),
        (OrderType.LIMIT, Side.BUY, 100.0, 1.0, False),  # not a trigger order
    ],
)
def test_trigger_conditions(order_type: OrderType, side: Side, trigger: float, price: float, fires: bool) -> None:
    assert fm.trigger_fires(order_type, side, trigger, price) is fires


def test_brackets_come_from_the_actual_fill_and_are_rounded_to_the_tick() -> None:
    assert fm.bracket_prices(LIN, Direction.LONG, 100_000.4, 0.5, 0.65) == (99_500.0, 100_650.0)
    assert fm.bracket_prices(LIN, Direction.SHORT, 100_000.0, 0.5, 0.65) == (100_500.0, 99_350.0)
    sl, tp = fm.bracket_prices(INV, Direction.LONG, 60_000.0, 0.33, 0.5)
    assert INV.is_on_tick(sl) and INV.is_on_tick(tp)


def test_slippage_is_paid_by_the_taker() -> None:
    assert fm.apply_slippage(100.0, Side.BUY, 0.001) == pytest.approx(100.1)
    assert fm.apply_slippage(100.0, Side.SELL, 0.001) == pytest.approx(99.9)


def test_stop_reached_inside_a_candle_fills_at_its_trigger() -> None:
    exit_ = fm.candle_exit(Direction.LONG, 99.0, 105.0, Candle(0, 100.0, 101.0, 98.0, 100.0))
    assert exit_ == fm.CandleExit("sl", 99.0, Liquidity.TAKER, False)


def test_a_candle_that_opens_through_the_stop_fills_at_the_open() -> None:
    exit_ = fm.candle_exit(Direction.SHORT, 101.0, 95.0, Candle(0, 103.0, 104.0, 102.0, 103.0))
    assert exit_ == fm.CandleExit("sl", 103.0, Liquidity.TAKER, True)


@pytest.mark.parametrize("intrabar", ["path", "pessimistic"])
def test_stop_counts_first_when_both_brackets_lie_in_one_candle_and_the_path_dips_first(intrabar: str) -> None:
    # equal distances to both extremes and a flat close: the path dips first, so both modes agree
    exit_ = fm.candle_exit(Direction.LONG, 99.0, 101.0, Candle(0, 100.0, 102.0, 98.0, 100.0), intrabar)
    assert exit_ == fm.CandleExit("sl", 99.0, Liquidity.TAKER, False)


@pytest.mark.parametrize(
    ("candle", "path"),
    [
        (Candle(0, 100.0, 101.0, 97.0, 98.0), (100.0, 101.0, 97.0, 98.0)),  # high nearer the open
        (Candle(0, 100.0, 103.0, 99.0, 102.0), (100.0, 99.0, 103.0, 102.0)),  # low nearer the open
        (Candle(0, 100.0, 102.0, 98.0, 101.0), (100.0, 98.0, 102.0, 101.0)),  # tie, rising close: dips first
        (Candle(0, 100.0, 102.0, 98.0, 100.0), (100.0, 98.0, 102.0, 100.0)),  # tie, flat close: dips first
        (Candle(0, 100.0, 102.0, 98.0, 99.0), (100.0, 102.0, 98.0, 99.0)),  # tie, falling close: rallies first
        (Candle(0, 100.0, 100.0, 100.0, 100.0), (100.0, 100.0, 100.0, 100.0)),  # no range
        (Candle(0, 100.0, 100.0, 95.0, 96.0), (100.0, 100.0, 95.0, 96.0)),  # opens at the high: it is nearer
    ],
)
def test_candle_path_visits_the_extreme_nearer_the_open_first(candle: Candle, path: tuple[float, ...]) -> None:
    assert fm.candle_path(candle) == path


# long 100, SL 99, TP 101; both lie inside each candle below
NEAR_HIGH = Candle(0, 100.0, 101.5, 97.0, 100.0)  # the path goes up first: TP
NEAR_LOW = Candle(0, 100.0, 103.0, 98.5, 100.0)  # the path goes down first: SL


def test_on_the_path_the_bracket_reached_first_exits() -> None:
    assert fm.candle_exit(Direction.LONG, 99.0, 101.0, NEAR_HIGH) == fm.CandleExit("tp", 101.0, Liquidity.MAKER)
    assert fm.candle_exit(Direction.LONG, 99.0, 101.0, NEAR_LOW) == fm.CandleExit("sl", 99.0, Liquidity.TAKER)
    # a short (SL 101, TP 99) meets them the other way round
    assert fm.candle_exit(Direction.SHORT, 101.0, 99.0, NEAR_HIGH) == fm.CandleExit("sl", 101.0, Liquidity.TAKER)
    assert fm.candle_exit(Direction.SHORT, 101.0, 99.0, NEAR_LOW) == fm.CandleExit("tp", 99.0, Liquidity.MAKER)


def test_pessimistic_counts_the_stop_whenever_both_lie_in_the_candle() -> None:
    for candle in (NEAR_HIGH, NEAR_LOW):
        assert fm.candle_exit(Direction.LONG, 99.0, 101.0, candle, "pessimistic") == fm.CandleExit(
            "sl", 99.0, Liquidity.TAKER)
        assert fm.candle_exit(Direction.SHORT, 101.0, 99.0, candle, "pessimistic") == fm.CandleExit(
            "sl", 101.0, Liquidity.TAKER)


def test_gaps_at_the_open_fill_at_the_open_on_the_path_too() -> None:
    stop_gap = fm.candle_exit(Direction.LONG, 99.0, 101.0, Candle(0, 98.0, 102.0, 97.0, 101.5))
    assert stop_gap == fm.CandleExit("sl", 98.0, Liquidity.TAKER, True)
    take_gap = fm.candle_exit(Direction.LONG, 97.0, 101.0, Candle(0, 102.0, 102.5, 96.0, 96.5))
    assert take_gap == fm.CandleExit("tp", 101.0, Liquidity.MAKER, True)


def test_unknown_intrabar_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="intrabar must be one of path, pessimistic"):
        fm.candle_exit(Direction.LONG, 99.0, 101.0, NEAR_HIGH, "optimistic")


def test_take_profit_fills_at_its_limit_as_maker() -> None:
    exit_ = fm.candle_exit(Direction.LONG, 90.0, 101.0, Candle(0, 100.0, 102.0, 99.0, 100.0))
    assert exit_ == fm.CandleExit("tp", 101.0, Liquidity.MAKER, False)


def test_no_exit_when_neither_bracket_is_reached() -> None:
    assert fm.candle_exit(Direction.SHORT, 110.0, 90.0, Candle(0, 100.0, 105.0, 95.0, 100.0)) is None


@given(st.floats(min_value=1_000, max_value=500_000), st.floats(min_value=1, max_value=1_000_000))
def test_linear_sizing_is_a_positive_multiple_of_the_minimum(price: float, notional: float) -> None:
    amount = LIN.amount_for_notional(notional, price)
    assert amount >= LIN.min_trade_amount
    assert LIN.is_valid_amount(amount)


def test_inverse_sizing_is_usd_in_whole_contracts() -> None:
    assert INV.amount_for_notional(104.0, 50_000.0) == 100.0
    assert INV.amount_for_notional(3.0, 50_000.0) == 10.0  # at least one contract


def test_unknown_instrument_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown instrument 'ETH-PERPETUAL'"):
        get_instrument("ETH-PERPETUAL")


def test_instrument_round_trips_through_deribits_shape() -> None:
    from tradebaas.instruments import Instrument

    assert Instrument.from_deribit(LIN.to_deribit()) == LIN
    assert Instrument.from_deribit(INV.to_deribit()) == INV
