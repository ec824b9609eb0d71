"""The strategy API: one API for backtest, paper and live.

A strategy is a plain class. It never talks to the exchange and never reads the wall clock: it receives closed
candles (and optionally tickers and fills) whose timestamps are exchange time, and returns *intents*. The live
runner turns intents into orders; the backtester turns them into simulated fills through ``tradebaas.fillmodel``.

Lifecycle (the same in the backtester and the live runner):

1. ``strategy = cls(validate_config(cls, raw_config))`` (``tradebaas.strategies.params``); ``context =
   StrategyContext(instrument)``, restored from the journal on a restart (position, counters, cooldown).
2. Warm-up: ``context.warming_up = True``; feed history candles, oldest first, through ``on_candle``; the
   decisions carry ``skipped="warming up"`` and no intents (ignore them).
3. ``context.warming_up = False``; ``on_start(context)`` once.
4. For every closed candle, in order: the runner brings ``context`` up to date (``roll_day``, position), then
   ``decision = strategy.on_candle(candle, context)``, journals the decision and executes ``decision.intents``
   in order.

Who updates what in ``StrategyContext`` (the strategy only reads it):

==================  ====================================================================================
field               updated by the runner (live and backtest alike; the helpers below do it)
==================  ====================================================================================
position            set on the entry fill (``PositionView`` from the actual fill and its brackets),
                    ``stop_price`` + ``break_even_done`` when a ``MoveStop`` is applied (``apply_move_stop``),
                    ``None`` when the position is closed (SL, TP, Exit, flatten, kill)
trades_today        ``record_entry`` (+1 per entry fill); ``roll_day`` resets it at each new UTC day
trading_day         ``roll_day(context, ts_ms)`` before every ``on_candle`` and every bookkeeping call
cooldown_until_ms   ``record_entry`` / ``record_close`` -> fill ts + ``strategy.cooldown_ms``;
                    ``record_error`` -> error ts + 60 s (an entry order rejected or failed)
last_close_ts_ms    ``record_close``: exchange ts of the last close (for the panel and the journal)
==================  ====================================================================================

``trades_today``, ``trading_day``, ``cooldown_until_ms`` and the position must be persisted (journal) so that
limits and cooldowns survive a restart. The backtester calls the same helpers; an exit inside a candle is
taken to happen at the candle's last millisecond, which gives the cooldown the same effect as a live fill at any
moment inside that minute.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from tradebaas.domain import Candle, Direction, Fill, Ticker
from tradebaas.instruments import Instrument

DAY_MS = 86_400_000
ERROR_COOLDOWN_MS = 60_000


@dataclass(slots=True, frozen=True)
class Enter:
    """Open a position at market, protected by a stop-loss and a take-profit placed from the actual fill.

    ``notional_usd`` sizes the order (the runner converts it with ``Instrument.amount_for_notional`` at the
    price known when it orders: the live last price, the backtest's signal-candle close). ``sl_pct`` and
    ``tp_pct`` are percent distances from the average fill price (0.5 means 0.5 %); ``None`` means *no such
    bracket* (``ema_cross`` uses no brackets at all), while 0 is a real bracket at the fill price.
    """

    direction: Direction
    notional_usd: float
    sl_pct: float | None
    tp_pct: float | None
    reason: str = ""

    @property
    def has_brackets(self) -> bool:
        return self.sl_pct is not None or self.tp_pct is not None


@dataclass(slots=True, frozen=True)
class MoveStop:
    """Move the open position's stop-loss trigger to ``stop_price`` (e.g. break-even).

    The runner applies it for the market after the candle that produced it. ``break_even`` marks the once-per-
    trade break-even move, so the runner can set ``PositionView.break_even_done`` (persisted with the trade).
    """

    stop_price: float
    reason: str = ""
    break_even: bool = False


@dataclass(slots=True, frozen=True)
class Exit:
    """Close the open position at market and cancel its brackets (at the next candle's open in a backtest)."""

    reason: str = ""


Intent = Enter | MoveStop | Exit


@dataclass(slots=True)
class PositionView:
    """The strategy's own open position, as the runner knows it (None in the context when flat).

    ``stop_price`` / ``take_price`` are ``None`` when the position has no such bracket.
    """

    direction: Direction
    amount: float
    entry_price: float
    stop_price: float | None
    take_price: float | None
    opened_ts_ms: int
    trade_id: str = ""
    break_even_done: bool = False


@dataclass(slots=True)
class StrategyContext:
    """What the runner tells a strategy. Mutable by the runner only (see the module docstring for who updates
    what); persisted by the live runner so that limits and cooldowns survive a restart."""

    instrument: Instrument
    position: PositionView | None = None
    warming_up: bool = False
    trades_today: int = 0
    cooldown_until_ms: int = 0
    last_close_ts_ms: int = 0
    trading_day: int = -1  # UTC day number (ts_ms // 86_400_000) that trades_today counts
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Decision:
    """The record of one decision on one closed candle: what was seen, scored and why.

    Journaled for every candle the strategy evaluates, shown in the control panel. ``ts_ms`` is the candle's
    start; the decision is taken at its close (``ts_ms + interval``).
    """

    ts_ms: int
    signal: str  # "long" | "short" | "none"
    indicators: dict[str, Any]
    scores: dict[str, float]
    reasons: tuple[str, ...]
    intents: tuple[Intent, ...] = ()
    skipped: str = ""  # why no evaluation happened (warming up, cooldown, position open, daily limit)
    strength: float = 0.0  # 0..100
    confidence: float = 0.0  # 0..100

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the journal and the RPC (intents as ``{"type": ..., fields...}``)."""
        return {
            "ts_ms": self.ts_ms,
            "signal": self.signal,
            "indicators": dict(self.indicators),
            "scores": dict(self.scores),
            "reasons": list(self.reasons),
            "intents": [intent_as_dict(i) for i in self.intents],
            "skipped": self.skipped,
            "strength": self.strength,
            "confidence": self.confidence,
        }


def intent_as_dict(intent: Intent) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(intent).__name__}
    for name in intent.__slots__:
        value = getattr(intent, name)
        out[name] = str(value) if isinstance(value, Direction) else value
    return out


@dataclass(slots=True, frozen=True)
class Param:
    """One declared strategy parameter: the config validation, the control-panel form and the docs come from it.

    ``minimum``/``maximum`` are inclusive; ``choices`` restricts a value to a fixed set.
    """

    name: str
    type: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""
    choices: tuple[Any, ...] | None = None


class Strategy(Protocol):
    """What the runner and the backtester expect of a strategy class."""

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]
    cooldown_ms: int
    #: The validated config it was made with (the live runner re-creates the strategy from it on a restart).
    config: dict[str, Any]

    def __init__(self, config: dict[str, Any]) -> None: ...

    def on_start(self, context: StrategyContext) -> None: ...

    def on_candle(self, candle: Candle, context: StrategyContext) -> Decision: ...

    def on_ticker(self, ticker: Ticker, context: StrategyContext) -> list[Intent]: ...

    def on_fill(self, fill: Fill, context: StrategyContext) -> None: ...


class BaseStrategy:
    """Convenience base: stores the (already validated) config and gives no-op optional hooks.

    Subclasses declare ``name`` and ``params`` and implement ``on_candle``. ``cooldown_ms`` is what the runner
    adds after an entry and after a close (0: none).
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    interval_ms: ClassVar[int] = 60_000
    #: Whether its entries carry exchange brackets (a stop-loss at least). A strategy that exits by its own
    #: signals (``ema_cross``) says False: reconciliation then leaves its explained positions without a stop, and
    #: protects them only when something is wrong (docs/live-loop.md).
    uses_brackets: ClassVar[bool] = True
    #: The config keys of the entry brackets' distances, ``(stop-loss key, take-profit key)`` (percent from the
    #: entry fill). A live parameter change with ``apply_to_open`` (and a backtest ``Swap(apply_to_open=True)``)
    #: re-places an open position's brackets from these keys of the new config; ``()``: the strategy has none to
    #: re-place (``apply_to_open`` is refused).
    bracket_params: ClassVar[tuple[str, ...]] = ()
    #: The config key of its order size, a USD notional (what ``Enter.notional_usd`` carries). A live start or
    #: parameter change refuses a size that rounds to less than the instrument's minimum amount, when the class
    #: declares a parameter of this name (``tradebaas.engine.core.guards``; docs/strategies.md).
    size_param: ClassVar[str] = "tradeSize"
    cooldown_ms: int = 0
    #: Whether decisions that skip scoring (position open, cooldown, ...) still carry every indicator value. The
    #: live runner journals them (True); a backtest that keeps no such decisions turns it off for speed. It never
    #: changes what the strategy decides.
    verbose_skips: bool = True

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        from tradebaas.strategies.params import validate_config

        self.config: dict[str, Any] = validate_config(type(self), config or {})

    def on_start(self, context: StrategyContext) -> None:
        return None

    def on_ticker(self, ticker: Ticker, context: StrategyContext) -> list[Intent]:
        return []

    def on_fill(self, fill: Fill, context: StrategyContext) -> None:
        return None


# --- bookkeeping shared by the live runner and the backtester -------------------------------------------------


def started_instance(cls: type, config: dict[str, Any], candles: Iterable[Candle], context: StrategyContext) -> Any:
    """A new instance of ``cls`` warmed up on ``candles`` (``context.warming_up`` set meanwhile), then started: how
    the live runner begins a strategy and a new version of it, on the loop or in the strategy's own process."""
    strategy = cls(config)
    context.warming_up = True
    try:
        for candle in candles:
            strategy.on_candle(candle, context)
    finally:
        context.warming_up = False
    strategy.on_start(context)
    return strategy


def roll_day(context: StrategyContext, ts_ms: int) -> None:
    """Start a new daily count when ``ts_ms`` (exchange time) is in a later UTC day than the one counted."""
    day = ts_ms // DAY_MS
    if day != context.trading_day:
        context.trading_day = day
        context.trades_today = 0


def record_entry(context: StrategyContext, position: PositionView, ts_ms: int, cooldown_ms: int) -> None:
    """An entry filled at ``ts_ms``: the position exists, one more trade today, cooldown starts."""
    roll_day(context, ts_ms)
    context.position = position
    context.trades_today += 1
    context.cooldown_until_ms = max(context.cooldown_until_ms, ts_ms + cooldown_ms)


def record_close(context: StrategyContext, ts_ms: int, cooldown_ms: int) -> None:
    """The position closed at ``ts_ms`` (any reason): flat again, cooldown starts."""
    roll_day(context, ts_ms)
    context.position = None
    context.last_close_ts_ms = ts_ms
    context.cooldown_until_ms = max(context.cooldown_until_ms, ts_ms + cooldown_ms)


def record_error(context: StrategyContext, ts_ms: int) -> None:
    """An execution error (entry rejected/failed) at ``ts_ms``: one minute of cooldown."""
    context.cooldown_until_ms = max(context.cooldown_until_ms, ts_ms + ERROR_COOLDOWN_MS)


def apply_move_stop(context: StrategyContext, intent: MoveStop) -> None:
    """Apply a stop move to the context's position (after the exchange accepted it, live)."""
    pos = context.position
    if pos is None:
        return
    pos.stop_price = intent.stop_price
    if intent.break_even:
        pos.break_even_done = True
