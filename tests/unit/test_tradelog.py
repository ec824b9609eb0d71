"""The engine log's trade lines as a person reads them: what, which trade, prices, amounts, exchange time."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tradebaas.domain import Direction, Fill, Liquidity, Order, OrderRole, OrderState, OrderType, Side
from tradebaas.engine.core import reconcile as rc
from tradebaas.engine.core.tradebook import Trade, TradeState
from tradebaas.engine.live import tradelog
from tradebaas.strategies.base import Decision, Enter, MoveStop

TS = 1_736_247_600_000  # 2025-01-07 11:00 UTC
LABEL = "tb:razor-a1:m5md10io-1d:entry"


def record(decision: Decision, close: float = 101358.0) -> dict[str, Any]:
    out = decision.as_dict()
    out["candle"] = {"ts_ms": decision.ts_ms, "close": close}
    return out


def quiet(skipped: str = "") -> dict[str, Any]:
    return record(Decision(TS, "none", {}, {"long": 0.0, "short": 0.0}, ("no signal",), (), skipped))


def test_a_decision_that_acts_is_one_line_with_the_candle_the_signal_and_what_it_does() -> None:
    enter = Enter(Direction.LONG, 100.0, 0.05, 0.65, "razor long")
    line = tradelog.decision_line(record(Decision(TS, "long", {}, {"long": 72.70234986, "short": 12.0}, (), (enter,))),
                                  last_skip="")
    assert line == ("decision on the candle of 2025-01-07 11:00 UTC (close 101358): long (score long 72.7, short 12)"
                    " -> enter long 100 USD (SL 0.05%, TP 0.65%)")
    move = MoveStop(101359.0, "break-even", break_even=True)
    line = tradelog.decision_line(record(Decision(TS, "none", {}, {}, (), (move,), "position open")), "position open")
    assert line is not None and line.endswith(": position open -> move the stop to 101359 (break-even)")


def test_quiet_candles_write_nothing_and_a_skip_is_written_once_when_it_starts() -> None:
    assert tradelog.decision_line(quiet(), last_skip="") is None  # no signal
    assert tradelog.decision_line(quiet("warming up"), last_skip="") is None
    first = tradelog.decision_line(quiet("cooldown"), last_skip="", cooldown_until_ms=TS + 300_000)
    assert first is not None and first.endswith("skipped, cooldown until 2025-01-07 11:05 UTC")
    assert tradelog.decision_line(quiet("cooldown"), last_skip="cooldown") is None  # still the same skip
    assert tradelog.decision_line(quiet("daily limit"), last_skip="cooldown") is not None  # another one starts


def test_order_lines_name_the_role_and_trade_and_carry_prices_without_float_noise() -> None:
    sent = tradelog.order_sent(Side.SELL, "BTC_USDC-PERPETUAL", 0.0010000000000000002, OrderType.STOP_MARKET,
                               "tb:razor-a1:m5md10io-1d:sl", trigger_price=101313.00000000001, trigger="mark_price",
                               reduce_only=True, otoco_config=[{"type": "limit", "price": 101415.0,
                                                                "label": "tb:razor-a1:m5md10io-1d:tp"}])
    assert sent == ("order sent: stop-loss of trade m5md10io-1d: sell 0.001 BTC_USDC-PERPETUAL stop_market, trigger "
                    "101313 (mark price), reduce-only, with take-profit of trade m5md10io-1d limit 101415 (one cancels "
                    "the other)")
    order = Order("USDC-7", "BTC_USDC-PERPETUAL", Side.BUY, OrderType.MARKET, 0.001, 0.001, OrderState.FILLED,
                  LABEL, average_price=101364.0)
    assert tradelog.order_acknowledged(order, 0.9251, 2.02) == (
        "order acknowledged: entry of trade m5md10io-1d: id USDC-7 filled, 0.001 at 101364 (send->ack 0.925 ms, "
        "close->ack 2.020 ms)")
    assert tradelog.order_rejected(LABEL, "10009 not_enough_funds") == \
        "order rejected: entry of trade m5md10io-1d: 10009 not_enough_funds"


def test_a_fill_line_has_side_amount_price_fee_and_the_exchange_time() -> None:
    fill = Fill("f1", "USDC-7", "BTC_USDC-PERPETUAL", Side.BUY, 0.001, 101364.0, 0.050682000000000004, "USDC",
                TS + 64_721, LABEL, Liquidity.TAKER)
    assert tradelog.fill_line(fill, "USDC") == (
        "fill: entry of trade m5md10io-1d: buy 0.001 at 101364, fee 0.050682 USDC (taker), exchange time "
        "2025-01-07 11:01:04.721 UTC")


def test_a_trade_is_followed_from_open_to_close_with_its_pnl() -> None:
    pending = Trade("t-1", "razor-a1", "BTC_USDC-PERPETUAL", Direction.LONG, amount=0.001, currency="USDC")
    opened = replace(pending, state=TradeState.OPEN, entry_filled=0.001, entry_price=101364.0)
    assert tradelog.trade_changes(opened, pending) == ["trade t-1 opened: long 0.001 BTC_USDC-PERPETUAL at 101364"]
    assert tradelog.trade_changes(opened, None) == []  # an update without a before is not news
    closed = replace(opened, state=TradeState.CLOSED, exit_filled=0.001, exit_price=101415.0, pnl=0.051,
                     fees=0.050682, exit_reason="tp")
    assert tradelog.trade_changes(closed, opened) == [
        "trade t-1 closed (tp): long 0.001 at 101364 -> 101415, PnL 0.051, fees 0.050682, net 0.000318 USDC"]
    failed = replace(pending, state=TradeState.FAILED, exit_reason="entry refused by the exchange: 10009")
    assert tradelog.trade_changes(failed, pending) == ["trade t-1 failed: entry refused by the exchange: 10009"]


def test_reconciliation_actions_are_written_in_words_with_their_strategy() -> None:
    stop = rc.PlaceStop("t-1", "razor-a1", "BTC_USDC-PERPETUAL", Side.SELL, 0.001, 101313.0, "tb:razor-a1:t-1:sl")
    assert tradelog.action_text(stop) == "place the missing stop of trade t-1: sell 0.001 trigger 101313"
    assert tradelog.action_strategy(stop) == "razor-a1"
    fill = Fill("f9", "o9", "BTC_USDC-PERPETUAL", Side.SELL, 0.001, 101300.0, 0.05, "USDC", TS, "tb:razor-b2:t-2:sl")
    applied = rc.ApplyFill(fill, "t-2", OrderRole.STOP_LOSS)
    assert tradelog.action_strategy(applied) == "razor-b2"
    assert "apply a missed fill of trade t-2 (stop-loss): sell 0.001 at 101300" in tradelog.action_text(applied)
    cancel = rc.CancelOrder("o5", "BTC_USDC-PERPETUAL", "its trade is closed", "t-3")
    assert tradelog.action_text(cancel) == "cancel order o5 of trade t-3 on BTC_USDC-PERPETUAL: its trade is closed"
    assert tradelog.action_strategy(cancel) is None  # the order manager finds it through the trade
