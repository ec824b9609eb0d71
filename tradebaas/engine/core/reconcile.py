"""Crash-only recovery as a pure function: ``plan(journal view, exchange snapshot) -> actions``.

Over 600 lines because the decision table below, the planner that implements it row by row (``plan``) and
the model executor the planner is tested against (``apply``) are one specification, read together.

The engine runs this on every start and every reconnect: it fetches the exchange's open orders, positions and
fills since the last journaled fill (positions and orders first, fills last), builds a ``JournalView`` from the
journal, calls ``plan``, and executes the actions in order, journaling each. ``plan`` does no I/O and reads no
clock, so the same input gives the same actions, and the whole recovery logic is tested with plain function
calls. ``apply`` is the model of a perfect executor (journal *and* exchange side): planning again on its output
yields no actions, which is what "running reconciliation twice changes nothing" means.

Ownership comes from labels only (``tradebaas.engine.core.labels``): an order or fill is *ours* when its label parses
and names a strategy of this journal. Everything else (unlabelled, foreign labels, other engines' strategy ids)
is never cancelled, adopted or closed; it can only make a position *unexplained*.

Decision table (first matching row wins; "position" = the exchange's net position on the trade's instrument,
"open" = the trade's ``entry_filled - exit_filled`` after the fills below are applied):

==========================================================  ============================================================
Situation                                                   Actions
==========================================================  ============================================================
fill of ours, not yet journaled, trade known                ``ApplyFill`` (chronological; a stop that filled while the
                                                            engine was down closes the trade with exchange PnL/fees)
... trade unknown, role entry                               ``RecoverTrade`` then ``ApplyFill`` (the label proves we
                                                            sent it: a crash between sending and journaling)
... trade unknown, role sl/tp/exit; wrong side/instrument   not applied; ``MarkNeedsAttention``
trade not closed before, closed by the fills above          ``CloseTrade(CLOSED)`` (the executor's "trade ended" hook)
trade pending_entry, no entry fill                          cancel its live entry (if any) and ``CloseTrade(FAILED)``
live entry order of ours (any trade)                        ``CancelOrder`` -- the signal it served is stale after a
                                                            crash or reconnect; a partial fill stays as an open trade
trade open, position on the trade's side, no live stop      ``PlaceStop`` (journaled stop price, else from the average
                                                            entry and ``sl_pct``); none computable -> needs_attention
... live stop of the wrong size                             ``PlaceStop`` for the open amount, then cancel the old one
... several live stops                                      keep the journaled one (else lowest id), cancel the rest
... live stop whose id the journal lacks                    ``RecordOrder`` (crash between placing and journaling)
... take-profit: same rules (only if a TP price is known)   ``PlaceTakeProfit`` / ``CancelOrder`` / ``RecordOrder``
bracket or exit order of ours whose trade is closed,        ``CancelOrder`` ("no bracket outlives its position") --
failed, unknown, flat, or on the other side of the position  except the last stop of a position the exchange holds
net position != sum of our open trades on that instrument   ``MarkNeedsAttention`` for every strategy on the instrument
(foreign position, size mismatch, closed outside tradebaas)  (never adopted, never closed); stops are still placed
a fill whose id the journal holds with other content        not applied; ``MarkNeedsAttention`` (a reused id is an
                                                            anomaly, never silently taken for the old fill)
position of ours (journal or labels say so) without any     ``ProtectPosition``: a reduce-only stop from the strategy's
live stop of ours on its exit side                          distance (else ``DEFAULT_PROTECTIVE_STOP_PCT``) below/above
                                                            both the average and the mark price; needs_attention
order of ours in a state or of a type this version does     counts as live and covers its role (a stop so labelled
not know (``Order.is_uncertain``), on an instrument where   counts as the stop): never cancelled, never replaced, no
the exchange holds a position                               duplicate placed beside it; ``MarkNeedsAttention`` (the
                                                            engine looks twice first, like for a size mismatch). With
                                                            no position there it is handled like a live order.
==========================================================  ============================================================

Protection first: whatever the plan concludes, it never cancels the last stop of a position that is open on the
exchange (``keep_last_stops``), and every position of ours ends the plan with a stop on its exit side, even while
its strategy waits in ``needs_attention``. A strategy that declares it uses no exchange brackets
(``StrategyView.uses_brackets``) gets no stop while its position is explained; once its position is not explained,
it is protected like any other. A position nobody here opened (no open trade in the journal, no order or fill with
our labels on its instrument) is never touched.

Action order: fills, closes, order records, stops/takes (protection first), cancels (after the replacement was
placed, so a position is never without a stop; a cancel carries ``protects`` so the executor skips it when the
replacement on that instrument failed), needs_attention (one message per strategy, so re-planning after marking is
a no-op).

Known limit: Deribit nets positions per instrument. Strategies trading opposite directions on one instrument net
out on the exchange; a reduce-only stop then cannot protect the smaller side. Run one direction (ideally one
strategy) per instrument.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from tradebaas.domain import (
    Direction,
    ExchangeSnapshot,
    Fill,
    Liquidity,
    Order,
    OrderRole,
    OrderState,
    OrderType,
    PositionSnapshot,
    Side,
    StrategyState,
)
from tradebaas.engine.core.labels import ParsedLabel, make_label, parse_label
from tradebaas.engine.core.tradebook import (
    Trade,
    TradeState,
    amount_epsilon,
    apply_fill,
    fill_problem,
    mark_closing,
    mark_failed,
    new_trade,
    order_id_for,
    with_order,
)
from tradebaas.fillmodel import bracket_prices
from tradebaas.instruments import DEFAULT_INSTRUMENTS, Instrument

_DEFAULT_EPS = 1e-9
_CHECK_AND_RESTART = "check it on the exchange, then `tradebaas strategy resume <id>`"
_MARK_CLOSED = ("if it was closed by hand, record that with `tradebaas trades --mark-closed <trade> --price <exit>`, "
                "then `tradebaas strategy resume <id>`")

# --------------------------------------------------------------------------------------------- the journal view


@dataclass(slots=True, frozen=True)
class StrategyView:
    """A strategy as the journal knows it. ``desired`` is what the user asked for (running/stopped),
    ``state`` what it is; ``sl_pct``/``tp_pct`` (percent) are its config's bracket distances, used only for a
    trade recovered from labels alone."""

    strategy_id: str
    instrument: str
    desired: StrategyState = StrategyState.STOPPED
    state: StrategyState = StrategyState.STOPPED
    state_reason: str = ""
    sl_pct: float | None = None
    tp_pct: float | None = None
    uses_brackets: bool = True
    #: Said first whenever the strategy needs attention (an orphan found on the exchange: how to fix it).
    note: str = ""


#: What identifies a fill beyond its id: (order id, label, instrument, side, amount, price). A fill reported with a
#: known id but another signature is an id the exchange reused: an anomaly, never the fill the journal holds.
FillSignature = tuple[str, str, str, str, float, float]


def fill_signature(f: Fill) -> FillSignature:
    return (f.order_id, f.label, f.instrument, f.side.value, float(f.amount), float(f.price))


#: Distance (percent) of a protective stop when neither the trade nor its strategy knows one: wide enough not to
#: be hit by a minute's noise on BTC, close enough to cap a loss while a person looks.
DEFAULT_PROTECTIVE_STOP_PCT = 2.0


@dataclass(slots=True, frozen=True)
class JournalView:
    """What the journal knows that reconciliation needs.

    ``trades``: every trade that is not closed/failed (pending_entry, open, closing), plus any recently ended ones
    the journal cares to include (harmless). ``journaled_fill_ids``: exchange fill ids the journal already holds,
    at least those at or after the snapshot's fill query start, so a fill reported again is never applied twice
    even if its trade is no longer in ``trades``. ``last_fill_ts_ms``: where the exchange's fill query starts.
    """

    strategies: tuple[StrategyView, ...] = ()
    trades: tuple[Trade, ...] = ()
    journaled_fill_ids: frozenset[str] = frozenset()
    last_fill_ts_ms: int = 0
    #: Signatures of journaled fills (at least those whose ids the snapshot reports), to recognise a reused id.
    fill_signatures: Mapping[str, FillSignature] = field(default_factory=dict)

    def strategy(self, strategy_id: str) -> StrategyView | None:
        return next((s for s in self.strategies if s.strategy_id == strategy_id), None)

    def trade(self, trade_id: str) -> Trade | None:
        return next((t for t in self.trades if t.trade_id == trade_id), None)


# --------------------------------------------------------------------------------------------------- actions


@dataclass(slots=True, frozen=True)
class RecoverTrade:
    """Journal a trade known only from the label of its entry fill (crash between sending and journaling)."""

    trade_id: str
    strategy_id: str
    instrument: str
    direction: Direction
    sl_pct: float | None = None
    tp_pct: float | None = None


@dataclass(slots=True, frozen=True)
class ApplyFill:
    """Journal ``fill`` and apply it to the trade (``tradebook.apply_fill``), in one transaction."""

    fill: Fill
    trade_id: str
    role: OrderRole


@dataclass(slots=True, frozen=True)
class CloseTrade:
    """The trade ended: ``CLOSED`` (its exit fills were applied just before) or ``FAILED`` (entry never filled).
    Executor: persist the state, run risk ``on_close`` for CLOSED, push the trade event."""

    trade_id: str
    state: TradeState
    reason: str


@dataclass(slots=True, frozen=True)
class RecordOrder:
    """The exchange has a live order for ``role`` of the trade whose id the journal lacks: record it."""

    trade_id: str
    role: OrderRole
    order_id: str
    price: float | None = None


@dataclass(slots=True, frozen=True)
class PlaceStop:
    """Place a reduce-only ``stop_market`` (trigger ``mark_price``) for the trade's open amount.

    If the exchange refuses it because the market is already beyond ``trigger_price``, the executor must close
    the trade at market (reduce-only) instead: a position never stays without a stop.
    """

    trade_id: str
    strategy_id: str
    instrument: str
    side: Side
    amount: float
    trigger_price: float
    label: str


@dataclass(slots=True, frozen=True)
class PlaceTakeProfit:
    """Place a reduce-only ``limit`` at ``price`` for the trade's open amount."""

    trade_id: str
    strategy_id: str
    instrument: str
    side: Side
    amount: float
    price: float
    label: str


@dataclass(slots=True, frozen=True)
class ProtectPosition:
    """Place a reduce-only ``stop_market`` (trigger ``mark_price``) for a position of ours that has no stop and no
    journal trade to carry one (an anomaly: the strategy also goes to ``needs_attention``). ``trigger_price`` is
    beyond both the average and the mark price, so the exchange accepts it whatever the market did."""

    strategy_id: str
    instrument: str
    side: Side
    amount: float
    trigger_price: float
    label: str
    reason: str


@dataclass(slots=True, frozen=True)
class CancelOrder:
    """Cancel one order by id (never by label: a replacement stop shares the label). Not found = done.

    ``protects``: the side this order would trade if it is a stop of ours; the executor skips the cancel when a
    stop placement (or close) on the same instrument failed earlier in the same run, so a failed replacement never
    leaves a position without its old stop."""

    order_id: str
    instrument: str
    reason: str
    trade_id: str = ""
    protects: Side | None = None


@dataclass(slots=True, frozen=True)
class ClosePosition:
    """Close the trade's open amount with a reduce-only market order labelled ``label`` (role exit)."""

    trade_id: str
    strategy_id: str
    instrument: str
    side: Side
    amount: float
    label: str
    reason: str


@dataclass(slots=True, frozen=True)
class MarkNeedsAttention:
    """Stop the strategy in ``needs_attention`` with ``message`` (its state_reason); a person must look."""

    strategy_id: str
    message: str


@dataclass(slots=True, frozen=True)
class StopStrategy:
    """Set the strategy's desired state to stopped and stop it (kill switch)."""

    strategy_id: str
    reason: str


Action = (
    RecoverTrade
    | ApplyFill
    | CloseTrade
    | RecordOrder
    | PlaceStop
    | PlaceTakeProfit
    | ProtectPosition
    | CancelOrder
    | ClosePosition
    | MarkNeedsAttention
    | StopStrategy
)

# ------------------------------------------------------------------------------------------------- projection


@dataclass(slots=True)
class _Projection:
    """The journal's trades after the snapshot's new fills, and what could not be applied (per strategy)."""

    trades: dict[str, Trade]
    actions: list[Action]
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: instrument -> strategies of ours whose labelled fills the snapshot shows there (applied or not)
    labelled: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


def _fill_key(f: Fill) -> tuple[int, int, str]:
    return (f.ts_ms, f.trade_seq, f.trade_id)


def project_fills(view: JournalView, fills: Iterable[Fill], instruments: Mapping[str, Instrument]) -> _Projection:
    """Apply the new fills of ours (chronologically) to the view's trades; the first half of ``plan``."""
    strategies = {s.strategy_id: s for s in view.strategies}
    trades = {t.trade_id: t for t in view.trades}
    known = set(view.journaled_fill_ids)
    for t in view.trades:
        known |= t.applied_fill_ids
    proj = _Projection(trades=trades, actions=[])
    signatures = dict(view.fill_signatures)
    for f in sorted(fills, key=_fill_key):
        parsed = parse_label(f.label)
        ours = parsed is not None and parsed.strategy_id in strategies
        if ours:
            proj.labelled[f.instrument].add(parsed.strategy_id)  # type: ignore[union-attr]
        if f.trade_id in known:
            seen = signatures.get(f.trade_id)
            if ours and seen is not None and seen != fill_signature(f):
                proj.problems[parsed.strategy_id].append(  # type: ignore[union-attr]
                    f"the exchange reports fill {f.trade_id} ({f.side.value} {f.amount:g} {f.instrument} @ {f.price:g}) "
                    "under an id the journal holds for another fill (an id reused after an exchange restart?); "
                    "not applied")
            continue
        known.add(f.trade_id)
        signatures[f.trade_id] = fill_signature(f)
        if not ours:
            continue
        assert parsed is not None
        sid, tid, role = parsed.strategy_id, parsed.trade_id, parsed.role
        inst = instruments.get(f.instrument)
        if inst is None:
            proj.problems[sid].append(f"fill {f.trade_id} is on {f.instrument}, which tradebaas has no specification for; not applied")
            continue
        trade = trades.get(tid)
        if trade is None:
            if role is not OrderRole.ENTRY:
                proj.problems[sid].append(
                    f"fill {f.trade_id} ({role.value}, {f.side.value} {f.amount:g} {f.instrument}) belongs to trade {tid}, "
                    "which the journal does not know; not applied"
                )
                continue
            strat = strategies[sid]
            direction = Direction.LONG if f.side is Side.BUY else Direction.SHORT
            trade = new_trade(tid, sid, inst, direction, 0.0, sl_pct=strat.sl_pct, tp_pct=strat.tp_pct)
            proj.actions.append(RecoverTrade(tid, sid, inst.name, direction, strat.sl_pct, strat.tp_pct))
        elif trade.strategy_id != sid:
            proj.problems[sid].append(f"fill {f.trade_id} is labelled for trade {tid}, which belongs to {trade.strategy_id}; not applied")
            continue
        problem = fill_problem(trade, f, role)
        if problem:
            proj.problems[sid].append(problem + "; not applied")
            continue
        trades[tid] = apply_fill(trade, f, inst, role)
        proj.actions.append(ApplyFill(f, tid, role))
    return proj


def _net_positions(positions: Iterable[PositionSnapshot]) -> dict[str, float]:
    net: dict[str, float] = defaultdict(float)
    for p in positions:
        net[p.instrument] += p.size
    return net


def _eps(instruments: Mapping[str, Instrument], name: str) -> float:
    inst = instruments.get(name)
    return amount_epsilon(inst) if inst else _DEFAULT_EPS


def _describe(instruments: Mapping[str, Instrument], name: str, signed: float) -> str:
    inst = instruments.get(name)
    unit = (inst.quote_currency if inst.is_inverse else inst.base_currency) if inst else "units"
    side = "long" if signed > 0 else "short"
    return f"{side} {abs(signed):g} {unit}"


def _ours(orders: Iterable[Order], strategies: set[str]) -> list[tuple[Order, ParsedLabel]]:
    out = []
    for o in sorted(orders, key=lambda o: o.order_id):
        parsed = parse_label(o.label)
        if o.state.is_live and parsed is not None and parsed.strategy_id in strategies:
            out.append((o, parsed))
    return out


def _remaining(order: Order) -> float:
    return max(0.0, order.amount - order.filled_amount)


def _bracket_price(trade: Trade, inst: Instrument, role: OrderRole) -> float | None:
    known = trade.stop_price if role is OrderRole.STOP_LOSS else trade.take_price
    if known is not None:
        return known
    pct = trade.sl_pct if role is OrderRole.STOP_LOSS else trade.tp_pct
    if pct is None or trade.entry_price <= 0:
        return None
    sl, tp = bracket_prices(inst, trade.direction, trade.entry_price, trade.sl_pct or 0.0, trade.tp_pct or 0.0)
    return sl if role is OrderRole.STOP_LOSS else tp


# ------------------------------------------------------------------------------------------------------- plan


def _is_stop(order: Order) -> bool:
    """A stop order; one of a type this version does not know is what its label says it is (a stop of ours)."""
    if order.order_type is OrderType.UNKNOWN:
        parsed = parse_label(order.label)
        return parsed is not None and parsed.role is OrderRole.STOP_LOSS
    return order.order_type in (OrderType.STOP_MARKET, OrderType.STOP_LIMIT)


def _held_uncertain(live: list[tuple[Order, ParsedLabel]], net: Mapping[str, float],
                    instruments: Mapping[str, Instrument], problems: dict[str, list[str]]) -> set[str]:
    """Ids of our orders in an unknown state or of an unknown type on an instrument where the exchange holds a
    position: they may still trade, so the plan neither cancels nor replaces them, and tells their strategy."""
    held: set[str] = set()
    for o, p in live:
        if not o.is_uncertain or abs(net.get(o.instrument, 0.0)) <= _eps(instruments, o.instrument):
            continue
        held.add(o.order_id)
        what = ", ".join(x for x in (f"state {o.raw_state!r}" if o.state is OrderState.UNKNOWN else "",
                                     f"type {o.raw_type!r}" if o.order_type is OrderType.UNKNOWN else "") if x)
        problems[p.strategy_id].append(
            f"order {o.order_id} ({p.role.value} of trade {p.trade_id} on {o.instrument}) has {what}, which this "
            f"version of tradebaas does not know; counted as possibly live, neither cancelled nor replaced — "
            f"{_CHECK_AND_RESTART}")
    return held


def _stop_price(direction_sign: int, reference: float, pct: float, inst: Instrument | None) -> float:
    price = reference * (1 - direction_sign * pct / 100.0)
    return inst.round_price(price) if inst is not None else price


def plan(
    view: JournalView, snapshot: ExchangeSnapshot, instruments: Mapping[str, Instrument] | None = None
) -> list[Action]:
    """The actions that make the journal and the exchange agree (see the module's decision table). Pure."""
    instruments = DEFAULT_INSTRUMENTS if instruments is None else instruments
    strategy_ids = {s.strategy_id for s in view.strategies}
    strategies = {s.strategy_id: s for s in view.strategies}
    original = {t.trade_id: t for t in view.trades}
    proj = project_fills(view, snapshot.fills, instruments)
    trades, problems = proj.trades, proj.problems
    fill_actions: list[Action] = list(proj.actions)
    closes: list[Action] = []
    records: list[Action] = []
    places: list[Action] = []
    cancels: dict[str, CancelOrder] = {}

    net = _net_positions(snapshot.positions)
    live = _ours(snapshot.open_orders, strategy_ids)
    held = _held_uncertain(live, net, instruments, problems)

    def cancel(order: Order, reason: str, trade_id: str) -> None:
        if order.order_id in held:  # possibly live: never cancelled (nor replaced) blindly
            return
        protects = order.side if _is_stop(order) else None
        cancels.setdefault(order.order_id, CancelOrder(order.order_id, order.instrument, reason, trade_id, protects))

    for tid in sorted(trades):
        t = trades[tid]
        before = original.get(tid)
        if t.state is TradeState.CLOSED and (before is None or before.state is not TradeState.CLOSED):
            closes.append(CloseTrade(tid, TradeState.CLOSED, t.exit_reason or "exit"))

    by_trade: dict[str, list[tuple[Order, ParsedLabel]]] = defaultdict(list)
    for o, p in live:
        by_trade[p.trade_id].append((o, p))

    # Stale entries, and pending trades whose entry never filled.
    for o, p in live:
        if p.role is OrderRole.ENTRY:
            cancel(o, f"entry order of trade {p.trade_id} still open at reconciliation: the signal it served is stale", p.trade_id)
    for tid in sorted(trades):
        t = trades[tid]
        if t.state is TradeState.PENDING_ENTRY:
            trades[tid] = mark_failed(t, "entry never filled")
            closes.append(CloseTrade(tid, TradeState.FAILED, "entry order not on the exchange (or cancelled) and never filled"))

    for tid in sorted(trades):
        t = trades[tid]
        orders = by_trade.pop(tid, [])
        if t.state.is_terminal or t.strategy_id not in strategy_ids:
            for o, p in orders:
                if p.role is not OrderRole.ENTRY:
                    cancel(o, f"{p.role.value} order of trade {tid}, which is {t.state.value}", tid)
            continue
        inst = instruments.get(t.instrument)
        if inst is None:
            problems[t.strategy_id].append(f"trade {tid} is on {t.instrument}, which tradebaas has no specification for")
            continue
        eps = amount_epsilon(inst)
        open_amount = t.open_amount
        has_position = open_amount > eps and net.get(t.instrument, 0.0) * t.direction.sign > eps
        if not has_position:
            for o, p in orders:
                if p.role is not OrderRole.ENTRY:
                    cancel(o, f"{p.role.value} order of trade {tid}, which has no position on the exchange", tid)
            continue
        for o, p in orders:
            if p.role is OrderRole.EXIT and o.instrument != t.instrument:
                cancel(o, f"exit order of trade {tid} is on {o.instrument}, not {t.instrument}", tid)
        strat = strategies[t.strategy_id]
        for role in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT):
            mine = [o for o, p in orders if p.role is role]
            for o in mine:
                if o.instrument != t.instrument:
                    cancel(o, f"{role.value} order of trade {tid} is on {o.instrument}, not {t.instrument}", tid)
            mine = [o for o in mine if o.instrument == t.instrument]
            known_id = order_id_for(t, role)
            # keep: the journaled one, else an uncertain one (never replaced), else one of the right size
            mine.sort(key=lambda o: (o.order_id != known_id, o.order_id not in held,
                                     abs(_remaining(o) - open_amount) > eps, o.order_id))
            keep = mine[0] if mine else None
            for o in mine[1:]:
                cancel(o, f"duplicate {role.value} order of trade {tid} (keeping {keep.order_id})", tid)  # type: ignore[union-attr]
            if keep is not None and keep.order_id in held:
                continue  # possibly live: it covers its role until a person has looked (needs_attention)
            if keep is not None and abs(_remaining(keep) - open_amount) <= eps:
                if keep.order_id != known_id:
                    price = keep.trigger_price if role is OrderRole.STOP_LOSS else keep.price
                    records.append(RecordOrder(tid, role, keep.order_id, price))
                continue
            price = _bracket_price(t, inst, role)
            if price is None and not (role is OrderRole.STOP_LOSS and strat.uses_brackets):
                # no such bracket for this trade (a strategy without exchange brackets, or without a take-profit)
                if keep is not None:
                    cancel(keep, f"{role.value} order of trade {tid} covers {_remaining(keep):g}, the trade has "
                                 f"{open_amount:g} open and no {role.value} price is known to replace it", tid)
                continue
            if keep is not None:
                cancel(keep, f"{role.value} order of trade {tid} covers {_remaining(keep):g}, the trade has {open_amount:g} open (replaced)", tid)
            label = make_label(t.strategy_id, tid, role)
            side = t.direction.exit_side
            if role is OrderRole.STOP_LOSS:
                if price is None:  # e.g. a trade recovered from its entry's label: the strategy's distance
                    pct = strat.sl_pct if strat.sl_pct is not None else DEFAULT_PROTECTIVE_STOP_PCT
                    price = _stop_price(t.direction.sign, t.entry_price, pct, inst)
                places.append(PlaceStop(tid, t.strategy_id, t.instrument, side, open_amount, price, label))
            elif price is not None:
                places.append(PlaceTakeProfit(tid, t.strategy_id, t.instrument, side, open_amount, price, label))

    # Orders of ours whose trade the journal does not have at all.
    for tid in sorted(by_trade):
        for o, p in by_trade[tid]:
            if p.role is not OrderRole.ENTRY:
                cancel(o, f"{p.role.value} order of trade {tid}, which the journal has no open trade for", tid)

    # Is every exchange position explained by the sum of our open trades on its instrument?
    expected: dict[str, float] = defaultdict(float)
    owners: dict[str, set[str]] = defaultdict(set)
    for t in trades.values():
        if not t.state.is_terminal and t.open_amount > 0:
            expected[t.instrument] += t.signed_open_amount
            owners[t.instrument].add(t.strategy_id)
    for s in view.strategies:
        owners[s.instrument].add(s.strategy_id)
    unexplained: set[str] = set()
    flagged: set[tuple[str, str]] = set()  # (strategy, instrument) already told about the instrument's position
    for name in sorted(set(net) | set(expected)):
        have, want = net.get(name, 0.0), expected.get(name, 0.0)
        if abs(have - want) <= _eps(instruments, name) or not (owners[name] & strategy_ids):
            continue
        unexplained.add(name)
        tids = sorted(t.trade_id for t in trades.values() if t.instrument == name and not t.state.is_terminal and t.open_amount > 0)
        if abs(want) <= _eps(instruments, name):
            msg = (
                f"exchange shows a {_describe(instruments, name, have)} position on {name} that no tradebaas trade "
                f"explains; not adopting or closing it — {_CHECK_AND_RESTART}"
            )
        elif abs(have) <= _eps(instruments, name):
            msg = (
                f"exchange shows no position on {name}, but tradebaas trades {', '.join(tids)} hold "
                f"{_describe(instruments, name, want)} (closed outside tradebaas?); their orders are cancelled, "
                f"the trades stay open in the journal — {_MARK_CLOSED}"
            )
        else:
            msg = (
                f"exchange shows a {_describe(instruments, name, have)} position on {name}, but tradebaas trades "
                f"{', '.join(tids)} account for {_describe(instruments, name, want)}; not adopting or closing the "
                f"difference — {_CHECK_AND_RESTART}"
            )
        for sid in sorted(owners[name] & strategy_ids):
            problems[sid].append(msg)
            flagged.add((sid, name))

    protect = _protect_positions(view, snapshot, trades, live, proj.labelled, net, expected, places, cancels,
                                 unexplained, flagged, instruments)
    for sid, msg in protect.problems:
        problems[sid].append(msg)

    attention: list[Action] = []
    for sid in sorted(problems):
        s = strategies[sid]
        message = "; ".join(dict.fromkeys([s.note] if s.note else []) | dict.fromkeys(problems[sid]))
        if not (s.state is StrategyState.NEEDS_ATTENTION and s.state_reason == message):
            attention.append(MarkNeedsAttention(sid, message))
    planned = [*fill_actions, *closes, *records, *places, *protect.actions, *cancels.values(), *attention]
    return keep_last_stops(planned, snapshot, strategy_ids, instruments)


@dataclass(slots=True)
class _Protection:
    actions: list[Action] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def _protect_positions(
    view: JournalView,
    snapshot: ExchangeSnapshot,
    trades: Mapping[str, Trade],
    live: list[tuple[Order, ParsedLabel]],
    labelled_fills: Mapping[str, set[str]],
    net: Mapping[str, float],
    expected: Mapping[str, float],
    places: list[Action],
    cancels: dict[str, CancelOrder],
    unexplained: set[str],
    flagged: set[tuple[str, str]],
    instruments: Mapping[str, Instrument],
) -> _Protection:
    """Every position of ours ends the plan with a stop of ours on its exit side (protection first).

    "Ours": an open trade of the journal on the instrument, or an order or fill with our labels there. A stop that
    the plan was about to cancel is kept instead of placing a new one; otherwise a ``ProtectPosition`` is placed
    for our share of the position (the whole position when the journal cannot say what our share is: a stop only
    ever reduces it). Strategies without exchange brackets are left alone while their position is explained.
    The strategy is told (needs_attention) unless the plan already told it about that instrument's position.
    """
    out = _Protection()

    def tell(sid: str, why: str) -> None:
        if (sid, name) not in flagged:
            out.problems.append((sid, why))

    strategies = {s.strategy_id: s for s in view.strategies}
    marks = {p.instrument: p for p in snapshot.positions}
    for name in sorted(net):
        have = net[name]
        eps = _eps(instruments, name)
        if abs(have) <= eps:
            continue
        exit_side = Side.SELL if have > 0 else Side.BUY
        sign = 1 if have > 0 else -1
        open_trades = [t for t in trades.values() if t.instrument == name and not t.state.is_terminal
                       and t.open_amount > eps and t.direction.sign == sign]
        owners = {t.strategy_id for t in open_trades} | labelled_fills.get(name, set()) | {
            p.strategy_id for o, p in live if o.instrument == name}
        if not owners:
            continue  # nobody here opened it: never touched
        covered = any(isinstance(a, PlaceStop) and a.instrument == name and a.side is exit_side for a in places) or any(
            o.instrument == name and o.side is exit_side and _is_stop(o) and o.order_id not in cancels for o, _ in live)
        if covered:
            continue
        if open_trades and name not in unexplained and all(
                not strategies[t.strategy_id].uses_brackets and t.sl_pct is None and t.stop_price is None
                for t in open_trades):
            continue  # strategies without exchange brackets, position explained: as they declared
        owner = sorted(owners)[0]
        # The same words whether the stop is placed now or kept later, so planning again changes nothing.
        why = (f"the {_describe(instruments, name, have)} position on {name} is ours (journal or labels) but had no "
               f"stop; a reduce-only stop of ours protects it — {_CHECK_AND_RESTART}")
        kept = sorted((o for o, p in live if o.instrument == name and o.side is exit_side and _is_stop(o)
                       and o.order_id in cancels), key=lambda o: (abs(_remaining(o) - abs(have)), o.order_id))
        if kept:
            del cancels[kept[0].order_id]  # the last stop of a position the exchange holds stays
            tell(parse_label(kept[0].label).strategy_id, why)  # type: ignore[union-attr]
            continue
        pos = marks.get(name)
        # (strategy, trade id, amount, percent): each open trade its own stop (they are all of strategies without
        # exchange brackets here: a bracketed trade with a position got its PlaceStop above); else one for it all
        wanted = [(t.strategy_id, t.trade_id, t.open_amount, t.entry_price, strategies[t.strategy_id].sl_pct)
                  for t in sorted(open_trades, key=lambda t: t.trade_id)] or [
            (owner, "protect-" + "".join(c for c in name.lower() if c.isalnum())[:12], abs(have), 0.0,
             strategies[owner].sl_pct if owner in strategies else None)]
        for sid, tid, amount, entry, strategy_pct in wanted:
            refs = [x for x in (pos.average_price if pos else 0.0, pos.mark_price if pos else 0.0, entry) if x > 0]
            if not refs:
                out.problems.append((sid, f"a {_describe(instruments, name, have)} position of ours on {name} has no "
                                          "stop and no price is known to place one; protect it on the exchange"))
                continue
            pct = strategy_pct if strategy_pct else DEFAULT_PROTECTIVE_STOP_PCT
            price = _stop_price(sign, min(refs) if sign > 0 else max(refs), pct, instruments.get(name))
            out.actions.append(ProtectPosition(sid, name, exit_side, amount, price,
                                               make_label(sid, tid, OrderRole.STOP_LOSS),
                                               f"protective stop at {price:g} ({pct:g}% away) for a position without one"))
            tell(sid, why)
    return out


def keep_last_stops(actions: list[Action], snapshot: ExchangeSnapshot, ours: set[str],
                    instruments: Mapping[str, Instrument] | None = None) -> list[Action]:
    """Drop every ``CancelOrder`` that would leave a position the exchange holds without a stop of ours.

    Whatever a plan concludes (a trade the journal thinks closed, an order whose trade it lost), the last stop on a
    position's exit side stays, unless the same plan places another one there or closes that position. Pure.
    """
    instruments = DEFAULT_INSTRUMENTS if instruments is None else instruments
    net = _net_positions(snapshot.positions)
    for a in actions:
        have = net.get(a.instrument, 0.0) if isinstance(a, ClosePosition) else 0.0
        if isinstance(a, ClosePosition) and have * a.side.sign < 0:  # reduce-only: towards flat, never beyond
            net[a.instrument] = have + a.side.sign * min(a.amount, abs(have))
    cancelled = {a.order_id for a in actions if isinstance(a, CancelOrder)}
    placed = {(a.instrument, a.side) for a in actions if isinstance(a, PlaceStop | ProtectPosition)}
    dropped: set[str] = set()
    for name, have in net.items():
        if abs(have) <= _eps(instruments, name):
            continue
        side = Side.SELL if have > 0 else Side.BUY
        if (name, side) in placed:
            continue
        stops = [o for o, _ in _ours(snapshot.open_orders, ours) if o.instrument == name and o.side is side and _is_stop(o)]
        if stops and all(o.order_id in cancelled for o in stops):
            best = min(stops, key=lambda o: (abs(_remaining(o) - abs(have)), o.order_id))
            dropped.add(best.order_id)
    return [a for a in actions if not (isinstance(a, CancelOrder) and a.order_id in dropped)]


def strategies_to_resume(view: JournalView) -> tuple[str, ...]:
    """Strategies to start after reconciliation: desired running and not waiting for a person."""
    return tuple(
        s.strategy_id
        for s in view.strategies
        if s.desired is StrategyState.RUNNING and s.state is not StrategyState.NEEDS_ATTENTION
    )


# ------------------------------------------------------------------------------- apply (the perfect executor)


def _sim_order_id(orders: Iterable[Order], label: str) -> str:
    taken = {o.order_id for o in orders}
    i = 0
    while f"rec{i}:{label}" in taken:
        i += 1
    return f"rec{i}:{label}"


def _sim_fill_id(fills: Iterable[Fill], label: str) -> str:
    taken = {f.trade_id for f in fills}
    i = 0
    while f"recfill{i}:{label}" in taken:
        i += 1
    return f"recfill{i}:{label}"


def apply(
    view: JournalView,
    snapshot: ExchangeSnapshot,
    actions: Iterable[Action],
    instruments: Mapping[str, Instrument] | None = None,
) -> tuple[JournalView, ExchangeSnapshot]:
    """The journal and the exchange after a perfect executor ran ``actions``. Pure; for tests and dry runs.

    Exchange side: placed orders appear (deterministic ids ``rec<n>:<label>``), cancelled ones vanish, a
    ``ClosePosition`` fills at once at the trade's entry price (reduce-only: capped to the position) and shows up
    in the snapshot's fills, not yet journaled. Journal side: trades, strategies and fill ids as the real
    executor would record them. It is a model of the executor's *intent*: the engine does the same with I/O.
    """
    instruments = DEFAULT_INSTRUMENTS if instruments is None else instruments
    strategies = {s.strategy_id: s for s in view.strategies}
    trades = {t.trade_id: t for t in view.trades}
    journaled = set(view.journaled_fill_ids)
    signatures = dict(view.fill_signatures)
    last_fill = view.last_fill_ts_ms
    orders = list(snapshot.open_orders)
    positions: dict[str, PositionSnapshot] = {}
    for p in snapshot.positions:  # Deribit has one net position per instrument; merge defensively
        prev = positions.get(p.instrument)
        positions[p.instrument] = replace(p, size=prev.size + p.size) if prev else p
    fills = list(snapshot.fills)

    for a in actions:
        if isinstance(a, RecoverTrade):
            if a.trade_id not in trades:
                trades[a.trade_id] = new_trade(
                    a.trade_id, a.strategy_id, instruments[a.instrument], a.direction, sl_pct=a.sl_pct, tp_pct=a.tp_pct
                )
        elif isinstance(a, ApplyFill):
            trades[a.trade_id] = apply_fill(trades[a.trade_id], a.fill, instruments[a.fill.instrument], a.role)
            journaled.add(a.fill.trade_id)
            signatures[a.fill.trade_id] = fill_signature(a.fill)
            last_fill = max(last_fill, a.fill.ts_ms)
        elif isinstance(a, CloseTrade):
            t = trades[a.trade_id]
            if a.state is TradeState.FAILED:
                trades[a.trade_id] = mark_failed(t, a.reason)
            elif not t.state.is_terminal:
                trades[a.trade_id] = replace(t, state=TradeState.CLOSED, exit_reason=t.exit_reason or a.reason)
        elif isinstance(a, RecordOrder):
            trades[a.trade_id] = with_order(trades[a.trade_id], a.role, a.order_id, a.price)
        elif isinstance(a, PlaceStop | PlaceTakeProfit | ProtectPosition):
            stop = isinstance(a, PlaceStop | ProtectPosition)
            oid = _sim_order_id(orders, a.label)
            price = a.trigger_price if isinstance(a, PlaceStop | ProtectPosition) else a.price
            orders.append(
                Order(
                    order_id=oid,
                    instrument=a.instrument,
                    side=a.side,
                    order_type=OrderType.STOP_MARKET if stop else OrderType.LIMIT,
                    amount=a.amount,
                    filled_amount=0.0,
                    state=OrderState.UNTRIGGERED if stop else OrderState.OPEN,
                    label=a.label,
                    price=None if stop else price,
                    trigger_price=price if stop else None,
                    reduce_only=True,
                    ts_ms=snapshot.ts_ms,
                )
            )
            role = OrderRole.STOP_LOSS if stop else OrderRole.TAKE_PROFIT
            tid = a.trade_id if not isinstance(a, ProtectPosition) else parse_label(a.label).trade_id  # type: ignore[union-attr]
            if tid in trades:
                trades[tid] = with_order(trades[tid], role, oid, price)
        elif isinstance(a, CancelOrder):
            orders = [o for o in orders if o.order_id != a.order_id]
            for tid, t in list(trades.items()):
                for role in OrderRole:
                    if order_id_for(t, role) == a.order_id:
                        t = with_order(t, role, "")
                trades[tid] = t
        elif isinstance(a, ClosePosition):
            if a.trade_id in trades:
                trades[a.trade_id] = mark_closing(trades[a.trade_id], a.reason)
            pos = positions.get(a.instrument)
            size = pos.size if pos else 0.0
            amount = min(a.amount, abs(size)) if size * a.side.sign < 0 else 0.0
            if amount > 0 and pos is not None:
                held = trades.get(a.trade_id)
                price = (held.entry_price if held and held.entry_price > 0 else pos.average_price) or 1.0
                positions[a.instrument] = replace(pos, size=size + a.side.sign * amount)
                fills.append(
                    Fill(
                        trade_id=_sim_fill_id(fills, a.label),
                        order_id=_sim_order_id(orders, a.label),
                        instrument=a.instrument,
                        side=a.side,
                        amount=amount,
                        price=price,
                        fee=0.0,
                        fee_currency=instruments[a.instrument].settlement_currency if a.instrument in instruments else "",
                        ts_ms=snapshot.ts_ms,
                        label=a.label,
                        liquidity=Liquidity.TAKER,
                        reduce_only=True,
                        order_type="market",
                    )
                )
        elif isinstance(a, MarkNeedsAttention):
            strategies[a.strategy_id] = replace(
                strategies[a.strategy_id], state=StrategyState.NEEDS_ATTENTION, state_reason=a.message
            )
        elif isinstance(a, StopStrategy):
            s = strategies[a.strategy_id]
            state = s.state if s.state is StrategyState.NEEDS_ATTENTION else StrategyState.STOPPED
            strategies[a.strategy_id] = replace(s, desired=StrategyState.STOPPED, state=state)
        else:  # pragma: no cover - exhaustiveness guard
            raise TypeError(f"unknown action {a!r}")

    new_view = JournalView(
        strategies=tuple(strategies[s.strategy_id] for s in view.strategies),
        trades=tuple(trades[tid] for tid in sorted(trades)),
        journaled_fill_ids=frozenset(journaled),
        last_fill_ts_ms=last_fill,
        fill_signatures=signatures,
    )
    new_snapshot = replace(
        snapshot,
        open_orders=tuple(orders),
        positions=tuple(positions.values()),
        fills=tuple(fills),
    )
    return new_view, new_snapshot
