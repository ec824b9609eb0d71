"""Incremental indicators, exactly as docs/razor.md defines them.

Each indicator takes one closed candle at a time (``update``, O(1): a fixed window of at most 20 values),
exposes ``value`` and ``ready``, and never looks at the forming candle. Window indicators compute ``value`` when
it is read (and cache it until the next update): a strategy that holds a position reads none of them, which is
most of the candles of a backtest. They run over the whole history (an EMA is
not recomputed over a window), so a backtest and a live session that saw the same candles agree exactly.
``value`` is ``None`` (or ``False`` for the boolean ones) until ``ready``.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


class EMA:
    """Exponential moving average, seeded with the SMA of the first ``period`` closes; ready at ``period`` closes."""

    __slots__ = ("period", "k", "count", "_seed_sum", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError("EMA period must be >= 1")
        self.period = period
        self.k = 2.0 / (period + 1)
        self.count = 0
        self._seed_sum = 0.0
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self.value is not None

    def update(self, close: float) -> float | None:
        self.count += 1
        if self.value is not None:
            self.value += (close - self.value) * self.k
        else:
            self._seed_sum += close
            if self.count == self.period:
                self.value = self._seed_sum / self.period
        return self.value


def ema_array(closes: np.ndarray, period: int, *, exact: bool = False) -> np.ndarray:
    """``EMA(period)`` over a whole array of closes at once: element i is ``EMA.update``'s value after close i.

    NaN until ready (the first ``period - 1`` elements). The seed is the same running sum divided once.

    ``exact=True`` runs the recursion with the very float operations of ``EMA.update`` (``v += (c - v) * k``),
    so the values are bitwise equal; it is a plain loop (~0.16 s per million closes). ``exact=False`` hands the
    recursion to pandas' compiled ``ewm(adjust=False)`` from the same seed: ~30x faster, but it rounds
    differently (``(1 - k) * v + k * c``), so values differ by a few ulps times the period
    (``ema_error_bound``). Callers that compare two EMAs (a cross) must treat differences inside that bound as
    undecided and recompute exactly; ``EmaCross.vectorized`` does.
    """
    values = np.asarray(closes, dtype="float64")
    n = len(values)
    out = np.full(n, np.nan)
    if period < 1:
        raise ValueError("EMA period must be >= 1")
    if n < period:
        return out
    seed = float(np.cumsum(values[:period])[-1]) / period  # cumsum adds left to right, as EMA's running sum
    k = 2.0 / (period + 1)
    if exact:
        v = seed
        tail = [v]
        append = tail.append
        for c in values[period:].tolist():
            v += (c - v) * k
            append(v)
        out[period - 1:] = tail
    else:
        import pandas as pd

        x = np.concatenate(([seed], values[period:]))
        out[period - 1:] = pd.Series(x).ewm(alpha=k, adjust=False).mean().to_numpy()
    return out


def ema_error_bound(period: int, scale: float) -> float:
    """A safe bound on ``|ema_array(exact=False) - ema_array(exact=True)|`` for closes of magnitude <= ``scale``.

    Each step's rounding (a few ulps of values <= ``scale``) decays by ``1 - k`` per step, so the error stays
    below ``few * eps * scale / k = few * eps * scale * (period + 1) / 2``; 64 ulps of margin over that (the
    measured worst case is ~1e-12 relative at period 5000) keeps it safe without making ties common.
    """
    return 64.0 * float(np.finfo("float64").eps) * scale * (period + 1)


class RSI:
    """RSI with *simple* averages over the last ``period`` close-to-close differences; ready at period+1 closes.

    ``avg_loss == 0`` gives 100 (also when nothing moved at all), as the spec says.
    """

    __slots__ = ("period", "_diffs", "_prev", "_value", "_dirty")

    def __init__(self, period: int = 14) -> None:
        self.period = period
        self._diffs: deque[float] = deque(maxlen=period)
        self._prev: float | None = None
        self._value: float | None = None
        self._dirty = False

    @property
    def ready(self) -> bool:
        return len(self._diffs) == self.period

    def update(self, close: float) -> None:
        if self._prev is not None:
            self._diffs.append(close - self._prev)
            self._dirty = True
        self._prev = close

    @property
    def value(self) -> float | None:
        if self._dirty:
            self._dirty = False
            if len(self._diffs) == self.period:
                gain = loss = 0.0
                for d in self._diffs:
                    if d > 0:
                        gain += d
                    else:
                        loss -= d
                n = self.period
                self._value = 100.0 if loss == 0 else 100.0 - 100.0 / (1.0 + (gain / n) / (loss / n))
        return self._value


class Volatility:
    """Volatility in percent over the last ``window`` closes (fewer at the start):
    ``max(pstdev/mean*100, (max-min)/mean*100)``, floored at 0.01; ready at 2 closes."""

    __slots__ = ("_closes", "_value", "_dirty")

    FLOOR = 0.01

    def __init__(self, window: int = 20) -> None:
        self._closes: deque[float] = deque(maxlen=window)
        self._value: float | None = None
        self._dirty = False

    @property
    def ready(self) -> bool:
        return len(self._closes) >= 2

    def update(self, close: float) -> None:
        self._closes.append(close)
        self._dirty = True

    @property
    def value(self) -> float | None:
        if not self._dirty:
            return self._value
        self._dirty = False
        xs = self._closes
        n = len(xs)
        if n < 2:
            return None
        mean = sum(xs) / n
        if mean == 0:
            self._value = self.FLOOR
            return self._value
        var = 0.0
        for x in xs:
            var += (x - mean) * (x - mean)
        sd_pct = math.sqrt(var / n) / mean * 100.0
        range_pct = (max(xs) - min(xs)) / mean * 100.0
        self._value = max(sd_pct, range_pct, self.FLOOR)
        return self._value


class Momentum:
    """Momentum in percent: ``(c[-1] - c[-lookback]) / c[-lookback] * 100``; ready at ``lookback`` closes."""

    __slots__ = ("_closes", "value")

    def __init__(self, lookback: int = 5) -> None:
        self._closes: deque[float] = deque(maxlen=lookback)
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self.value is not None

    def update(self, close: float) -> float | None:
        xs = self._closes
        xs.append(close)
        if len(xs) == xs.maxlen:
            self.value = (close - xs[0]) / xs[0] * 100.0
        return self.value


class ATRPercent:
    """Mean of the last ``period`` true ranges ``max(h-l, |h-c_prev|, |l-c_prev|)``, over the last close, in
    percent; ready at period+1 candles (the first candle has no previous close)."""

    __slots__ = ("period", "_trs", "_prev", "_value", "_dirty")

    def __init__(self, period: int = 14) -> None:
        self.period = period
        self._trs: deque[float] = deque(maxlen=period)
        self._prev: float | None = None
        self._value: float | None = None
        self._dirty = False

    @property
    def ready(self) -> bool:
        return len(self._trs) == self.period

    def update(self, high: float, low: float, close: float) -> None:
        prev = self._prev
        if prev is not None:
            self._trs.append(max(high - low, abs(high - prev), abs(low - prev)))
            self._dirty = True
        self._prev = close

    @property
    def value(self) -> float | None:
        if self._dirty:
            self._dirty = False
            prev = self._prev  # never None once a true range exists: the first candle only sets it
            if len(self._trs) == self.period and prev is not None:
                self._value = sum(self._trs) / self.period / prev * 100.0
        return self._value


class Pullback:
    """Whether the last ``window`` closes moved and then pulled back by at least ``fraction`` of the move.

    Needs ``min_closes`` (20) closes. ``move = end - start`` over the window; ``|move| < 0.001*start`` -> False;
    up move: ``(max - end)/(max - start) >= fraction``; down: ``(end - min)/(start - min) >= fraction``.
    """

    __slots__ = ("fraction", "min_closes", "count", "_closes")

    def __init__(self, fraction: float = 0.15, window: int = 10, min_closes: int = 20) -> None:
        self.fraction = fraction
        self.min_closes = min_closes
        self.count = 0
        self._closes: deque[float] = deque(maxlen=window)

    @property
    def ready(self) -> bool:
        return self.count >= self.min_closes

    def update(self, close: float) -> None:
        self._closes.append(close)
        self.count += 1

    @property
    def value(self) -> bool:
        if self.count < self.min_closes:
            return False
        xs = self._closes
        start, end = xs[0], xs[-1]
        move = end - start
        if abs(move) < 0.001 * start:
            return False
        if move > 0:
            hi = max(xs)
            return (hi - end) / (hi - start) >= self.fraction
        lo = min(xs)
        return (end - lo) / (start - lo) >= self.fraction


class Compression:
    """The last candle's range ``h-l`` is below ``ratio`` times the mean range of the last ``window`` candles;
    ready at ``window`` candles."""

    __slots__ = ("window", "ratio", "_ranges")

    def __init__(self, window: int = 12, ratio: float = 0.6) -> None:
        self.window = window
        self.ratio = ratio
        self._ranges: deque[float] = deque(maxlen=window)

    @property
    def ready(self) -> bool:
        return len(self._ranges) == self.window

    def update(self, high: float, low: float) -> None:
        self._ranges.append(high - low)

    @property
    def value(self) -> bool:
        rs = self._ranges
        if len(rs) < self.window:
            return False
        return rs[-1] < self.ratio * (sum(rs) / len(rs))
