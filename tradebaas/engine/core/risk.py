"""The kill switch as a pure plan.

Per-strategy limits (cooldowns, ``maxDailyTrades``, ``maxConcurrentTrades``) are not here: they live in the
strategy's ``StrategyContext`` and are kept by the helpers in ``tradebaas/strategies/base.py`` (``record_entry``,
``record_close``, ``record_error``, ``roll_day``), which the live runner and the backtester share and the journal
persists (``strategy_runtime``, ``daily_counters``).

Kill switch (``plan_kill``): every strategy stops, every entry order of ours is cancelled; with ``flatten`` every
open trade of ours is closed with a reduce-only market order and every bracket/exit order of ours is cancelled
after the closes were sent; without ``flatten`` positions keep their brackets on the exchange (still protected, just not managed).
"""

from __future__ import annotations

from collections.abc import Mapping

from tradebaas.domain import ExchangeSnapshot, OrderRole, OrderType, StrategyState
from tradebaas.engine.core.labels import make_label, parse_label
from tradebaas.engine.core.reconcile import (
    Action,
    CancelOrder,
    ClosePosition,
    JournalView,
    StopStrategy,
    keep_last_stops,
    project_fills,
)
from tradebaas.engine.core.tradebook import amount_epsilon
from tradebaas.instruments import DEFAULT_INSTRUMENTS, Instrument


def plan_kill(
    view: JournalView,
    snapshot: ExchangeSnapshot,
    flatten: bool,
    instruments: Mapping[str, Instrument] | None = None,
    reason: str = "kill",
) -> list[Action]:
    """The kill switch's actions, in execution order. Pure and idempotent (with ``reconcile.apply``).

    1. ``StopStrategy`` for every strategy not already stopped (desired and actual);
    2. ``CancelOrder`` for every live entry order of ours;
    3. with ``flatten``: ``ClosePosition`` (reduce-only market, role exit) for every trade of ours with an open
       amount, when the exchange position is on its side; then ``CancelOrder`` for every live sl/tp/exit order of
       ours (a pending exit is replaced by the market close; brackets go only after the closes were sent). Fills already on the exchange but not yet journaled are taken into account, so a kill
       right after a stop filled does not try to close twice.
    Positions nobody here opened are never touched, and no stop is cancelled that would leave a position the
    exchange holds without one (``keep_last_stops``: e.g. a position on the other side of what the journal says).
    """
    instruments = DEFAULT_INSTRUMENTS if instruments is None else instruments
    actions: list[Action] = []
    for s in view.strategies:
        if s.desired is not StrategyState.STOPPED or s.state not in (StrategyState.STOPPED, StrategyState.NEEDS_ATTENTION):
            actions.append(StopStrategy(s.strategy_id, reason))
    ours = {s.strategy_id for s in view.strategies}
    live = []
    for o in sorted(snapshot.open_orders, key=lambda o: o.order_id):
        p = parse_label(o.label)
        if o.state.is_live and p is not None and p.strategy_id in ours:
            live.append((o, p))
    for o, p in live:
        if p.role is OrderRole.ENTRY:
            actions.append(CancelOrder(o.order_id, o.instrument, f"{reason}: entry order of trade {p.trade_id}", p.trade_id))
    if not flatten:
        return actions
    trades = project_fills(view, snapshot.fills, instruments).trades
    net: dict[str, float] = {}
    for pos in snapshot.positions:
        net[pos.instrument] = net.get(pos.instrument, 0.0) + pos.size
    for tid in sorted(trades):
        t = trades[tid]
        inst = instruments.get(t.instrument)
        if t.state.is_terminal or inst is None or t.strategy_id not in ours:
            continue
        eps = amount_epsilon(inst)
        if t.open_amount > eps and net.get(t.instrument, 0.0) * t.direction.sign > eps:
            actions.append(
                ClosePosition(
                    tid, t.strategy_id, t.instrument, t.direction.exit_side, t.open_amount,
                    make_label(t.strategy_id, tid, OrderRole.EXIT), reason,
                )
            )
    for o, p in live:
        if p.role is not OrderRole.ENTRY:
            protects = o.side if o.order_type in (OrderType.STOP_MARKET, OrderType.STOP_LIMIT) else None
            actions.append(CancelOrder(o.order_id, o.instrument, f"{reason}: {p.role.value} order of trade {p.trade_id}",
                                       p.trade_id, protects))
    return keep_last_stops(actions, snapshot, ours, instruments)
