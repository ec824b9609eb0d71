"""Incremental indicators, exactly as docs/razor.md defines them.

Each indicator takes one closed candle at a time (``update``, O(1): a fixed window of at most 20 values),
exposes ``value`` and ``ready``, and never looks at the forming candle. Window indicators compute ``value`` when
it is read (and cache it until the next update): a strategy that holds a position reads none of them, which is
most of the candles of a backtest. They run over the whole history (an EMA is
not recomputed over a window), so a backtest and a live session that saw the same candles agree exactly.
``value`` is ``None`` (or ``False`` for the boolean ones) until ``ready``.

Window sums add left to right (``_sum``), never with the builtin ``sum`` (Python 3.12 made it compensated): the
array forms in ``indicator_arrays.py`` repeat exactly these float operations, so both agree to the last bit on any
Python version.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import numpy as np


def _sum(xs: Iterable[float]) -> float:
    """Left-to-right float sum (what ``indicator_arrays._window`` with ``np.add`` repeats column by column)."""
    total = 0.0
    for x in xs:
        total += x
    return total


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
    so the values are bitwise equal (``_ema_recursion``: ~20 ms per million closes, blocks of the series in
    parallel, each proven to join its predecessor bit for bit). ``exact=False`` hands the
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
        out[period - 1:] = _ema_recursion(values[period:], seed, k)
    else:
        out[period - 1:] = _ema_fast(values[period:], seed, k)
    return out


def _ema_fast(x: np.ndarray, seed: float, k: float) -> np.ndarray:
    """``[seed, then v after each x]`` by pandas' compiled recursion (rounds differently from ``EMA.update``)."""
    import pandas as pd

    return pd.Series(np.concatenate(([seed], x))).ewm(alpha=k, adjust=False).mean().to_numpy()


def _ema_loop(x: np.ndarray, v: float, k: float) -> list[float]:
    """``v += (c - v) * k`` for each ``c`` in ``x``, exactly as ``EMA.update``; the values after each step."""
    tail: list[float] = []
    append = tail.append
    for c in x.tolist():
        v += (c - v) * k
        append(v)
    return tail


def ema_overlap(k: float) -> int:
    """Steps after which two runs of the recursion that started up to ~5 % apart (a block started from a close
    instead of the unknown exact value) have usually met bit for bit: the gap shrinks by ``1 - k`` per step, from
    5 % to below 2**-60 relative in ln(0.05 * 2**60) / -ln(1 - k) steps."""
    return int(math.ceil(math.log(0.05 * 2.0**60) / -math.log1p(-k))) + 8 if k < 1 else 1


def _ema_recursion(x: np.ndarray, seed: float, k: float, overlap: int | None = None) -> np.ndarray:
    """``[seed, then EMA.update's value after each close of x]``, bitwise, without a Python step per close.

    Why it is exact: the recursion is deterministic, so two runs that hold the same value at one index hold the
    same values ever after. The series is cut into blocks; block 0 runs from the true seed; every other block runs
    (all of them at once, one numpy operation per step doing the same IEEE operations as the scalar loop) from the
    approximate value ``overlap`` steps before its start, and is kept only if it holds exactly the previous block's
    exact value at the join; otherwise that block alone is recomputed from it by the plain loop. Checked block by
    block in order, every block is then the exact recursion. A block starts from the close before it (an EMA is
    within a few percent of recent closes); ``ema_overlap`` steps make the start forgotten.
    """
    m = len(x)
    w = max(1, ema_overlap(k) if overlap is None else overlap)
    size = max(4 * w, 512)
    out = np.empty(m + 1)
    out[0] = seed
    if m < 60 * (w + size):  # too few blocks for the numpy steps to beat a Python step per close
        out[1:] = _ema_loop(x, seed, k)
        return out
    out[1:size + 1] = _ema_loop(x[:size], seed, k)
    starts = np.arange(size, m, size)  # blocks 1..: x indices [s, min(s + size, m))
    first = starts - w
    steps = w + size
    idx = np.minimum(first[None, :] + np.arange(steps)[:, None], m - 1)
    xs = x[idx]
    v = x[first - 1].copy()  # a start near the EMA after x[first - 1]: that close
    runs = np.empty((steps, len(starts)))
    tmp = np.empty(len(starts))
    for t in range(steps):
        np.subtract(xs[t], v, out=tmp)
        tmp *= k
        v += tmp
        runs[t] = v
    for b, s in enumerate(starts.tolist()):
        e = min(s + size, m)
        if runs[w - 1, b] == out[s]:  # this block's value after x[s - 1] is the exact one: all later ones are
            out[s + 1:e + 1] = runs[w:w + e - s, b]
        else:
            out[s + 1:e + 1] = _ema_loop(x[s:e], float(out[s]), k)
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
        mean = _sum(xs) / n
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
                self._value = _sum(self._trs) / self.period / prev * 100.0
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
        return rs[-1] < self.ratio * (_sum(rs) / len(rs))
