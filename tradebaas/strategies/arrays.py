"""``ArrayStrategy``: a strategy that declares its indicators (and where it can its entry signals) over arrays.

Why: a backtest that calls Python for every indicator of every candle pays microseconds per candle. A strategy
that *declares* what it computes lets the backtester compute it once per backtest with numpy, and run Python only
on the candles where a decision can need state (an entry while flat, a stop move while in a position) and for the
fill model. Live, the very same declaration runs incrementally: ``on_candle`` (what the engine's runner calls)
updates each declared series' stream and calls ``decide``. docs/strategies.md, "Array speed", is the tutorial.

What a subclass writes (everything but ``decide`` is optional):

- ``indicators() -> {name: Series}`` (``tradebaas.strategies.series``: ``ema``, ``rsi``, ... or ``rolling``);
- ``decide(candle, v, context) -> Decision``: the decision, reading the current values as ``v[name]`` (floats,
  NaN until ready; bools for boolean series). ``v`` is valid during the call only;
- ``signals(v, a) -> array``: over the whole backtest at once (``v[name]`` the full arrays, ``a`` the
  ``CandleArrays``), non-zero where ``decide`` *may* act while flat. The promise: on a candle where it is 0,
  ``decide`` with no open position returns no intents;
- ``position_wake(position) -> (above, below)``: while that position is open, ``decide`` returns no intents on a
  candle whose high stays below ``above`` and whose low stays above ``below`` (``NEVER``: it never acts while a
  position is open; ``None``, the default: it may act on any candle).

Two promises make skipping candles exact: the two above, and that ``decide`` changes its own state only on
candles where it acts (anything that must follow every candle belongs in a declared series). The backtester
then makes the same trades as calling ``on_candle`` on every candle; ``tradebaas.strategies.causality`` checks
all of it on data (tests do it for every strategy that uses this: Razor, the docs' example).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from tradebaas.domain import Candle
from tradebaas.strategies.base import BaseStrategy, Decision, PositionView, StrategyContext
from tradebaas.strategies.series import CandleArrays, Series, Stream

#: ``position_wake``'s answer for a strategy that never acts while a position is open (its brackets do).
NEVER: tuple[float, float] = (math.inf, -math.inf)


class LiveValues(Mapping[str, Any]):
    """The current value of each declared series, read from its stream when asked (live and candle by candle)."""

    __slots__ = ("_streams",)

    def __init__(self, streams: dict[str, Stream]) -> None:
        self._streams = streams

    def __getitem__(self, name: str) -> Any:
        return self._streams[name].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._streams)

    def __len__(self) -> int:
        return len(self._streams)


class ArrayValues(Mapping[str, Any]):
    """The values of each declared series at candle ``i`` of a backtest (Python floats and bools, as live)."""

    __slots__ = ("_arrays", "i")

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._arrays = dict(arrays)
        self.i = 0

    def __getitem__(self, name: str) -> Any:
        return self._arrays[name].item(self.i)

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)


class ArrayStrategy(BaseStrategy):
    """Base class of the strategies that declare their indicators (see the module docstring)."""

    _declared: dict[str, Series] | None = None
    _streams: dict[str, Stream] | None = None
    _stream_list: tuple[Stream, ...] = ()
    _live: LiveValues | None = None

    def indicators(self) -> dict[str, Series]:
        """The declared series by name (read once per instance: the config cannot change under it)."""
        return {}

    def signals(self, v: Mapping[str, np.ndarray], a: CandleArrays) -> np.ndarray | None:
        """Where ``decide`` may act while flat (non-zero), over the whole backtest; None: anywhere."""
        return None

    def position_wake(self, position: PositionView) -> tuple[float, float] | None:
        """``(above, below)``: the prices a candle must reach for ``decide`` to act on ``position``; None: any."""
        return None

    def decide(self, candle: Candle, v: Mapping[str, Any], context: StrategyContext) -> Decision:
        raise NotImplementedError(f"{type(self).__name__} must implement decide(candle, v, context)")

    def declared(self) -> dict[str, Series]:
        """``indicators()``, asked once and kept."""
        if self._declared is None:
            self._declared = dict(self.indicators())
        return self._declared

    def on_candle(self, candle: Candle, context: StrategyContext) -> Decision:
        """Live (and the candle-by-candle backtest): update every declared series, then ``decide``."""
        live = self._live
        if live is None:
            self._streams = {name: s.stream() for name, s in self.declared().items()}
            self._stream_list = tuple(self._streams.values())
            live = self._live = LiveValues(self._streams)
        for s in self._stream_list:
            s.update(candle)
        return self.decide(candle, live, context)
