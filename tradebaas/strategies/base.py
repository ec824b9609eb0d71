"""The strategy API: one API for backtest, paper and live.

A strategy is a plain class. It never talks to the exchange and never reads the wall clock: it receives closed
candles (and optionally tickers and fills) whose timestamps are exchange time, and returns *intents*. The live
runner turns intents into orders; the backtester turns them into simulated fills through ``tradebaas.fillmodel``.

Lifecycle: ``on_start(context)`` once (after warm-up candles were fed through ``on_candle`` with
``context.warming_up`` true), then ``on_candle`` for every closed candle, in order. The runner keeps
``context.position`` up to date before each call, so a strategy can read its position without keeping a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from tradebaas.domain import Candle, Direction, Fill, Ticker
from tradebaas.instruments import Instrument


@dataclass(slots=True, frozen=True)
class Enter:
    """Open a position at market, protected by a stop-loss and a take-profit placed from the actual fill.

    ``notional_usd`` sizes the order (the runner converts it with the instrument's rules); ``sl_pct`` and
    ``tp_pct`` are percent distances from the average fill price (0.5 means 0.5 %).
    """

    direction: Direction
    notional_usd: float
    sl_pct: float
    tp_pct: float
    reason: str = ""


@dataclass(slots=True, frozen=True)
class MoveStop:
    """Move the open position's stop-loss trigger to ``stop_price`` (e.g. break-even)."""

    stop_price: float
    reason: str = ""


@dataclass(slots=True, frozen=True)
class Exit:
    """Close the open position at market and cancel its brackets."""

    reason: str = ""


Intent = Enter | MoveStop | Exit


@dataclass(slots=True)
class PositionView:
    """The strategy's own open position, as the runner knows it (None in the context when flat)."""

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
    """What the runner tells a strategy. Mutable by the runner only."""

    instrument: Instrument
    position: PositionView | None = None
    warming_up: bool = False
    trades_today: int = 0
    cooldown_until_ms: int = 0
    last_close_ts_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Decision:
    """The record of one decision on one closed candle: what was seen, scored and why.

    Journaled for every candle the strategy evaluates, shown in the control panel.
    """

    ts_ms: int
    signal: str  # "long" | "short" | "none"
    indicators: dict[str, Any]
    scores: dict[str, float]
    reasons: tuple[str, ...]
    intents: tuple[Intent, ...] = ()
    skipped: str = ""  # why no evaluation happened (warming up, cooldown, position open, daily limit)


@dataclass(slots=True, frozen=True)
class Param:
    """One declared strategy parameter: the config validation, the control-panel form and the docs come from it."""

    name: str
    type: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""


class Strategy(Protocol):
    """What the runner and the backtester expect of a strategy class."""

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]

    def __init__(self, config: dict[str, Any]) -> None: ...

    def on_start(self, context: StrategyContext) -> None: ...

    def on_candle(self, candle: Candle, context: StrategyContext) -> Decision: ...

    def on_ticker(self, ticker: Ticker, context: StrategyContext) -> list[Intent]: ...

    def on_fill(self, fill: Fill, context: StrategyContext) -> None: ...
