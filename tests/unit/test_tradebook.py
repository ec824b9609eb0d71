"""The trade state machine: built from exchange fills only, idempotent, PnL from the one fill model."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradebaas import fillmodel
from tradebaas.domain import Direction, Fill, Liquidity, OrderRole, Side
from tradebaas.engine.core.tradebook import (
    Trade,
    TradeState,
    apply_fill,
    fill_problem,
    mark_closing,
    mark_failed,
    new_trade,
    order_id_for,
    with_order,
)
from tradebaas.instruments import BTC_PERPETUAL, BTC_USDC_PERPETUAL

LIN = BTC_USDC_PERPETUAL
INV = BTC_PERPETUAL


def fill(fid, side, amount, price, fee=0.0, ts=1_000, inst=LIN, role="entry"):
    return Fill(
        trade_id=fid,
        order_id=f"o-{fid}",
        instrument=inst.name,
        side=side,
        amount=amount,
        price=price,
        fee=fee,
        fee_currency=inst.settlement_currency,
        ts_ms=ts,
        label=f"tb:s1:t1:{role}",
        liquidity=Liquidity.TAKER,
    )


def long_trade(inst=LIN, amount=0.002):
    return new_trade("t1", "s1", inst, Direction.LONG, amount, sl_pct=0.5, tp_pct=0.65, signal_ts_ms=60_000)


def test_new_trade_is_pending_entry_in_settlement_currency():
    t = long_trade()
    assert t.state is TradeState.PENDING_ENTRY
    assert t.currency == "USDC"
    assert t.open_amount == 0


def test_entry_fill_opens_the_trade_at_the_fill_price():
    t = apply_fill(long_trade(), fill("f1", Side.BUY, 0.002, 50_000, fee=0.05, ts=5), LIN, OrderRole.ENTRY)
    assert t.state is TradeState.OPEN
    assert t.entry_filled == pytest.approx(0.002)
    assert t.entry_price == 50_000
    assert t.fees == pytest.approx(0.05)
    assert t.entry_ts_ms == 5
    assert t.signed_open_amount == pytest.approx(0.002)


def test_partial_entry_fills_average_the_entry_price():
    t = long_trade(amount=0.003)
    t = apply_fill(t, fill("f1", Side.BUY, 0.001, 50_000, ts=1), LIN, OrderRole.ENTRY)
    t = apply_fill(t, fill("f2", Side.BUY, 0.002, 50_300, ts=2), LIN, OrderRole.ENTRY)
    assert t.entry_filled == pytest.approx(0.003)
    assert t.entry_price == pytest.approx(50_200)
    assert t.entry_ts_ms == 1
    assert t.last_fill_ts_ms == 2


def test_a_fill_applied_twice_changes_nothing():
    f = fill("f1", Side.BUY, 0.002, 50_000, fee=0.05)
    once = apply_fill(long_trade(), f, LIN, OrderRole.ENTRY)
    assert apply_fill(once, f, LIN, OrderRole.ENTRY) is once


def test_stop_fill_closes_long_with_loss_and_exchange_fees_linear():
    t = apply_fill(long_trade(), fill("f1", Side.BUY, 0.002, 50_000, fee=0.05), LIN, OrderRole.ENTRY)
    t = apply_fill(t, fill("f2", Side.SELL, 0.002, 49_750, fee=0.0497, ts=9, role="sl"), LIN, OrderRole.STOP_LOSS)
    assert t.state is TradeState.CLOSED
    assert t.exit_reason == "sl"
    assert t.exit_price == 49_750
    assert t.exit_ts_ms == 9
    assert t.pnl == pytest.approx(fillmodel.realized_pnl(LIN, 1, 0.002, 50_000, 49_750)) == pytest.approx(-0.5)
    assert t.fees == pytest.approx(0.0997)
    assert t.net_pnl == pytest.approx(-0.5997)
    assert t.signed_open_amount == 0


def test_take_profit_closes_short_inverse_in_btc():
    t = new_trade("t1", "s1", INV, Direction.SHORT, 100)
    t = apply_fill(t, fill("f1", Side.SELL, 100, 50_000, fee=1e-6, inst=INV), INV, OrderRole.ENTRY)
    t = apply_fill(t, fill("f2", Side.BUY, 100, 49_000, inst=INV, role="tp"), INV, OrderRole.TAKE_PROFIT)
    assert t.state is TradeState.CLOSED
    assert t.currency == "BTC"
    assert t.exit_reason == "tp"
    assert t.pnl == pytest.approx(-1 * 100 * (1 / 50_000 - 1 / 49_000))
    assert t.pnl > 0


def test_partial_exit_leaves_trade_closing_then_closed():
    t = apply_fill(long_trade(), fill("f1", Side.BUY, 0.002, 50_000), LIN, OrderRole.ENTRY)
    t = apply_fill(t, fill("f2", Side.SELL, 0.001, 51_000, role="tp"), LIN, OrderRole.TAKE_PROFIT)
    assert t.state is TradeState.CLOSING
    assert t.open_amount == pytest.approx(0.001)
    assert t.pnl == pytest.approx(1.0)
    t = apply_fill(t, fill("f3", Side.SELL, 0.001, 49_000, role="sl"), LIN, OrderRole.STOP_LOSS)
    assert t.state is TradeState.CLOSED
    assert t.exit_price == pytest.approx(50_000)
    assert t.pnl == pytest.approx(0.0)
    assert t.exit_reason == "tp"  # the first exit named the reason; mark_closing/kill reasons win the same way


def test_exit_reason_set_by_mark_closing_survives_the_exit_fill():
    t = apply_fill(long_trade(), fill("f1", Side.BUY, 0.002, 50_000), LIN, OrderRole.ENTRY)
    t = mark_closing(t, "kill")
    assert t.state is TradeState.CLOSING
    t = apply_fill(t, fill("f2", Side.SELL, 0.002, 50_000, role="exit"), LIN, OrderRole.EXIT)
    assert (t.state, t.exit_reason) == (TradeState.CLOSED, "kill")


def test_over_fill_realises_nothing_beyond_the_open_amount():
    t = apply_fill(long_trade(), fill("f1", Side.BUY, 0.001, 50_000), LIN, OrderRole.ENTRY)
    t = apply_fill(t, fill("f2", Side.SELL, 0.002, 51_000, role="exit"), LIN, OrderRole.EXIT)
    assert t.state is TradeState.CLOSED
    assert t.pnl == pytest.approx(1.0)


def test_wrong_side_or_instrument_is_refused_with_a_reason():
    t = long_trade()
    assert "needs a buy" in fill_problem(t, fill("f1", Side.SELL, 0.001, 1.0), OrderRole.ENTRY)
    with pytest.raises(ValueError, match="needs a sell"):
        apply_fill(t, fill("f1", Side.BUY, 0.001, 1.0), LIN, OrderRole.STOP_LOSS)
    with pytest.raises(ValueError, match="BTC-PERPETUAL"):
        apply_fill(t, fill("f1", Side.BUY, 10, 1.0, inst=INV), LIN, OrderRole.ENTRY)


def test_entry_that_never_filled_fails_but_a_filled_one_does_not():
    t = mark_failed(long_trade(), "entry rejected")
    assert (t.state, t.exit_reason) == (TradeState.FAILED, "entry rejected")
    opened = apply_fill(long_trade(), fill("f1", Side.BUY, 0.001, 50_000), LIN, OrderRole.ENTRY)
    assert mark_failed(opened, "x") is opened


def test_a_late_entry_fill_reopens_a_failed_trade_so_it_gets_protected():
    t = mark_failed(long_trade(), "entry vanished")
    t = apply_fill(t, fill("f1", Side.BUY, 0.001, 50_000), LIN, OrderRole.ENTRY)
    assert t.state is TradeState.OPEN


def test_orders_by_role():
    t = with_order(long_trade(), OrderRole.STOP_LOSS, "o-sl", 49_750)
    t = with_order(t, OrderRole.TAKE_PROFIT, "o-tp", 50_325)
    t = with_order(t, OrderRole.ENTRY, "o-e")
    t = with_order(t, OrderRole.EXIT, "o-x")
    assert (t.stop_order_id, t.stop_price, t.take_order_id, t.take_price) == ("o-sl", 49_750, "o-tp", 50_325)
    assert [order_id_for(t, r) for r in OrderRole] == ["o-e", "o-sl", "o-tp", "o-x"]
    assert with_order(t, OrderRole.STOP_LOSS, "o-sl2").stop_price == 49_750


def test_trade_round_trips_through_json():
    t = apply_fill(long_trade(), fill("f1", Side.BUY, 0.002, 50_000, fee=0.05), LIN, OrderRole.ENTRY)
    t = with_order(t, OrderRole.STOP_LOSS, "o-sl", 49_750)
    data = json.loads(json.dumps(t.to_dict()))
    assert data["state"] == "open" and data["direction"] == "long" and data["applied_fill_ids"] == ["f1"]
    assert Trade.from_dict(data) == t
    assert Trade.from_dict({**data, "some_future_column": 1}) == t


@given(
    st.lists(st.tuples(st.sampled_from(["entry", "sl", "tp"]), st.integers(1, 5), st.integers(40_000, 60_000)),
             max_size=12),
    st.randoms(use_true_random=False),
)
def test_fill_order_of_application_and_repetition_do_not_matter_for_totals(steps, rnd):
    """Totals (filled amounts, fees) depend on the set of fills only, and re-applying any of them is a no-op."""
    fills = []
    for i, (role, lots, price) in enumerate(steps):
        side = Side.BUY if role == "entry" else Side.SELL
        fills.append((fill(f"f{i}", side, lots * 0.001, float(price), fee=lots * 0.01, ts=i, role=role), role))
    t = long_trade()
    for f, role in fills:
        t = apply_fill(t, f, LIN, OrderRole(role))
    again = t
    for f, role in rnd.sample(fills, len(fills)):
        again = apply_fill(again, f, LIN, OrderRole(role))
    assert again == t
    entries = sum(f.amount for f, r in fills if r == "entry")
    exits = sum(f.amount for f, r in fills if r != "entry")
    assert t.entry_filled == pytest.approx(entries)
    assert t.exit_filled == pytest.approx(exits)
    assert t.fees == pytest.approx(sum(f.fee for f, _ in fills))
    assert (t.state is TradeState.CLOSED) == (entries > 0 and exits >= entries - 1e-9)


def test_a_trade_closed_outside_tradebaas_ends_at_the_given_price_without_a_fee() -> None:
    from tradebaas.engine.core.tradebook import mark_closed_externally

    trade = new_trade("t1", "s1", LIN, Direction.LONG, 0.002)
    trade = apply_fill(trade, Fill("e1", "o1", LIN.name, Side.BUY, 0.002, 50_000.0, 0.05, "USDC", 100), LIN,
                       OrderRole.ENTRY)
    closed = mark_closed_externally(trade, LIN, 51_000.0, 200, "closed outside tradebaas")
    assert closed.state is TradeState.CLOSED and closed.open_amount == 0
    assert closed.pnl == pytest.approx(0.002 * 1_000) and closed.fees == trade.fees
    assert (closed.exit_price, closed.exit_ts_ms, closed.exit_reason) == (51_000.0, 200, "closed outside tradebaas")
    assert mark_closed_externally(closed, LIN, 1.0, 300, "again") is closed  # an ended trade stays as it ended
