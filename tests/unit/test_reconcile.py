"""Crash-only recovery, as specifications: (journal view, exchange snapshot) -> actions."""

from __future__ import annotations

import pytest

from tradebaas.domain import (
    Direction,
    ExchangeSnapshot,
    Fill,
    Order,
    OrderRole,
    OrderState,
    OrderType,
    PositionSnapshot,
    Side,
    StrategyState,
)
from tradebaas.engine.core.labels import make_label
from tradebaas.engine.core.reconcile import (
    DEFAULT_PROTECTIVE_STOP_PCT,
    ApplyFill,
    CancelOrder,
    CloseTrade,
    JournalView,
    MarkNeedsAttention,
    PlaceStop,
    PlaceTakeProfit,
    ProtectPosition,
    RecordOrder,
    RecoverTrade,
    StrategyView,
    apply,
    fill_signature,
    keep_last_stops,
    plan,
    strategies_to_resume,
)
from tradebaas.engine.core.tradebook import TradeState, apply_fill, new_trade, with_order
from tradebaas.fillmodel import realized_pnl
from tradebaas.instruments import BTC_PERPETUAL, BTC_USDC_PERPETUAL

LIN = BTC_USDC_PERPETUAL
INV = BTC_PERPETUAL
S1 = "razor-aaaaaa"
RUNNING = StrategyView(S1, LIN.name, StrategyState.RUNNING, StrategyState.RUNNING, sl_pct=0.5, tp_pct=0.65)


def fill(fid, tid, role, side, amount, price, fee=0.0, ts=1_000, inst=LIN, sid=S1):
    return Fill(fid, f"o-{fid}", inst.name, side, amount, price, fee, inst.settlement_currency, ts,
                label=make_label(sid, tid, role))


def order(oid, tid, role, side, amount, *, price=None, trigger=None, inst=LIN, sid=S1, filled=0.0, label=None):
    stop = role is OrderRole.STOP_LOSS
    return Order(
        order_id=oid, instrument=inst.name, side=side,
        order_type=OrderType.STOP_MARKET if stop else (OrderType.MARKET if role is OrderRole.ENTRY else OrderType.LIMIT),
        amount=amount, filled_amount=filled, state=OrderState.UNTRIGGERED if stop else OrderState.OPEN,
        label=make_label(sid, tid, role) if label is None else label, price=price, trigger_price=trigger,
        reduce_only=role is not OrderRole.ENTRY,
    )


def open_long(tid="t1", amount=0.002, price=50_000.0, stop=True, take=True):
    """A long trade whose entry filled, with its brackets journaled (and the matching exchange orders)."""
    t = new_trade(tid, S1, LIN, Direction.LONG, amount, sl_pct=0.5, tp_pct=0.65)
    t = apply_fill(t, fill(f"{tid}-e", tid, OrderRole.ENTRY, Side.BUY, amount, price, fee=0.05, ts=500), LIN, OrderRole.ENTRY)
    orders = []
    if stop:
        t = with_order(t, OrderRole.STOP_LOSS, f"{tid}-sl", 49_750.0)
        orders.append(order(f"{tid}-sl", tid, OrderRole.STOP_LOSS, Side.SELL, amount, trigger=49_750.0))
    if take:
        t = with_order(t, OrderRole.TAKE_PROFIT, f"{tid}-tp", 50_325.0)
        orders.append(order(f"{tid}-tp", tid, OrderRole.TAKE_PROFIT, Side.SELL, amount, price=50_325.0))
    return t, orders


def view(*trades, strategies=(RUNNING,)):
    return JournalView(strategies=tuple(strategies), trades=tuple(trades), last_fill_ts_ms=500)


def snap(orders=(), positions=(), fills=()):
    return ExchangeSnapshot(open_orders=tuple(orders), positions=tuple(positions), fills=tuple(fills), ts_ms=10_000)


def long_pos(size=0.002, inst=LIN):
    return PositionSnapshot(inst.name, size, 50_000.0)


def assert_settled(v, s):
    """Planning again after applying the plan yields no actions."""
    v2, s2 = apply(v, s, plan(v, s))
    assert plan(v2, s2) == []
    return v2, s2


def test_everything_in_order_needs_nothing():
    t, orders = open_long()
    assert plan(view(t), snap(orders, [long_pos()])) == []


def test_stop_filled_while_engine_down_closes_trade_with_exchange_pnl():
    t, orders = open_long()
    stop_fill = fill("x1", "t1", OrderRole.STOP_LOSS, Side.SELL, 0.002, 49_740.0, fee=0.0497, ts=2_000)
    # The stop filled: the position is gone, the TP is still there (if the exchange did not cancel it via OCO).
    s = snap([orders[1]], [], [stop_fill])
    actions = plan(view(t), s)
    assert actions == [
        ApplyFill(stop_fill, "t1", OrderRole.STOP_LOSS),
        CloseTrade("t1", TradeState.CLOSED, "sl"),
        CancelOrder("t1-tp", LIN.name, "tp order of trade t1, which is closed", "t1"),
    ]
    v2, _ = assert_settled(view(t), s)
    closed = v2.trade("t1")
    assert closed.state is TradeState.CLOSED and closed.exit_reason == "sl"
    assert closed.pnl == pytest.approx(realized_pnl(LIN, 1, 0.002, 50_000, 49_740))
    assert closed.fees == pytest.approx(0.05 + 0.0497)
    assert closed.exit_ts_ms == 2_000
    assert v2.last_fill_ts_ms == 2_000


def test_position_without_stop_gets_stop_back():
    t, orders = open_long()
    s = snap([orders[1]], [long_pos()])  # the stop vanished (or was never placed)
    assert plan(view(t), s) == [
        PlaceStop("t1", S1, LIN.name, Side.SELL, 0.002, 49_750.0, make_label(S1, "t1", OrderRole.STOP_LOSS))
    ]
    assert_settled(view(t), s)


def test_crash_between_entry_fill_and_brackets_places_both_from_actual_fill():
    t = new_trade("t1", S1, LIN, Direction.LONG, 0.002, sl_pct=0.5, tp_pct=0.65)
    entry = fill("e1", "t1", OrderRole.ENTRY, Side.BUY, 0.002, 50_000.0, fee=0.05, ts=900)
    s = snap([], [long_pos()], [entry])
    actions = plan(view(t), s)
    assert actions == [
        ApplyFill(entry, "t1", OrderRole.ENTRY),
        PlaceStop("t1", S1, LIN.name, Side.SELL, 0.002, 49_750.0, make_label(S1, "t1", OrderRole.STOP_LOSS)),
        PlaceTakeProfit("t1", S1, LIN.name, Side.SELL, 0.002, 50_325.0, make_label(S1, "t1", OrderRole.TAKE_PROFIT)),
    ]
    assert_settled(view(t), s)


def test_short_inverse_trade_gets_buy_stop_above_entry():
    sv = StrategyView("s2", INV.name, StrategyState.RUNNING, StrategyState.RUNNING)
    t = new_trade("t9", "s2", INV, Direction.SHORT, 100, sl_pct=0.5, tp_pct=None)
    t = apply_fill(t, fill("e9", "t9", OrderRole.ENTRY, Side.SELL, 100, 60_000.0, inst=INV, sid="s2"), INV, OrderRole.ENTRY)
    s = snap([], [PositionSnapshot(INV.name, -100, 60_000.0)])
    assert plan(view(t, strategies=[sv]), s) == [
        PlaceStop("t9", "s2", INV.name, Side.BUY, 100, 60_300.0, make_label("s2", "t9", OrderRole.STOP_LOSS))
    ]


def test_stop_of_wrong_size_is_replaced_before_the_old_one_is_cancelled():
    t, orders = open_long()
    small = order("t1-sl", "t1", OrderRole.STOP_LOSS, Side.SELL, 0.001, trigger=49_750.0)
    s = snap([small, orders[1]], [long_pos()])
    actions = plan(view(t), s)
    assert [type(a) for a in actions] == [PlaceStop, CancelOrder]
    assert actions[0].amount == pytest.approx(0.002)
    assert actions[1].order_id == "t1-sl"
    assert_settled(view(t), s)


def test_duplicate_stops_keep_the_journaled_one():
    t, orders = open_long()
    dup = order("a-dup", "t1", OrderRole.STOP_LOSS, Side.SELL, 0.002, trigger=49_750.0)
    s = snap([*orders, dup], [long_pos()])
    assert plan(view(t), s) == [CancelOrder("a-dup", LIN.name, "duplicate sl order of trade t1 (keeping t1-sl)", "t1", Side.SELL)]


def test_stop_placed_but_not_journaled_is_recorded_not_duplicated():
    t, orders = open_long(stop=False)
    live_stop = order("x-sl", "t1", OrderRole.STOP_LOSS, Side.SELL, 0.002, trigger=49_750.0)
    s = snap([live_stop, *orders], [long_pos()])
    assert plan(view(t), s) == [RecordOrder("t1", OrderRole.STOP_LOSS, "x-sl", 49_750.0)]
    assert_settled(view(t), s)


def test_bracket_without_position_is_cancelled():
    t, orders = open_long()
    s = snap(orders, [])  # flat: someone closed it outside tradebaas
    actions = plan(view(t), s)
    cancels = [a for a in actions if isinstance(a, CancelOrder)]
    assert {c.order_id for c in cancels} == {"t1-sl", "t1-tp"}
    assert not [a for a in actions if isinstance(a, PlaceStop)]
    (mark,) = [a for a in actions if isinstance(a, MarkNeedsAttention)]
    assert "exchange shows no position on BTC_USDC-PERPETUAL" in mark.message
    assert_settled(view(t), s)


def test_bracket_of_a_trade_the_journal_has_no_open_trade_for_is_cancelled():
    orphan = order("o9", "gone", OrderRole.TAKE_PROFIT, Side.SELL, 0.002, price=51_000.0)
    assert plan(view(), snap([orphan])) == [
        CancelOrder("o9", LIN.name, "tp order of trade gone, which the journal has no open trade for", "gone")
    ]


def test_foreign_orders_are_never_touched():
    manual = order("m1", "x", OrderRole.STOP_LOSS, Side.SELL, 1.0, trigger=1.0, label="my stop")
    other_engine = order("m2", "x", OrderRole.STOP_LOSS, Side.SELL, 1.0, trigger=1.0, sid="someone-else")
    assert plan(view(), snap([manual, other_engine])) == []


def test_foreign_position_marks_needs_attention():
    s = snap([], [PositionSnapshot(LIN.name, 0.003, 50_000.0)])
    assert plan(view(), s) == [
        MarkNeedsAttention(
            S1,
            "exchange shows a long 0.003 BTC position on BTC_USDC-PERPETUAL that no tradebaas trade explains; "
            "not adopting or closing it — check it on the exchange, then `tradebaas strategy resume <id>`",
        )
    ]
    v2, s2 = assert_settled(view(), s)
    assert v2.strategy(S1).state is StrategyState.NEEDS_ATTENTION
    assert s2.positions == s.positions  # never adopted, never closed
    assert strategies_to_resume(v2) == ()


def test_position_on_an_instrument_nobody_here_trades_is_not_our_business():
    assert plan(view(), snap([], [PositionSnapshot(INV.name, -500, 60_000.0)])) == []


def test_size_mismatch_marks_needs_attention_but_still_protects_our_trade():
    t, orders = open_long(stop=False)
    s = snap(orders, [long_pos(0.005)])
    actions = plan(view(t), s)
    assert isinstance(actions[0], PlaceStop)
    assert isinstance(actions[-1], MarkNeedsAttention)
    assert "long 0.005 BTC" in actions[-1].message and "account for long 0.002 BTC" in actions[-1].message
    assert_settled(view(t), s)


def test_position_is_explained_by_the_sum_of_trades_of_several_strategies():
    s2 = StrategyView("other-bbbbbb", LIN.name, StrategyState.RUNNING, StrategyState.RUNNING)
    a, oa = open_long("ta", 0.002)
    b = new_trade("tb", "other-bbbbbb", LIN, Direction.LONG, 0.001)
    b = apply_fill(b, fill("eb", "tb", OrderRole.ENTRY, Side.BUY, 0.001, 50_000.0, sid="other-bbbbbb"), LIN, OrderRole.ENTRY)
    b = with_order(b, OrderRole.STOP_LOSS, "tb-sl", 49_000.0)
    ob = order("tb-sl", "tb", OrderRole.STOP_LOSS, Side.SELL, 0.001, trigger=49_000.0, sid="other-bbbbbb")
    s = snap([*oa, ob], [long_pos(0.003)])
    assert plan(view(a, b, strategies=[RUNNING, s2]), s) == []


def test_entry_still_open_after_crash_is_cancelled_and_the_trade_fails():
    t = new_trade("t1", S1, LIN, Direction.LONG, 0.002)
    live_entry = order("e-1", "t1", OrderRole.ENTRY, Side.BUY, 0.002)
    s = snap([live_entry])
    actions = plan(view(t), s)
    assert [type(a) for a in actions] == [CloseTrade, CancelOrder]
    assert actions[0].state is TradeState.FAILED
    v2, _ = assert_settled(view(t), s)
    assert v2.trade("t1").state is TradeState.FAILED


def test_partially_filled_entry_is_cancelled_and_the_filled_part_protected():
    t = new_trade("t1", S1, LIN, Direction.LONG, 0.003, sl_pct=0.5, tp_pct=0.65)
    live_entry = order("e-1", "t1", OrderRole.ENTRY, Side.BUY, 0.003, filled=0.001)
    part = fill("p1", "t1", OrderRole.ENTRY, Side.BUY, 0.001, 50_000.0)
    s = snap([live_entry], [long_pos(0.001)], [part])
    actions = plan(view(t), s)
    assert [type(a) for a in actions] == [ApplyFill, PlaceStop, PlaceTakeProfit, CancelOrder]
    assert actions[1].amount == pytest.approx(0.001)
    assert_settled(view(t), s)


def test_entry_sent_but_not_journaled_is_recovered_from_its_label():
    entry = fill("e1", "m5x-1", OrderRole.ENTRY, Side.SELL, 0.002, 50_000.0, ts=900)
    s = snap([], [long_pos(-0.002)], [entry])
    actions = plan(view(), s)
    assert actions[:2] == [
        RecoverTrade("m5x-1", S1, LIN.name, Direction.SHORT, 0.5, 0.65),
        ApplyFill(entry, "m5x-1", OrderRole.ENTRY),
    ]
    assert actions[2] == PlaceStop("m5x-1", S1, LIN.name, Side.BUY, 0.002, 50_250.0, make_label(S1, "m5x-1", OrderRole.STOP_LOSS))
    v2, _ = assert_settled(view(), s)
    assert v2.trade("m5x-1").state is TradeState.OPEN


def test_fill_already_journaled_is_not_applied_again_even_if_its_trade_is_gone():
    old = fill("f-old", "t0", OrderRole.STOP_LOSS, Side.SELL, 0.002, 49_000.0)
    v = JournalView(strategies=(RUNNING,), journaled_fill_ids=frozenset({"f-old"}))
    assert plan(v, snap(fills=[old])) == []


def test_exit_fill_of_an_unknown_trade_is_not_applied_and_explained():
    stray = fill("f-x", "t-unknown", OrderRole.TAKE_PROFIT, Side.SELL, 0.002, 51_000.0)
    (mark,) = plan(view(), snap(fills=[stray]))
    assert isinstance(mark, MarkNeedsAttention) and "which the journal does not know" in mark.message


def test_fills_are_applied_in_exchange_order_whatever_order_they_arrive_in():
    t = new_trade("t1", S1, LIN, Direction.LONG, 0.002, sl_pct=0.5, tp_pct=0.65)
    e = fill("a", "t1", OrderRole.ENTRY, Side.BUY, 0.002, 50_000.0, ts=1)
    x = fill("b", "t1", OrderRole.TAKE_PROFIT, Side.SELL, 0.002, 50_325.0, ts=2)
    forward = plan(view(t), snap(fills=[e, x]))
    assert forward == plan(view(t), snap(fills=[x, e]))
    assert [type(a) for a in forward] == [ApplyFill, ApplyFill, CloseTrade]


def test_reconcile_twice_changes_nothing():
    t1, o1 = open_long("t1", stop=False)
    t2 = new_trade("t2", S1, LIN, Direction.LONG, 0.001, sl_pct=0.5, tp_pct=0.65)
    fills = [fill("e2", "t2", OrderRole.ENTRY, Side.BUY, 0.001, 50_100.0, ts=700)]
    orphan = order("z", "t0", OrderRole.STOP_LOSS, Side.SELL, 0.002, trigger=1.0)
    v, s = view(t1, t2), snap([*o1, orphan], [long_pos(0.003)], fills)
    first = plan(v, s)
    assert first
    v2, s2 = apply(v, s, first)
    assert plan(v2, s2) == []
    v3, s3 = apply(v2, s2, [])
    assert (v3, s3) == (v2, s2)


def test_needs_attention_message_is_not_repeated_once_marked():
    s = snap([], [PositionSnapshot(LIN.name, 0.003, 50_000.0)])
    (mark,) = plan(view(), s)
    marked = StrategyView(S1, LIN.name, StrategyState.RUNNING, StrategyState.NEEDS_ATTENTION, mark.message)
    assert plan(view(strategies=[marked]), s) == []


def test_missing_stop_without_a_price_of_its_own_gets_one_at_the_strategy_distance():
    t = new_trade("t1", S1, LIN, Direction.LONG, 0.002)  # no sl_pct, no stop price (recovered from a label)
    t = apply_fill(t, fill("e", "t1", OrderRole.ENTRY, Side.BUY, 0.002, 50_000.0), LIN, OrderRole.ENTRY)
    (stop,) = plan(view(t), snap([], [long_pos()]))
    assert stop == PlaceStop("t1", S1, LIN.name, Side.SELL, 0.002, 49_750.0, make_label(S1, "t1", OrderRole.STOP_LOSS))
    no_distance = StrategyView(S1, LIN.name, StrategyState.RUNNING, StrategyState.RUNNING)
    (stop,) = plan(view(t, strategies=[no_distance]), snap([], [long_pos()]))
    assert stop.trigger_price == 50_000.0 * (1 - DEFAULT_PROTECTIVE_STOP_PCT / 100)
    assert_settled(view(t), snap([], [long_pos()]))


def test_resume_only_strategies_the_user_left_running():
    stopped = StrategyView("s-stopped", LIN.name, StrategyState.STOPPED, StrategyState.STOPPED)
    attention = StrategyView("s-att", LIN.name, StrategyState.RUNNING, StrategyState.NEEDS_ATTENTION, "x")
    errored = StrategyView("s-err", LIN.name, StrategyState.RUNNING, StrategyState.ERROR)
    v = view(strategies=[RUNNING, stopped, attention, errored])
    assert strategies_to_resume(v) == (S1, "s-err")


# -- protection first ------------------------------------------------------------------------------------------


def test_the_last_stop_of_a_position_is_kept_even_when_the_journal_lost_its_trade():
    """The journal closed (or never had) the trade, but the exchange still holds the position: its stop stays."""
    stop = order("s-live", "forgotten", OrderRole.STOP_LOSS, Side.SELL, 0.002, trigger=49_000.0)
    take = order("t-live", "forgotten", OrderRole.TAKE_PROFIT, Side.SELL, 0.002, price=51_000.0)
    s = snap([stop, take], [long_pos()])
    actions = plan(view(), s)
    assert not [a for a in actions if isinstance(a, CancelOrder) and a.order_id == "s-live"]
    assert [a.order_id for a in actions if isinstance(a, CancelOrder)] == ["t-live"]
    (mark,) = [a for a in actions if isinstance(a, MarkNeedsAttention)]
    assert "no tradebaas trade explains" in mark.message
    v2, s2 = assert_settled(view(), s)
    assert [o.order_id for o in s2.open_orders] == ["s-live"]


def test_a_closed_trade_keeps_its_stop_while_the_exchange_still_holds_the_position():
    t, orders = open_long()
    t = apply_fill(t, fill("x", "t1", OrderRole.TAKE_PROFIT, Side.SELL, 0.002, 50_325.0), LIN, OrderRole.TAKE_PROFIT)
    assert t.state is TradeState.CLOSED  # the journal believes a fill the exchange since forgot
    actions = plan(view(t), snap(orders, [long_pos()]))
    assert "t1-sl" not in [a.order_id for a in actions if isinstance(a, CancelOrder)]
    assert_settled(view(t), snap(orders, [long_pos()]))


def test_a_position_only_our_labels_know_gets_a_protective_stop_beyond_the_market():
    """An entry filled under a reused id: the journal has no open trade, the fill's label says it is ours."""
    lost = fill("f-new", "t7", OrderRole.ENTRY, Side.BUY, 0.002, 50_000.0)
    old = fill("f-new", "t3", OrderRole.ENTRY, Side.BUY, 0.001, 48_000.0)  # what the journal holds under that id
    v = JournalView(strategies=(RUNNING,), journaled_fill_ids=frozenset({"f-new"}),
                    fill_signatures={"f-new": fill_signature(old)})
    s = snap([], [PositionSnapshot(LIN.name, 0.002, 50_000.0, mark_price=48_500.0)], [lost])
    actions = plan(v, s)
    assert not [a for a in actions if isinstance(a, ApplyFill)]  # a reused id is never taken for the old fill
    (protect,) = [a for a in actions if isinstance(a, ProtectPosition)]
    assert protect.side is Side.SELL and protect.amount == pytest.approx(0.002)
    assert protect.trigger_price == LIN.round_price(48_500.0 * (1 - 0.5 / 100))  # below the mark, not the entry
    (mark,) = [a for a in actions if isinstance(a, MarkNeedsAttention)]
    assert "under an id the journal holds for another fill" in mark.message
    v2, s2 = assert_settled(v, s)
    assert v2.strategy(S1).state is StrategyState.NEEDS_ATTENTION
    assert [o.order_type for o in s2.open_orders] == [OrderType.STOP_MARKET]


def test_a_position_nobody_here_opened_is_still_never_touched():
    s = snap([order("m", "x", OrderRole.STOP_LOSS, Side.SELL, 1.0, trigger=1.0, label="manual")],
             [PositionSnapshot(LIN.name, 0.003, 50_000.0, mark_price=50_000.0)])
    actions = plan(view(), s)
    assert [type(a) for a in actions] == [MarkNeedsAttention]


def test_a_strategy_without_brackets_runs_without_a_stop_until_its_position_is_unexplained():
    no_brackets = StrategyView(S1, LIN.name, StrategyState.RUNNING, StrategyState.RUNNING, uses_brackets=False)
    t = new_trade("t1", S1, LIN, Direction.LONG, 0.002)
    t = apply_fill(t, fill("e", "t1", OrderRole.ENTRY, Side.BUY, 0.002, 50_000.0), LIN, OrderRole.ENTRY)
    assert plan(view(t, strategies=[no_brackets]), snap([], [long_pos()])) == []
    bigger = snap([], [long_pos(0.005)])
    actions = plan(view(t, strategies=[no_brackets]), bigger)
    (protect,) = [a for a in actions if isinstance(a, ProtectPosition)]
    assert protect.amount == pytest.approx(0.002) and protect.label == make_label(S1, "t1", OrderRole.STOP_LOSS)
    assert isinstance(actions[-1], MarkNeedsAttention)
    assert_settled(view(t, strategies=[no_brackets]), bigger)


def test_a_cancel_of_a_replaced_stop_names_the_side_it_protects():
    t, orders = open_long()
    wrong = order("t1-sl", "t1", OrderRole.STOP_LOSS, Side.SELL, 0.001, trigger=49_750.0)
    actions = plan(view(t), snap([wrong, orders[1]], [long_pos()]))
    place, cancel = actions
    assert isinstance(place, PlaceStop) and isinstance(cancel, CancelOrder)
    assert cancel.protects is Side.SELL  # the executor keeps it if the replacement fails


def test_keep_last_stops_holds_back_a_cancel_that_would_leave_a_position_naked():
    t, orders = open_long()
    bare = [CancelOrder("t1-sl", LIN.name, "x", "t1", Side.SELL), CancelOrder("t1-tp", LIN.name, "y", "t1")]
    assert keep_last_stops(bare, snap(orders, [long_pos()]), {S1}) == bare[1:]
    assert keep_last_stops(bare, snap(orders, []), {S1}) == bare
