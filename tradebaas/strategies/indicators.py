"""Incremental indicators, exactly as reference/razor.md defines them.

Each indicator takes one closed candle at a time (``update``) in O(1) (a fixed window of at most 20 values),
exposes ``value`` and ``ready``, and never looks at the forming candle. They run over the whole history (an EMA is
not recomputed over a window), so a backtest and a live session that saw the same candles agree exactly.
``value`` is ``None`` (or ``False`` for the boolean ones) until ``ready``.
"""

from __future__ import annotations

import math
from collections import deque


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


class RSI:
    """RSI with *simple* averages over the last ``period`` close-to-close differences; ready at period+1 closes.

    ``avg_loss == 0`` gives 100 (also when nothing moved at all), as the spec says.
    """

    __slots__ = ("period", "_diffs", "_prev", "value")

    def __init__(self, period: int = 14) -> None:
        self.period = period
        self._diffs: deque[float] = deque(maxlen=period)
        self._prev: float | None = None
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self.value is not None

    def update(self, close: float) -> float | None:
        if self._prev is not None:
            self._diffs.append(close - self._prev)
        self._prev = close
        if len(self._diffs) == self.period:
            gain = loss = 0.0
            for d in self._diffs:
                if d > 0:
                    gain += d
                else:
                    loss -= d
            n = self.period
            self.value = 100.0 if loss == 0 else 100.0 - 100.0 / (1.0 + (gain / n) / (loss / n))
        return self.value


class Volatility:
    """Volatility in percent over the last ``window`` closes (fewer at the start):
    ``max(pstdev/mean*100, (max-min)/mean*100)``, floored at 0.01; ready at 2 closes."""

    __slots__ = ("_closes", "value")

    FLOOR = 0.01

    def __init__(self, window: int = 20) -> None:
        self._closes: deque[float] = deque(maxlen=window)
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self.value is not None

    def update(self, close: float) -> float | None:
        xs = self._closes
        xs.append(close)
        n = len(xs)
        if n < 2:
            return None
        mean = sum(xs) / n
        if mean == 0:
            self.value = self.FLOOR
            return self.value
        var = 0.0
        for x in xs:
            var += (x - mean) * (x - mean)
        sd_pct = math.sqrt(var / n) / mean * 100.0
        range_pct = (max(xs) - min(xs)) / mean * 100.0
        self.value = max(sd_pct, range_pct, self.FLOOR)
        return self.value


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

    __slots__ = ("period", "_trs", "_prev", "value")

    def __init__(self, period: int = 14) -> None:
        self.period = period
        self._trs: deque[float] = deque(maxlen=period)
        self._prev: float | None = None
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self.value is not None

    def update(self, high: float, low: float, close: float) -> float | None:
        prev = self._prev
        if prev is not None:
            self._trs.append(max(high - low, abs(high - prev), abs(low - prev)))
        self._prev = close
        if len(self._trs) == self.period:
            self.value = sum(self._trs) / self.period / close * 100.0
        return self.value


class Pullback:
    """Whether the last ``window`` closes moved and then pulled back by at least ``fraction`` of the move.

    Needs ``min_closes`` (20) closes. ``move = end - start`` over the window; ``|move| < 0.001*start`` -> False;
    up move: ``(max - end)/(max - start) >= fraction``; down: ``(end - min)/(start - min) >= fraction``.
    """

    __slots__ = ("fraction", "min_closes", "count", "_closes", "value")

    def __init__(self, fraction: float = 0.15, window: int = 10, min_closes: int = 20) -> None:
        self.fraction = fraction
        self.min_closes = min_closes
        self.count = 0
        self._closes: deque[float] = deque(maxlen=window)
        self.value = False

    @property
    def ready(self) -> bool:
        return self.count >= self.min_closes

    def update(self, close: float) -> bool:
        xs = self._closes
        xs.append(close)
        self.count += 1
        if self.count < self.min_closes:
            self.value = False
            return False
        start, end = xs[0], close
        move = end - start
        if abs(move) < 0.001 * start:
            self.value = False
        elif move > 0:
            hi = max(xs)
            self.value = (hi - end) / (hi - start) >= self.fraction
        else:
            lo = min(xs)
            self.value = (end - lo) / (start - lo) >= self.fraction
        return self.value


class Compression:
    """The last candle's range ``h-l`` is below ``ratio`` times the mean range of the last ``window`` candles;
    ready at ``window`` candles."""

    __slots__ = ("ratio", "_ranges", "value")

    def __init__(self, window: int = 12, ratio: float = 0.6) -> None:
        self.ratio = ratio
        self._ranges: deque[float] = deque(maxlen=window)
        self.value = False

    @property
    def ready(self) -> bool:
        return len(self._ranges) == self._ranges.maxlen

    def update(self, high: float, low: float) -> bool:
        rs = self._ranges
        r = high - low
        rs.append(r)
        if len(rs) == rs.maxlen:
            self.value = r < self.ratio * (sum(rs) / len(rs))
        return self.value
