"""Array fast paths for strategies whose whole run is a function of per-candle arrays (``ema_cross``).

Why: the event-driven loop (``backtester._run``) pays ~2 µs of Python per candle, which makes sweeps of 1,000
parameter sets over 500,000 candles take ~25 minutes. A strategy that is *always in the market and flips at the
next open* (no brackets, no cooldown, no daily limit) has trades that follow from one array, ``want`` (+1 long,
-1 short, 0 no opinion, per candle), so the whole backtest is a few numpy operations.

It is not a second fill model: prices, fees and PnL come from the very ``tradebaas.fillmodel`` functions the
event-driven loop calls (``apply_slippage``, ``fee``, ``realized_pnl``), applied to arrays (they are written
with operators that numpy broadcasts, doing the same IEEE operations in the same order, so the numbers are
bitwise those of the loop), and sizing from ``Instrument.amount_for_notional``. tests/unit/test_backtest_vectorized.py
holds the fast path to trade-for-trade equality with the event-driven run.

``ArrayCache`` holds the per-candle work of one data set (EMAs per period, sizes per price) so a sweep computes
each EMA once per data set and worker, not once per parameter set.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tradebaas import fillmodel
from tradebaas.domain import Direction, Liquidity, Side
from tradebaas.instruments import Instrument
from tradebaas.strategies.base import Decision, PositionView
from tradebaas.strategies.indicators import ema_array
from tradebaas.strategies.series import CandleArrays, Series

#: Cap on the arrays one ``ArrayCache`` keeps (bytes); least recently used ones are dropped beyond it.
DEFAULT_CACHE_BYTES = 512 * 1024 * 1024


class ArrayCache:
    """Per-data-set arrays reused across parameter sets: EMAs (fast and exact) per period, the declared series of
    ``ArrayStrategy`` classes per ``Series.key``, order sizes per candle.

    Bound to one candle frame (the full frame, warm-up included); neither may change afterwards. Built with
    ``for_frame`` from an already normalised frame, ``backtester.backtest`` also skips re-normalising that frame.
    Least-recently-used EMAs are dropped past ``max_bytes`` so a large grid cannot exhaust a worker's memory.
    Thread-safe (a Dask worker may run several grid points at once on one cache).
    """

    def __init__(self, closes: np.ndarray, max_bytes: int = DEFAULT_CACHE_BYTES,
                 frame: pd.DataFrame | None = None) -> None:
        self.closes = np.asarray(closes, dtype="float64")
        self.scale = float(np.nanmax(np.abs(self.closes))) if len(self.closes) else 0.0
        self.max_bytes = max_bytes
        #: The normalised candle frame these arrays were computed from (``None``: unknown, always re-load).
        self.frame = frame
        self._arrays: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._candles: CandleArrays | None = None
        self._amounts: dict[tuple[Instrument, float], np.ndarray] = {}
        self._lock = threading.RLock()

    @classmethod
    def for_frame(cls, candles: pd.DataFrame, max_bytes: int = DEFAULT_CACHE_BYTES) -> ArrayCache:
        """A cache for a frame that ``data.load_candles`` already normalised (a sweep's data)."""
        return cls(candles["close"].to_numpy(dtype="float64"), max_bytes, frame=candles)

    def candle_arrays(self) -> CandleArrays:
        """The frame's candles as arrays (computed once)."""
        with self._lock:
            if self._candles is None:
                if self.frame is None:
                    raise ValueError("this ArrayCache was made without its frame")
                self._candles = CandleArrays.from_frame(self.frame)
            return self._candles

    def series(self, series: Series, arrays: CandleArrays) -> np.ndarray:
        """``series.array(arrays)`` once per ``series.key`` (``arrays``: this cache's ``candle_arrays()``)."""
        key = ("series", series.key)
        with self._lock:
            arr = self._arrays.get(key)
            if arr is None:
                arr = self._keep(key, series.array(arrays))
            else:
                self._arrays.move_to_end(key)
            return arr

    def _keep(self, key: Hashable, arr: np.ndarray) -> np.ndarray:
        self._arrays[key] = arr
        while len(self._arrays) > 1 and sum(a.nbytes for a in self._arrays.values()) > self.max_bytes:
            self._arrays.popitem(last=False)
        return arr

    def ema(self, period: int, *, exact: bool = False) -> np.ndarray:
        """``ema_array(closes, period, exact=exact)``, computed once per period."""
        key = ("exact" if exact else "fast", int(period))
        with self._lock:
            return self._ema(key)

    def _ema(self, key: tuple[str, int]) -> np.ndarray:
        exact, period = key[0] == "exact", key[1]
        arr = self._arrays.get(key)
        if arr is None:
            arr = self._keep(key, ema_array(self.closes, int(period), exact=exact))
        else:
            self._arrays.move_to_end(key)
        return arr

    def amounts(self, instrument: Instrument, notional_usd: float, at: np.ndarray) -> np.ndarray:
        """``instrument.amount_for_notional(notional_usd, closes[i])`` for every candle index ``i`` in ``at``.

        The scalar method itself (sizing has one definition), called once per distinct price not yet sized and
        remembered per candle, so the parameter sets of a sweep after the first few only index an array.
        """
        with self._lock:
            return self._sizes(instrument, float(notional_usd), at)

    def _sizes(self, instrument: Instrument, notional_usd: float, at: np.ndarray) -> np.ndarray:
        key = (instrument, notional_usd)
        table = self._amounts.get(key)
        if table is None:
            table = self._amounts[key] = np.full(len(self.closes), np.nan)
        out = table[at]
        todo = np.isnan(out)
        if todo.any():
            prices, inverse = np.unique(self.closes[at[todo]], return_inverse=True)
            sized = sizes_for_sorted_prices(instrument, notional_usd, prices)
            out[todo] = sized[inverse]
            table[at[todo]] = out[todo]
        return out


def sizes_for_sorted_prices(instrument: Instrument, notional_usd: float, prices: np.ndarray) -> np.ndarray:
    """``instrument.amount_for_notional(notional_usd, p)`` for ascending positive ``prices``, with few calls.

    The amount is a step function of the price, non-increasing (linear: ``round_amount(notional / p)``, a
    monotone rounding of a monotone quotient; inverse: independent of the price). So where the two ends of a
    stretch of prices get the same amount, every price between them does too, and only the stretches that
    contain a step are split: ~steps x log2(n) calls of the scalar method instead of n (a whole BTC month at
    100 USD is one step: 2 calls for ~40,000 prices). Non-positive prices are sized one by one.
    """
    n = len(prices)
    out = np.empty(n)
    if n == 0:
        return out
    size = instrument.amount_for_notional
    if prices[0] <= 0:
        return np.array([size(notional_usd, p) for p in prices.tolist()])
    stack = [(0, n - 1, size(notional_usd, float(prices[0])), size(notional_usd, float(prices[-1])))]
    while stack:
        lo, hi, a_lo, a_hi = stack.pop()
        if a_lo == a_hi:
            out[lo:hi + 1] = a_lo
        elif hi - lo == 1:
            out[lo], out[hi] = a_lo, a_hi
        else:
            mid = (lo + hi) // 2
            a_mid = size(notional_usd, float(prices[mid]))
            stack.append((lo, mid, a_lo, a_mid))
            stack.append((mid, hi, a_mid, a_hi))
    return out


@dataclass
class VectorizedRun:
    """What a fast path returns to ``backtester.backtest``: the same pieces the event-driven ``_run`` returns."""

    #: One row per closed trade, the keys of the event-driven loop's trade dicts (``trades_frame`` normalises).
    trades: pd.DataFrame
    decisions: list[Decision] = field(default_factory=list)
    open_position: PositionView | None = None


def change_points(want: np.ndarray) -> np.ndarray:
    """Candles whose decision has intents, for an always-in-market flip strategy.

    The position at a decision is the one the previous decisions asked for (each fills at the next open, before
    the next decision), i.e. the last non-zero ``want`` so far; a decision acts when its non-zero ``want``
    differs from that (the first non-zero one enters from flat).
    """
    nz = np.flatnonzero(want)
    if not nz.size:
        return nz
    w = want[nz]
    keep = np.empty(len(w), dtype=bool)
    keep[0] = True
    np.not_equal(w[1:], w[:-1], out=keep[1:])
    return nz[keep]


def flip_trades(
    ts_ms: np.ndarray,
    opens: np.ndarray,
    closes: np.ndarray,
    want: np.ndarray,
    *,
    instrument: Instrument,
    notional_usd: float,
    slippage: float,
    strategy_id: str,
    cache: ArrayCache | None = None,
    exit_reason: str = "exit",
) -> tuple[pd.DataFrame, PositionView | None, np.ndarray]:
    """Trades of an always-in-market strategy that flips at the next open whenever ``want`` changes side.

    Semantics are the event-driven loop's for intents ``(Exit, Enter)`` (``(Enter,)`` from flat): both fill at
    the next candle's open with ``slippage`` against the taker and the taker fee; the entry is sized at the signal
    candle's close; a signal on the last candle never fills. Returns (trade rows, open position at the end,
    change points (signal candle indices, including an unfilled last one)). ``exit_reason`` is the reason the
    strategy's ``Exit`` gives (the loop records it, as the live engine does).
    """
    chg = change_points(want)
    n = len(ts_ms)
    filled = chg[chg + 1 < n]
    fill = filled + 1
    dirs = want[filled].astype(np.int64)
    m = len(filled)
    if cache is None:
        cache = ArrayCache(closes)
    amount = cache.amounts(instrument, notional_usd, filled)
    o = opens[fill]
    buy_px = fillmodel.apply_slippage(o, Side.BUY, slippage)
    sell_px = fillmodel.apply_slippage(o, Side.SELL, slippage)
    long_ = dirs > 0
    entry_px = np.where(long_, buy_px, sell_px)  # a long enters buying, a short selling
    taker = Liquidity.TAKER
    entry_fee = fillmodel.fee(instrument, amount, entry_px, taker)
    open_pos: PositionView | None = None
    if m:
        last = m - 1
        d = Direction.LONG if dirs[last] > 0 else Direction.SHORT
        open_pos = PositionView(d, float(amount[last]), float(entry_px[last]), None, None, int(ts_ms[fill[last]]),
                                f"bt-{m}")
    k = max(m - 1, 0)  # trade i closes at fill i + 1
    exit_px = np.where(long_[:k], sell_px[1:m], buy_px[1:m])
    amt = amount[:k]
    entry_k = entry_px[:k]
    pnl = fillmodel.realized_pnl(instrument, dirs[:k], amt, entry_k, exit_px)
    fees = entry_fee[:k] + fillmodel.fee(instrument, amt, exit_px, taker)
    ts_fill = ts_ms[fill]

    def text(values: Any) -> pd.Categorical:
        # categorical: ``trades_frame`` maps text values one by one, and a categorical maps its few categories
        return pd.Categorical(values) if k else pd.Categorical([], categories=[])

    rows = pd.DataFrame({
        "trade_id": [f"bt-{i}" for i in range(1, k + 1)],
        "strategy_id": text([strategy_id] * k),
        "instrument": text([instrument.name] * k),
        "direction": pd.Categorical.from_codes(long_[:k].astype(np.int8),
                                               [Direction.SHORT.value, Direction.LONG.value]),
        "entry_ts_ms": ts_fill[:k],
        "exit_ts_ms": ts_fill[1:m],
        "entry_price": entry_k,
        "exit_price": exit_px,
        "amount": amt,
        "pnl": pnl,
        "fees": fees,
        "exit_reason": text([exit_reason] * k),
        "currency": text([instrument.settlement_currency] * k),
    })
    return rows, open_pos, chg


def candle_arrays(candles: pd.DataFrame) -> dict[str, Any]:
    """ts (ms, int64), open and close as numpy arrays, the way ``backtester._run`` reads them."""
    idx = candles.index
    ts = (idx.as_unit("ms").asi8 if idx.unit != "ms" else idx.asi8).astype(np.int64)
    return {"ts": ts, "open": candles["open"].to_numpy(dtype="float64"),
            "close": candles["close"].to_numpy(dtype="float64")}
