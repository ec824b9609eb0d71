"""Declared indicators: one declaration, computed over whole arrays in a backtest and candle by candle live.

A ``Series`` is what an ``ArrayStrategy`` returns from ``indicators()``: it knows how to compute its values over
all the candles of a backtest at once (``array``, numpy, once per backtest) and how to keep the same values up to
date one closed candle at a time (``stream``, what the live runner's ``on_candle`` drives). The ones made here
give the *same bits* both ways (tests/unit/test_series.py proves it for each), so a strategy decides exactly the
same in a backtest as live. ``key`` names the computation, so a sweep computes each series once per data set.

Values: element ``i`` of ``array`` is the value after candle ``i`` closed (it may use candles ``0..i``, never a
later one); NaN (float series) or False (boolean series) until the indicator is ready. A stream's ``value`` is the
same number after the same candles.

``rolling(key, fn, window)`` turns any causal array function into a series: live it re-evaluates ``fn`` over the
last ``window`` candles and takes the last value, which equals the array value only if that value depends on no
more than those candles (a rolling mean computed with a running sum does not, to the last bit: see
docs/strategies.md, "Array speed", and check yours with ``tradebaas.strategies.causality.check_series``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tradebaas.domain import Candle
from tradebaas.strategies import indicator_arrays as arrays
from tradebaas.strategies import indicators as inc

FIELDS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class CandleArrays:
    """The candles of a backtest as numpy arrays (``ts_ms`` int64 start of each candle; prices float64)."""

    ts_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return len(self.ts_ms)

    @classmethod
    def from_frame(cls, candles: Any) -> CandleArrays:
        """From a ``load_candles`` frame (UTC DatetimeIndex of candle starts, OHLCV columns)."""
        idx = candles.index
        ts = (idx.as_unit("ms").asi8 if idx.unit != "ms" else idx.asi8).astype(np.int64)
        return cls(ts, *(candles[k].to_numpy(dtype="float64") for k in FIELDS))

    @classmethod
    def from_candles(cls, candles: list[Candle]) -> CandleArrays:
        ts = np.array([c.ts_ms for c in candles], dtype=np.int64)
        return cls(ts, *(np.array([getattr(c, k) for c in candles], dtype="float64") for k in FIELDS))

    def head(self, n: int) -> CandleArrays:
        """The first ``n`` candles (causality checks compute over prefixes)."""
        return CandleArrays(*(getattr(self, f)[:n] for f in ("ts_ms", *FIELDS)))

    def candle(self, i: int) -> Candle:
        return Candle(int(self.ts_ms[i]), *(float(getattr(self, f)[i]) for f in FIELDS))


class Stream(Protocol):
    """The incremental form of a series: ``update`` with each closed candle, oldest first; then read ``value``."""

    def update(self, candle: Candle) -> None: ...

    @property
    def value(self) -> float | bool: ...


class Series(Protocol):
    """A declared indicator (see the module docstring)."""

    @property
    def key(self) -> Hashable: ...

    def array(self, a: CandleArrays) -> np.ndarray: ...

    def stream(self) -> Stream: ...


@dataclass(frozen=True, slots=True)
class Declared:
    """A series from its two forms: ``array_fn(candle arrays) -> array`` and ``stream_fn() -> fresh Stream``."""

    key: Hashable
    array_fn: Callable[[CandleArrays], np.ndarray]
    stream_fn: Callable[[], Stream]

    def array(self, a: CandleArrays) -> np.ndarray:
        return self.array_fn(a)

    def stream(self) -> Stream:
        return self.stream_fn()


class _Adapter:
    """A ``Stream`` over one of ``indicators.py``'s classes: feeds it the candle fields it takes, NaN for None."""

    __slots__ = ("ind", "fields")

    def __init__(self, ind: Any, *fields: str) -> None:
        self.ind = ind
        self.fields = fields

    def update(self, candle: Candle) -> None:
        self.ind.update(*(getattr(candle, f) for f in self.fields))

    @property
    def value(self) -> float | bool:
        v = self.ind.value
        return math.nan if v is None else v


class _CloseAdapter(_Adapter):
    """``_Adapter`` for the indicators that take the close only (the common case, one attribute read)."""

    __slots__ = ()

    def update(self, candle: Candle) -> None:
        self.ind.update(candle.close)


def _field(name: str) -> str:
    if name not in FIELDS:
        raise ValueError(f"source must be one of {', '.join(FIELDS)}, not {name!r}")
    return name


def ema(period: int, source: str = "close") -> Declared:
    """EMA of ``source`` (SMA-seeded, ``indicators.EMA``); ready at ``period`` candles."""
    src = _field(source)
    period = int(period)
    inc.EMA(period)  # validates the period now, not at the first candle
    return Declared(("ema", period, src), lambda a: inc.ema_array(getattr(a, src), period, exact=True),
                    lambda: _CloseAdapter(inc.EMA(period)) if src == "close" else _Adapter(inc.EMA(period), src))


def rsi(period: int = 14) -> Declared:
    """RSI of the closes with simple averages (``indicators.RSI``); ready at ``period + 1`` candles."""
    period = int(period)
    return Declared(("rsi", period), lambda a: arrays.rsi_array(a.close, period),
                    lambda: _CloseAdapter(inc.RSI(period)))


def volatility(window: int = 20) -> Declared:
    """Volatility of the closes in percent (``indicators.Volatility``); ready at 2 candles."""
    window = int(window)
    return Declared(("volatility", window), lambda a: arrays.volatility_array(a.close, window),
                    lambda: _CloseAdapter(inc.Volatility(window)))


def momentum(lookback: int = 5) -> Declared:
    """Momentum of the closes in percent (``indicators.Momentum``); ready at ``lookback`` candles."""
    lookback = int(lookback)
    return Declared(("momentum", lookback), lambda a: arrays.momentum_array(a.close, lookback),
                    lambda: _CloseAdapter(inc.Momentum(lookback)))


def atr_pct(period: int = 14) -> Declared:
    """Average true range over the last close, percent (``indicators.ATRPercent``); ready at period+1 candles."""
    period = int(period)
    return Declared(("atr_pct", period), lambda a: arrays.atr_pct_array(a.high, a.low, a.close, period),
                    lambda: _Adapter(inc.ATRPercent(period), "high", "low", "close"))


def pullback(fraction: float = 0.15, window: int = 10, min_closes: int = 20) -> Declared:
    """Whether the last ``window`` closes moved and pulled back by ``fraction`` (``indicators.Pullback``)."""
    fraction, window, min_closes = float(fraction), int(window), int(min_closes)
    return Declared(("pullback", fraction, window, min_closes),
                    lambda a: arrays.pullback_array(a.close, fraction, window, min_closes),
                    lambda: _CloseAdapter(inc.Pullback(fraction, window, min_closes)))


def compression(window: int = 12, ratio: float = 0.6) -> Declared:
    """Whether the last range is below ``ratio`` x the mean of the last ``window`` (``indicators.Compression``)."""
    window, ratio = int(window), float(ratio)
    return Declared(("compression", window, ratio), lambda a: arrays.compression_array(a.high, a.low, window, ratio),
                    lambda: _Adapter(inc.Compression(window, ratio), "high", "low"))


class _Rolling:
    """Live form of ``rolling``: the last ``window`` candles, ``fn`` evaluated over them when read."""

    __slots__ = ("fn", "candles", "_value", "_dirty")

    def __init__(self, fn: Callable[[CandleArrays], np.ndarray], window: int) -> None:
        self.fn = fn
        self.candles: deque[Candle] = deque(maxlen=window)
        self._value: float | bool = math.nan
        self._dirty = False

    def update(self, candle: Candle) -> None:
        self.candles.append(candle)
        self._dirty = True

    @property
    def value(self) -> float | bool:
        if self._dirty:
            self._dirty = False
            out = self.fn(CandleArrays.from_candles(list(self.candles)))
            self._value = out[-1].item()
        return self._value


def rolling(key: Hashable, fn: Callable[[CandleArrays], np.ndarray], window: int) -> Declared:
    """Any causal array function as a series; live: ``fn`` over the last ``window`` candles, last value.

    ``key`` must name ``fn`` and its parameters (the sweep cache shares arrays between equal keys).
    """
    window = int(window)
    if window < 1:
        raise ValueError("rolling window must be >= 1")
    return Declared(("rolling", key, window), fn, lambda: _Rolling(fn, window))
