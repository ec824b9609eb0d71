"""Razor's indicators over whole arrays at once, bitwise equal to the incremental ones in ``indicators.py``.

Why bitwise: Razor's decisions compare indicator values with thresholds (RSI < 40, volatility in [0.08, 0.6]), so
a value one ulp off could flip a decision, and the array backtest must make exactly the trades of the
candle-by-candle run and of the live runner. Every function here repeats the incremental class's float
operations in the same order, element-wise over the candles: a window sum is accumulated column by column from
the oldest element to the newest (``_window`` with ``np.add``), as the incremental class's left-to-right loop.
tests/unit/test_indicator_arrays.py holds every one to ``array == incremental`` on real and random candles.

Conventions, as the incremental classes: element ``i`` is the value after candle ``i`` closed; NaN (float
series) or False (boolean series) until ready.
"""

from __future__ import annotations

import numpy as np

from tradebaas.strategies.indicators import Volatility


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype="float64")


def _window(x: np.ndarray, w: int, combine: np.ufunc) -> np.ndarray:
    """``out[j]`` = ``x[j]`` combined (``np.add``, ``np.maximum``, ``np.minimum``) with ``x[j+1]`` ... ``x[j+w-1]``,
    left to right (the window ending at ``j + w - 1``); length ``len(x) - w + 1``. One vector operation per column:
    faster than a strided reduction for the short windows used here, and a sum adds in the incremental class's
    order, so the floats are the same."""
    m = len(x) - w + 1
    acc = x[:m].copy()
    for k in range(1, w):
        combine(acc, x[k:k + m], out=acc)
    return acc


def rsi_array(closes: np.ndarray, period: int = 14) -> np.ndarray:
    """``indicators.RSI(period)``: simple averages of the last ``period`` close-to-close gains and losses."""
    c = _f64(closes)
    n = len(c)
    out = np.full(n, np.nan)
    if n < period + 1:
        return out
    d = c[1:] - c[:-1]
    gains = np.where(d > 0, d, 0.0)  # adding 0.0 leaves a sum unchanged: the same as skipping the element
    losses = np.where(d > 0, 0.0, d)
    gain = np.zeros(n - period)
    loss = np.zeros(n - period)
    for k in range(period):
        gain += gains[k:k + n - period]
        loss -= losses[k:k + n - period]
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 100.0 - 100.0 / (1.0 + (gain / period) / (loss / period))
    out[period:] = np.where(loss == 0, 100.0, value)
    return out


def volatility_array(closes: np.ndarray, window: int = 20) -> np.ndarray:
    """``indicators.Volatility(window)``: ``max(pstdev/mean, (max-min)/mean) * 100``, floored; fewer closes at
    the start (the first ``window - 1`` values come from the incremental class itself)."""
    c = _f64(closes)
    n = len(c)
    out = np.full(n, np.nan)
    head = Volatility(window)
    for i, x in enumerate(c[:window - 1].tolist()):
        head.update(x)
        v = head.value
        out[i] = np.nan if v is None else v
    if n < window:
        return out
    m = n - window + 1
    mean = _window(c, window, np.add) / window
    var = np.zeros(m)
    for k in range(window):
        dev = c[k:k + m] - mean
        var += dev * dev
    with np.errstate(divide="ignore", invalid="ignore"):
        sd_pct = np.sqrt(var / window) / mean * 100.0
        range_pct = (_window(c, window, np.maximum) - _window(c, window, np.minimum)) / mean * 100.0
    value = np.maximum(np.maximum(sd_pct, range_pct), Volatility.FLOOR)
    out[window - 1:] = np.where(mean == 0, Volatility.FLOOR, value)
    return out


def momentum_array(closes: np.ndarray, lookback: int = 5) -> np.ndarray:
    """``indicators.Momentum(lookback)``: percent change from the close ``lookback - 1`` candles back."""
    c = _f64(closes)
    out = np.full(len(c), np.nan)
    if len(c) >= lookback:
        back = c[:len(c) - lookback + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[lookback - 1:] = (c[lookback - 1:] - back) / back * 100.0
    return out


def atr_pct_array(high: np.ndarray, low: np.ndarray, closes: np.ndarray, period: int = 14) -> np.ndarray:
    """``indicators.ATRPercent(period)``: the mean of the last ``period`` true ranges over the last close, %."""
    h, lo, c = _f64(high), _f64(low), _f64(closes)
    n = len(c)
    out = np.full(n, np.nan)
    if n < period + 1:
        return out
    prev = c[:-1]
    hh, ll = h[1:], lo[1:]
    tr = np.maximum(np.maximum(hh - ll, np.abs(hh - prev)), np.abs(ll - prev))
    with np.errstate(divide="ignore", invalid="ignore"):
        out[period:] = _window(tr, period, np.add) / period / c[period:] * 100.0
    return out


def pullback_array(closes: np.ndarray, fraction: float = 0.15, window: int = 10,
                   min_closes: int = 20) -> np.ndarray:
    """``indicators.Pullback``: the last ``window`` closes moved and retraced at least ``fraction`` of it."""
    c = _f64(closes)
    n = len(c)
    out = np.zeros(n, dtype=bool)
    first = max(min_closes, window) - 1
    if n <= first:
        return out
    tail = c[first - window + 1:]
    start, end = tail[:len(tail) - window + 1], c[first:]
    move = end - start
    hi, lo = _window(tail, window, np.maximum), _window(tail, window, np.minimum)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = (hi - end) / (hi - start) >= fraction
        down = (end - lo) / (start - lo) >= fraction
    big = ~(np.abs(move) < 0.001 * start)
    out[first:] = big & np.where(move > 0, up, down)
    return out


def compression_array(high: np.ndarray, low: np.ndarray, window: int = 12, ratio: float = 0.6) -> np.ndarray:
    """``indicators.Compression``: the last candle's range is below ``ratio`` times the mean of the last
    ``window`` ranges."""
    r = _f64(high) - _f64(low)
    n = len(r)
    out = np.zeros(n, dtype=bool)
    if n >= window:
        out[window - 1:] = r[window - 1:] < ratio * (_window(r, window, np.add) / window)
    return out
