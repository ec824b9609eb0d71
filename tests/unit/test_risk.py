"""The kill switch is a plan: it stops strategies, cancels entries, and with flatten closes only our positions."""

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
    CancelOrder,
    ClosePosition,
    JournalView,
    StopStrategy,
    StrategyView,
    apply,
    plan,
)
from tradebaas.engine.core.risk import plan_kill
from tradebaas.engine.core.tradebook import TradeState, apply_fill, new_trade, with_order
from tradebaas.instruments import BTC_USDC_PERPETUAL

LIN = BTC_USDC_PERPETUAL
DAY = 1_738_368_000_000  # 2025-02-01T00:00:00Z
MIN = 60_000
S1 = "razor-aaaaaa"


def _world():
    sv = StrategyView(S1, LIN.name, StrategyState.RUNNING, StrategyState.RUNNING, sl_pct=0.5, tp_pct=0.65)
    t = new_trade("t1", S1, LIN, Direction.LONG, 0.002, sl_pct=0.5, tp_pct=0.65)
    f = Fill("e1", "o-e1", LIN.name, Side.BUY, 0.002, 50_000.0, 0.05, "USDC", 500, label=make_label(S1, "t1", OrderRole.ENTRY))
    t = with_order(apply_fill(t, f, LIN, OrderRole.ENTRY), OrderRole.STOP_LOSS, "sl-1", 49_750.0)
    pending = new_trade("t2", S1, LIN, Direction.LONG, 0.002)
    orders = (
        Order("sl-1", LIN.name, Side.SELL, OrderType.STOP_MARKET, 0.002, 0.0, OrderState.UNTRIGGERED,
              label=make_label(S1, "t1", OrderRole.STOP_LOSS), trigger_price=49_750.0, reduce_only=True),
        Order("e-2", LIN.name, Side.BUY, OrderType.LIMIT, 0.002, 0.0, OrderState.OPEN,
              label=make_label(S1, "t2", OrderRole.ENTRY), price=49_000.0),
        Order("manual", LIN.name, Side.SELL, OrderType.LIMIT, 0.5, 0.0, OrderState.OPEN, label="", price=90_000.0),
    )
    view = JournalView(strategies=(sv,), trades=(t, pending), last_fill_ts_ms=500)
    snap = ExchangeSnapshot(open_orders=orders, positions=(PositionSnapshot(LIN.name, 0.002, 50_000.0),), ts_ms=9_000)
    return view, snap



def test_kill_without_flatten_stops_strategies_cancels_entries_and_keeps_brackets():
    view, snap = _world()
    assert plan_kill(view, snap, flatten=False) == [
        StopStrategy(S1, "kill"),
        CancelOrder("e-2", LIN.name, "kill: entry order of trade t2", "t2"),
    ]


def test_kill_flatten_closes_our_positions_then_cancels_their_brackets_never_foreign_orders():
    view, snap = _world()
    actions = plan_kill(view, snap, flatten=True)
    assert actions == [
        StopStrategy(S1, "kill"),
        CancelOrder("e-2", LIN.name, "kill: entry order of trade t2", "t2"),
        ClosePosition("t1", S1, LIN.name, Side.SELL, 0.002, make_label(S1, "t1", OrderRole.EXIT), "kill"),
        CancelOrder("sl-1", LIN.name, "kill: sl order of trade t1", "t1", Side.SELL),
    ]
    v2, s2 = apply(view, snap, actions)
    assert plan_kill(v2, s2, flatten=True) == []
    assert [o.order_id for o in s2.open_orders] == ["manual"]
    # The next reconciliation journals the close with its reason.
    v3, _ = apply(v2, s2, plan(v2, s2))
    t1 = v3.trade("t1")
    assert (t1.state, t1.exit_reason) == (TradeState.CLOSED, "kill")
    assert v3.trade("t2").state is TradeState.FAILED
    assert v3.strategy(S1).desired is StrategyState.STOPPED


def test_kill_after_the_stop_already_filled_does_not_close_twice():
    view, snap = _world()
    stop_fill = Fill("x1", "sl-1", LIN.name, Side.SELL, 0.002, 49_750.0, 0.05, "USDC", 2_000,
                     label=make_label(S1, "t1", OrderRole.STOP_LOSS))
    snap = ExchangeSnapshot(open_orders=snap.open_orders[1:], positions=(), fills=(stop_fill,), ts_ms=9_000)
    assert not [a for a in plan_kill(view, snap, flatten=True) if isinstance(a, ClosePosition)]


@pytest.mark.parametrize("flatten", [False, True])
def test_kill_of_stopped_strategies_with_nothing_open_is_empty(flatten):
    sv = StrategyView(S1, LIN.name, StrategyState.STOPPED, StrategyState.STOPPED)
    assert plan_kill(JournalView(strategies=(sv,)), ExchangeSnapshot(), flatten) == []
