"""Properties of reconciliation over random journal/exchange states (hypothesis).

- idempotence: applying a plan and planning again yields nothing (also for the kill switch);
- determinism: the order in which the exchange lists things does not change the plan;
- after a plan: every trade of ours with a position has exactly one stop of the right size, every position of ours
  (the journal or our labels say so) has a stop on its exit side, no bracket of ours outlives its position (the
  last stop of a position the exchange holds is never cancelled, whatever the journal thinks), no entry of ours is
  left open, nothing foreign was touched, no fill applied twice -- also when the exchange reports fills the journal
  never saw, fills twice, fills under ids the journal holds for other fills (reused ids), and orders of unknown trades.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from tradebaas.engine.core.labels import make_label, parse_label
from tradebaas.engine.core.reconcile import (
    ApplyFill,
    CancelOrder,
    ClosePosition,
    JournalView,
    StrategyView,
    apply,
    fill_signature,
    plan,
    project_fills,
)
from tradebaas.engine.core.risk import plan_kill
from tradebaas.engine.core.tradebook import (
    amount_epsilon,
    apply_fill,
    mark_closing,
    mark_failed,
    new_trade,
    with_order,
)
from tradebaas.instruments import DEFAULT_INSTRUMENTS

INSTRUMENTS = DEFAULT_INSTRUMENTS
NAMES = sorted(INSTRUMENTS)
ROLES = list(OrderRole)
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fill(fid, inst, side, lots, price, ts, label):
    i = INSTRUMENTS[inst]
    return Fill(fid, f"o-{fid}", inst, side, lots * i.min_trade_amount, float(price), lots * 0.01,
                i.settlement_currency, ts, label=label)


@st.composite
def worlds(draw):
    """A random (journal view, exchange snapshot): consistent, half-consistent or plain wrong."""
    ids = itertools.count()
    strategies = []
    for k in range(draw(st.integers(1, 3))):
        strategies.append(StrategyView(
            f"s{k}", draw(st.sampled_from(NAMES)),
            draw(st.sampled_from([StrategyState.RUNNING, StrategyState.STOPPED])),
            draw(st.sampled_from(list(StrategyState))),
            sl_pct=draw(st.sampled_from([None, 0.0, 0.5, 1.0])), tp_pct=draw(st.sampled_from([None, 0.65])),
            uses_brackets=draw(st.integers(0, 4)) > 0,
        ))
    trades, orders, fills = [], [], []
    journaled_fills = {}
    for n in range(draw(st.integers(0, 4))):
        s = draw(st.sampled_from(strategies))
        inst = s.instrument if draw(st.booleans()) else draw(st.sampled_from(NAMES))
        direction = draw(st.sampled_from(list(Direction)))
        tid = f"t{n}"
        t = new_trade(tid, s.strategy_id, INSTRUMENTS[inst], direction, 0.0,
                      sl_pct=draw(st.sampled_from([None, 0.5])), tp_pct=draw(st.sampled_from([None, 0.65])))
        for journaled in (True, False):
            for _ in range(draw(st.integers(0, 3))):
                role = draw(st.sampled_from(ROLES))
                side = direction.entry_side if role is OrderRole.ENTRY else direction.exit_side
                if draw(st.integers(0, 9)) == 0:
                    side = side.opposite  # a wrong-side fill now and then
                f = _fill(f"f{next(ids)}", inst, side, draw(st.integers(1, 3)), draw(st.integers(40_000, 60_000)),
                          draw(st.integers(0, 5_000)), make_label(s.strategy_id, tid, role))
                if journaled:
                    try:
                        t = apply_fill(t, f, INSTRUMENTS[inst], role)
                    except ValueError:
                        continue
                    journaled_fills[f.trade_id] = f
                    if draw(st.booleans()):
                        fills.append(f)  # re-reported by the exchange
                else:
                    fills.append(f)
        if draw(st.integers(0, 4)) == 0:
            t = mark_closing(t, "exit")
        if draw(st.integers(0, 4)) == 0:
            t = mark_failed(t, "x")
        for role in ROLES:
            for _ in range(draw(st.integers(0, 2))):
                oid = f"o{next(ids)}"
                o_inst = inst if draw(st.integers(0, 5)) else draw(st.sampled_from(NAMES))
                side = direction.entry_side if role is OrderRole.ENTRY else direction.exit_side
                price = float(draw(st.integers(40_000, 60_000)))
                orders.append(Order(
                    oid, o_inst, side, OrderType.STOP_MARKET if role is OrderRole.STOP_LOSS else OrderType.LIMIT,
                    draw(st.integers(1, 4)) * INSTRUMENTS[o_inst].min_trade_amount, 0.0,
                    draw(st.sampled_from([OrderState.OPEN, OrderState.UNTRIGGERED, OrderState.CANCELLED])),
                    label=make_label(s.strategy_id, tid, role), price=price, trigger_price=price,
                ))
                if draw(st.booleans()):
                    t = with_order(t, role, oid, price)
        trades.append(t)
    # Orphans of ours, strays, and foreign things.
    for _ in range(draw(st.integers(0, 2))):
        s = draw(st.sampled_from(strategies))
        role = draw(st.sampled_from(ROLES))
        orders.append(Order(f"o{next(ids)}", s.instrument, Side.SELL, OrderType.LIMIT, 1.0 * INSTRUMENTS[s.instrument].min_trade_amount,
                            0.0, OrderState.OPEN, label=make_label(s.strategy_id, "ghost", role), price=1.0))
    for _ in range(draw(st.integers(0, 2))):
        s = draw(st.sampled_from(strategies))
        role = draw(st.sampled_from(ROLES))
        fills.append(_fill(f"f{next(ids)}", s.instrument, draw(st.sampled_from(list(Side))), draw(st.integers(1, 3)),
                           50_000, draw(st.integers(0, 5_000)), make_label(s.strategy_id, f"stray{next(ids)}", role)))
    for _ in range(draw(st.integers(0, 2))):
        inst = draw(st.sampled_from(NAMES))
        label = draw(st.sampled_from(["", "manual", make_label("foreign", "x", OrderRole.STOP_LOSS)]))
        orders.append(Order(f"o{next(ids)}", inst, Side.BUY, OrderType.LIMIT, INSTRUMENTS[inst].min_trade_amount, 0.0,
                            OrderState.OPEN, label=label, price=1.0))
        fills.append(_fill(f"f{next(ids)}", inst, Side.BUY, 1, 50_000, 10, label))
    # Disagreements: a notification reported twice, and ids the exchange reused for other fills after a restart.
    signatures = {}
    for t in trades:
        for fid in sorted(t.applied_fill_ids):
            if draw(st.integers(0, 5)) == 0:
                sid, inst = t.strategy_id, t.instrument
                reused = _fill(fid, inst, draw(st.sampled_from(list(Side))), draw(st.integers(1, 3)), 55_555, 6_000,
                               make_label(sid, draw(st.sampled_from([t.trade_id, "fresh"])), OrderRole.ENTRY))
                fills.append(reused)
                signatures[fid] = fill_signature(journaled_fills[fid])
    if fills and draw(st.booleans()):
        fills.append(draw(st.sampled_from(fills)))
    view = JournalView(strategies=tuple(strategies), trades=tuple(trades), fill_signatures=signatures)
    # Positions: what our trades explain (after the new fills), sometimes off by a few lots.
    projected = project_fills(view, fills, INSTRUMENTS).trades
    positions = []
    for inst in NAMES:
        size = sum(t.signed_open_amount for t in projected.values() if t.instrument == inst)
        if draw(st.integers(0, 3)) == 0:
            size += draw(st.integers(-3, 3)) * INSTRUMENTS[inst].min_trade_amount
        if size or draw(st.booleans()):
            positions.append(PositionSnapshot(inst, size, 50_000.0, mark_price=float(draw(st.sampled_from([0, 45_000, 55_000])))))
    snapshot = ExchangeSnapshot(open_orders=tuple(orders), positions=tuple(positions), fills=tuple(fills), ts_ms=9_000)
    return view, snapshot


@PROPS
@given(worlds())
def test_reconcile_twice_changes_nothing(world):
    view, snapshot = world
    v2, s2 = apply(view, snapshot, plan(view, snapshot))
    assert plan(v2, s2) == []


@PROPS
@given(worlds(), st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_listing_order(world, rnd):
    view, snapshot = world
    shuffled = ExchangeSnapshot(
        open_orders=tuple(rnd.sample(snapshot.open_orders, len(snapshot.open_orders))),
        positions=tuple(rnd.sample(snapshot.positions, len(snapshot.positions))),
        fills=tuple(rnd.sample(snapshot.fills, len(snapshot.fills))),
        ts_ms=snapshot.ts_ms,
    )
    view2 = JournalView(view.strategies, tuple(rnd.sample(view.trades, len(view.trades))),
                        fill_signatures=view.fill_signatures)
    assert plan(view2, shuffled) == plan(view, snapshot)


def _ours_on(view, snapshot, instrument, sign):
    """Does the journal or do our labels say that a position on ``instrument`` (long: sign > 0) is ours?"""
    ours = {s.strategy_id for s in view.strategies}
    projected = project_fills(view, snapshot.fills, INSTRUMENTS).trades
    eps = amount_epsilon(INSTRUMENTS[instrument])
    if any(t.instrument == instrument and not t.state.is_terminal and t.open_amount > eps and t.direction.sign == sign
           for t in projected.values()):
        return True
    labelled = [*snapshot.open_orders, *snapshot.fills]
    return any(x.instrument == instrument and (p := parse_label(x.label)) is not None and p.strategy_id in ours
               and (not isinstance(x, Order) or x.state.is_live) for x in labelled)


@PROPS
@given(worlds())
def test_after_reconciliation_every_position_of_ours_has_a_stop_and_no_bracket_outlives_its_position(world):
    view, snapshot = world
    actions = plan(view, snapshot)
    v2, s2 = apply(view, snapshot, actions)
    ours = {s.strategy_id for s in view.strategies}
    brackets = {s.strategy_id: s.uses_brackets for s in view.strategies}
    net = {p.instrument: p.size for p in s2.positions}
    live = [(o, parse_label(o.label)) for o in s2.open_orders if o.state.is_live]
    live_ours = [(o, p) for o, p in live if p is not None and p.strategy_id in ours]
    assert not [o for o, p in live_ours if p.role is OrderRole.ENTRY]
    trades = {t.trade_id: t for t in v2.trades}
    for o, p in live_ours:
        t = trades.get(p.trade_id)
        eps = amount_epsilon(DEFAULT_INSTRUMENTS[o.instrument])
        guards_a_position = o.order_type is OrderType.STOP_MARKET and net.get(o.instrument, 0.0) * -o.side.sign > eps
        if t is None or t.state.is_terminal:
            assert guards_a_position, o  # only the last stop of a position the exchange holds may stay
            continue
        bracket_of_its_position = o.instrument == t.instrument and t.open_amount > eps and net.get(
            t.instrument, 0.0) * t.direction.sign > eps
        assert bracket_of_its_position or guards_a_position, o
    for t in v2.trades:
        eps = amount_epsilon(DEFAULT_INSTRUMENTS[t.instrument])
        has_position = not t.state.is_terminal and t.open_amount > eps and net.get(t.instrument, 0.0) * t.direction.sign > eps
        if has_position and brackets[t.strategy_id]:
            stops = [o for o, p in live_ours if p.trade_id == t.trade_id and p.role is OrderRole.STOP_LOSS
                     and o.instrument == t.instrument]
            assert len(stops) == 1
            assert abs(stops[0].amount - stops[0].filled_amount - t.open_amount) <= eps
            assert stops[0].order_id == t.stop_order_id
    # Protection first: every position of ours has a stop of ours on its exit side (strategies without exchange
    # brackets only once their position is not what the journal explains).
    for name, size in net.items():
        eps = amount_epsilon(INSTRUMENTS[name])
        sign = 1 if size > 0 else -1
        if abs(size) <= eps or not _ours_on(view, snapshot, name, sign):
            continue
        stops = [o for o, _ in live_ours if o.instrument == name and o.side.sign == -sign
                 and o.order_type is OrderType.STOP_MARKET]
        open_here = [t for t in v2.trades if t.instrument == name and not t.state.is_terminal and t.open_amount > eps
                     and t.direction.sign == sign]
        explained = abs(sum(t.signed_open_amount for t in v2.trades if t.instrument == name) - size) <= eps
        if open_here and explained and not any(brackets[t.strategy_id] for t in open_here):
            continue
        assert stops, f"position {size} on {name} is ours and has no stop"
    # Nothing foreign touched, positions untouched, no fill applied twice or from the journal.
    assert {o.order_id for o in snapshot.open_orders if o.state.is_live and (parse_label(o.label) is None or parse_label(o.label).strategy_id not in ours)} <= {o.order_id for o in s2.open_orders}
    assert s2.positions == snapshot.positions
    applied = [a.fill.trade_id for a in actions if isinstance(a, ApplyFill)]
    assert len(applied) == len(set(applied))
    known = set(view.journaled_fill_ids).union(*(t.applied_fill_ids for t in view.trades))
    assert not set(applied) & known
    assert not [a for a in actions if isinstance(a, ClosePosition)]


@PROPS
@given(worlds(), st.booleans())
def test_kill_twice_changes_nothing_and_flatten_leaves_no_open_trade_of_ours_and_no_position_naked(world, flatten):
    view, snapshot = world
    v2, s2 = apply(view, snapshot, plan_kill(view, snapshot, flatten))
    assert plan_kill(v2, s2, flatten) == []
    assert all(s.desired is StrategyState.STOPPED for s in v2.strategies)
    ours = {s.strategy_id for s in view.strategies}
    left = [o for o in s2.open_orders if o.state.is_live and (p := parse_label(o.label)) and p.strategy_id in ours]
    assert not [o for o in left if parse_label(o.label).role is OrderRole.ENTRY]
    if flatten:
        # Brackets of closed trades are gone, but for the last stop of a position the exchange still holds (a part
        # the kill could not close as ours): protection first, even during a kill.
        net2 = {p.instrument: p.size for p in s2.positions}
        assert not [o for o in left if parse_label(o.label).role in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT)
                    and (t := v2.trade(parse_label(o.label).trade_id)) is not None and not t.state.is_terminal
                    and not (o.order_type is OrderType.STOP_MARKET and net2.get(o.instrument, 0.0) * -o.side.sign > 0)]
        # Reconciling after the kill applies the close fills: no trade of ours keeps a position the exchange has.
        v3, s3 = apply(v2, s2, plan(v2, s2))
        net = {p.instrument: p.size for p in s3.positions}
        for t in v3.trades:
            eps = amount_epsilon(DEFAULT_INSTRUMENTS[t.instrument])
            assert t.state.is_terminal or t.open_amount <= eps or net.get(t.instrument, 0.0) * t.direction.sign <= eps
    else:
        kill_cancels = [a for a in plan_kill(view, snapshot, flatten) if isinstance(a, CancelOrder)]
        assert all(parse_label(next(o for o in snapshot.open_orders if o.order_id == c.order_id).label).role
                   is OrderRole.ENTRY for c in kill_cancels)
