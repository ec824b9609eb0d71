"""Risk bookkeeping from the Razor spec, pure and persistable, and the kill switch as a plan.

The seed kept cooldowns and daily counters in memory, so every restart reset them; here ``RiskState`` is a
small value the journal stores per strategy (``to_dict``/``from_dict``) and every update is a pure function of
(state, exchange time). Time is exchange time (``ts_ms`` of market data or fills), never the wall clock; the UTC
day of ``maxDailyTrades`` is the exchange's UTC day.

Rules (razor.md "Orders and exits"):
- cooldown: ``cooldownMinutes`` after an entry and after a close, 1 minute after an execution error; a cooldown
  never shortens one already running;
- ``maxDailyTrades`` entries per UTC day; ``maxConcurrentTrades`` open trades per strategy;
- 0 is a valid setting and means what it says: a limit of 0 allows no entry, a cooldown of 0 none.

Kill switch (``plan_kill``): every strategy stops, every entry order of ours is cancelled; with ``flatten`` every
open trade of ours is closed with a reduce-only market order and every bracket/exit order of ours is cancelled
after the closes were sent; without ``flatten`` positions keep their brackets on the exchange (still protected, just not managed).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from tradebaas.domain import ExchangeSnapshot, OrderRole, StrategyState
from tradebaas.engine.labels import make_label, parse_label
from tradebaas.engine.reconcile import (
    Action,
    CancelOrder,
    ClosePosition,
    JournalView,
    StopStrategy,
    project_fills,
)
from tradebaas.engine.tradebook import Trade, amount_epsilon
from tradebaas.instruments import DEFAULT_INSTRUMENTS, Instrument

MINUTE_MS = 60_000
ERROR_COOLDOWN_MS = MINUTE_MS


def utc_day(ts_ms: int) -> str:
    """``YYYY-MM-DD`` of an exchange timestamp, in UTC (the journal's ``daily_counters.utc_day``)."""
    return _dt.datetime.fromtimestamp(ts_ms / 1000, tz=_dt.UTC).strftime("%Y-%m-%d")


@dataclass(slots=True, frozen=True)
class RiskConfig:
    """The risk part of a strategy's config (Razor's names in ``from_config``)."""

    max_concurrent_trades: int = 1
    max_daily_trades: int = 150
    cooldown_minutes: float = 1.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RiskConfig:
        """From a validated strategy config (``maxConcurrentTrades``, ``maxDailyTrades``, ``cooldownMinutes``)."""
        d = cls()
        return cls(
            max_concurrent_trades=int(config.get("maxConcurrentTrades", d.max_concurrent_trades)),
            max_daily_trades=int(config.get("maxDailyTrades", d.max_daily_trades)),
            cooldown_minutes=float(config.get("cooldownMinutes", d.cooldown_minutes)),
        )

    @property
    def cooldown_ms(self) -> int:
        return int(round(self.cooldown_minutes * MINUTE_MS))


@dataclass(slots=True, frozen=True)
class RiskState:
    """One strategy's limits state; the journal persists it so limits survive restarts."""

    day: str = ""  # UTC day that ``trades_today`` counts
    trades_today: int = 0
    cooldown_until_ms: int = 0
    cooldown_reason: str = ""
    last_entry_ts_ms: int = 0
    last_close_ts_ms: int = 0
    last_error_ts_ms: int = 0

    def entries_on(self, day: str) -> int:
        return self.trades_today if self.day == day else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RiskState:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def can_enter(
    state: RiskState, config: RiskConfig, now_ms: int, open_trades: int | Sequence[Trade]
) -> tuple[bool, str]:
    """Whether a new entry is allowed now, and if not, why (for the decision record and the control panel).

    ``open_trades``: the strategy's trades holding (or about to hold) a position, or their count.
    """
    n_open = open_trades if isinstance(open_trades, int) else len(open_trades)
    if now_ms < state.cooldown_until_ms:
        left_s = (state.cooldown_until_ms - now_ms) / 1000
        why = f" after {state.cooldown_reason}" if state.cooldown_reason else ""
        return False, f"cooldown{why}: {left_s:.0f} s left"
    if n_open >= config.max_concurrent_trades:
        return False, f"max concurrent trades reached ({n_open} open, limit {config.max_concurrent_trades})"
    today = utc_day(now_ms)
    done = state.entries_on(today)
    if done >= config.max_daily_trades:
        return False, f"daily trade limit reached ({done} entries on {today} UTC, limit {config.max_daily_trades})"
    return True, ""


def _cool(state: RiskState, until_ms: int, reason: str) -> RiskState:
    if until_ms <= state.cooldown_until_ms:
        return state
    return replace(state, cooldown_until_ms=until_ms, cooldown_reason=reason)


def on_entry(state: RiskState, now_ms: int, config: RiskConfig | None = None) -> RiskState:
    """An entry was sent (count it once per trade, when it is journaled): count the day, start the cooldown."""
    config = config or RiskConfig()
    today = utc_day(now_ms)
    state = replace(state, day=today, trades_today=state.entries_on(today) + 1, last_entry_ts_ms=now_ms)
    return _cool(state, now_ms + config.cooldown_ms, "an entry")


def on_close(state: RiskState, now_ms: int, config: RiskConfig | None = None) -> RiskState:
    """A trade closed (``now_ms`` = its exit fill's exchange time): start the cooldown."""
    config = config or RiskConfig()
    return _cool(replace(state, last_close_ts_ms=now_ms), now_ms + config.cooldown_ms, "a close")


def on_error(state: RiskState, now_ms: int) -> RiskState:
    """An execution error (order rejected, timeout): one minute of cooldown."""
    return _cool(replace(state, last_error_ts_ms=now_ms), now_ms + ERROR_COOLDOWN_MS, "an execution error")


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
    Positions nobody here opened are never touched.
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
            actions.append(CancelOrder(o.order_id, o.instrument, f"{reason}: {p.role.value} order of trade {p.trade_id}", p.trade_id))
    return actions
