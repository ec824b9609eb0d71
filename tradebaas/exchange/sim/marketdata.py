"""Pure market data for the simulator: recorded candles replayed as ticks, the tick sample, a synthetic walk.

Why a tick stream from 1-minute candles: triggers, limits and tickers need prices between candle closes, and a
backtest over the same candles must see the same extremes *in the same order*. The ticks follow
``fillmodel.candle_path`` (open, the nearer extreme, the other extreme, close), the path the backtester's
``candle_exit`` walks, so both meet a position's brackets in the same order. Every tick of a candle lies inside its
OHLC, and the same candle always gives the same ticks (no randomness), so a replay is reproducible. Candle files
load through ``tradebaas.backtest.data`` (one reader, one normalisation for both); the tick sample and the
synthetic walk are the simulator's own. Nothing here touches a socket, a clock or the file system except the
explicit loaders.

Units: ``ts_ms`` Unix milliseconds of the *simulated* clock, prices in USD per BTC, ``amount_btc`` in BTC.
"""

from __future__ import annotations

import bisect
import gzip
import io
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tradebaas.domain import Candle
from tradebaas.fillmodel import candle_path
from tradebaas.instruments import Instrument

if TYPE_CHECKING:
    import pandas as pd

MINUTE_MS = 60_000
TICKS_PER_MINUTE = 12
TICK_STEP_MS = MINUTE_MS // TICKS_PER_MINUTE
# Waypoints of the path inside a minute: open at 0 s, first extreme at 15 s, second at 40 s, close at 55 s.
_WAYPOINTS_MS = (0, 15_000, 40_000, 55_000)
TICK_SAMPLE = "binance_usdm_btcusdt_20240808_raw_feed.gz"
WARMUP_MINUTES = 300
RESOLUTIONS_MIN: dict[str, int] = {
    "1": 1, "3": 3, "5": 5, "10": 10, "15": 15, "30": 30, "60": 60, "120": 120, "180": 180, "360": 360,
    "720": 720, "1D": 1440,
}


@dataclass(slots=True, frozen=True)
class PriceTick:
    """One market event on the BTC/USD reference price; ``amount_btc == 0`` means a quote-only update.

    ``bid``/``ask`` are the recorded best quotes when the source has them (the tick sample), else ``None`` and
    the quote is derived from the price and the instrument's tick size. ``seq`` is the tick's position in the
    whole stream, so trade sequence numbers survive a restart unchanged. ``continuous``: the path came here from
    the previous tick through every price in between (ticks of a candle after its open), so a stop crossed on
    the way fills at its trigger, as a backtest over the candle assumes; recorded ticks and opens are jumps.
    """

    ts_ms: int
    price: float
    amount_btc: float
    side: str  # taker side of the trade: "buy" | "sell"
    seq: int
    bid: float | None = None
    ask: float | None = None
    continuous: bool = False


@dataclass(slots=True, frozen=True)
class Quote:
    """What one instrument shows after a tick (fields of ``MarketTick`` and of the ticker)."""

    last_price: float
    mark_price: float
    index_price: float
    best_bid: float
    best_ask: float


class Candles:
    """1-minute OHLCV bars as numpy arrays, sorted by bar start (``ts_ms``)."""

    __slots__ = ("ts_ms", "open", "high", "low", "close", "volume")

    def __init__(self, ts_ms: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                 v: np.ndarray) -> None:
        order = np.argsort(ts_ms, kind="stable")
        self.ts_ms = ts_ms.astype(np.int64)[order]
        self.open = o.astype(float)[order]
        self.high = h.astype(float)[order]
        self.low = lo.astype(float)[order]
        self.close = c.astype(float)[order]
        self.volume = v.astype(float)[order]

    def __len__(self) -> int:
        return len(self.ts_ms)

    def index_at(self, ts_ms: int) -> int:
        """Index of the first bar that starts at or after ``ts_ms``."""
        return int(np.searchsorted(self.ts_ms, ts_ms, side="left"))

    def row(self, i: int) -> tuple[int, float, float, float, float, float]:
        return (int(self.ts_ms[i]), float(self.open[i]), float(self.high[i]), float(self.low[i]),
                float(self.close[i]), float(self.volume[i]))


def candle_ticks(ts_ms: int, o: float, h: float, lo: float, c: float, volume_btc: float,
                 seq0: int) -> list[PriceTick]:
    """``TICKS_PER_MINUTE`` deterministic ticks inside one candle, at fixed 5 s offsets from its start.

    The ticks follow ``fillmodel.candle_path`` with its waypoints at 0, 15, 40 and 55 s (each waypoint is a tick,
    so both extremes are visited exactly), linear in between. Every price is within [low, high]; the first is the
    open, the last the close; the candle's volume is spread evenly over the ticks.
    """
    points = candle_path(Candle(ts_ms, o, h, lo, c, volume_btc))
    amount = volume_btc / TICKS_PER_MINUTE
    out: list[PriceTick] = []
    prev = o
    for j in range(TICKS_PER_MINUTE):
        off = j * TICK_STEP_MS
        k = 0
        while k < 2 and off > _WAYPOINTS_MS[k + 1]:
            k += 1
        t0, t1 = _WAYPOINTS_MS[k], _WAYPOINTS_MS[k + 1]
        frac = min(1.0, (off - t0) / (t1 - t0))
        price = points[k] + (points[k + 1] - points[k]) * frac
        price = min(h, max(lo, round(price, 2)))
        side = "buy" if price > prev or (price == prev and c >= o) else "sell"
        out.append(PriceTick(ts_ms + off, price, amount, side, seq0 + j, continuous=j > 0))
        prev = price
    return out


class MarketData:
    """A market data source: 1-minute history for charts plus a deterministic tick stream.

    ``ticks_from(ts_ms)`` yields every tick with ``ts_ms`` at or after the given time, in order; the same source
    always yields the same ticks. ``end_ms`` is the time of the last tick (the replay stops there).
    """

    def __init__(self, candles: Candles, ticks: list[PriceTick] | None = None, name: str = "") -> None:
        if len(candles) == 0:
            raise ValueError("market data has no bars")
        self.candles = candles
        self.name = name
        self._ticks = ticks  # recorded ticks (tick sample); None = derive from candles
        self._tick_ts = [t.ts_ms for t in ticks] if ticks is not None else None

    @property
    def start_ms(self) -> int:
        if self._ticks:
            return self._ticks[0].ts_ms
        return int(self.candles.ts_ms[0])

    @property
    def end_ms(self) -> int:
        if self._ticks:
            return self._ticks[-1].ts_ms
        return int(self.candles.ts_ms[-1]) + _WAYPOINTS_MS[-1]

    def shifted(self, offset_ms: int) -> MarketData:
        """The same market with every timestamp moved by ``offset_ms`` (``--clock present``); prices, volumes and
        sequence numbers unchanged. ``offset_ms`` must be a whole number of minutes, so bars stay on their minute
        boundaries and the ticks inside them where they were."""
        if offset_ms % MINUTE_MS:
            raise ValueError("a clock offset must be a whole number of minutes")
        c = self.candles
        candles = Candles(c.ts_ms + offset_ms, c.open, c.high, c.low, c.close, c.volume)
        ticks = None if self._ticks is None else [
            PriceTick(t.ts_ms + offset_ms, t.price, t.amount_btc, t.side, t.seq, t.bid, t.ask, t.continuous)
            for t in self._ticks]
        return MarketData(candles, ticks, self.name)

    def default_start_ms(self) -> int:
        """Data start plus ``WARMUP_MINUTES`` of history (less for short data), on a minute boundary."""
        span = self.end_ms - self.start_ms
        warm = min(WARMUP_MINUTES * MINUTE_MS, span // 2)
        return (self.start_ms + warm) // MINUTE_MS * MINUTE_MS

    def ticks_from(self, ts_ms: int) -> Iterator[PriceTick]:
        if self._ticks is not None:
            assert self._tick_ts is not None
            yield from self._ticks[bisect.bisect_left(self._tick_ts, ts_ms):]
            return
        c = self.candles
        i = max(0, c.index_at(ts_ms) - 1)
        for k in range(i, len(c)):
            t, o, h, lo, cl, v = c.row(k)
            for tick in candle_ticks(t, o, h, lo, cl, v, k * TICKS_PER_MINUTE + 1):
                if tick.ts_ms >= ts_ms:
                    yield tick

    def last_tick_before(self, ts_ms: int) -> PriceTick | None:
        """The last tick strictly before ``ts_ms`` (the market state a restart resumes from)."""
        if self._ticks is not None:
            assert self._tick_ts is not None
            i = bisect.bisect_left(self._tick_ts, ts_ms)
            return self._ticks[i - 1] if i > 0 else None
        c = self.candles
        i = c.index_at(ts_ms)
        for k in (i, i - 1):
            if 0 <= k < len(c):
                t, o, h, lo, cl, v = c.row(k)
                before = [x for x in candle_ticks(t, o, h, lo, cl, v, k * TICKS_PER_MINUTE + 1) if x.ts_ms < ts_ms]
                if before:
                    return before[-1]
        return None


def quote_for(tick: PriceTick, inst: Instrument) -> Quote:
    """The instrument's quote for a tick: last on the tick grid, a one-tick spread, mark = index = the price.

    The aggressor side decides which side of the spread the trade printed on (a buy prints at the ask).
    Recorded quotes are widened outwards to the instrument's tick grid; a recorded empty side stays 0 (no price).
    """
    step = inst.tick_size
    last = round_to_tick(tick.price, step)
    if tick.bid is not None and tick.ask is not None:
        # A recorded empty side (0 or less) stays empty: 0 is "no price" (Deribit's own convention).
        bid = _clean(math.floor(tick.bid / step + 1e-9) * step) if tick.bid > 0 else 0.0
        ask = _clean(math.ceil(tick.ask / step - 1e-9) * step) if tick.ask > 0 else 0.0
        if bid and ask and ask <= bid:
            ask = _clean(bid + step)
    elif tick.side == "buy":
        ask, bid = last, _clean(last - step)
    else:
        bid, ask = last, _clean(last + step)
    index = round(tick.price, 2)
    return Quote(last, index, index, bid, ask)


_TICK_DECIMALS: dict[float, int] = {}


def round_to_tick(value: float, step: float) -> float:
    """``Instrument.round_price`` (nearest multiple, half away from zero, noise-free), with the step's decimals
    cached: it runs several times per tick on the feed path, where recomputing them showed in the profile."""
    d = _TICK_DECIMALS.get(step)
    if d is None:
        text = f"{step:.12f}".rstrip("0")
        d = _TICK_DECIMALS[step] = (len(text.split(".")[1]) if "." in text else 0) + 2
    if not value:
        return 0.0
    return math.copysign(round(math.floor(abs(value) / step + 0.5) * step, d), value)


def _clean(x: float) -> float:
    return round(x, 8)


def synthetic(seed: int, minutes: int = 30 * 1440, start_ms: int = 1_735_689_600_000,
              price0: float = 100_000.0, sigma_per_minute: float = 0.0008) -> MarketData:
    """A seeded geometric random walk as 1-minute candles (default 30 days from 2025-01-01 UTC).

    Each candle is built from 12 sub-steps so its OHLC has realistic wicks; the tick stream then comes from the
    candles like any recorded data, so synthetic and recorded replays behave alike.
    """
    rng = random.Random(seed)
    ts = np.arange(minutes, dtype=np.int64) * MINUTE_MS + start_ms
    o = np.empty(minutes)
    h = np.empty(minutes)
    lo = np.empty(minutes)
    c = np.empty(minutes)
    v = np.empty(minutes)
    p = price0
    sub = sigma_per_minute / math.sqrt(TICKS_PER_MINUTE)
    for i in range(minutes):
        o[i] = round(p)
        hi = low = float(o[i])
        for _ in range(TICKS_PER_MINUTE):
            p *= math.exp(rng.gauss(0.0, sub))
            hi, low = max(hi, p), min(low, p)
        c[i] = round(p)
        h[i], lo[i] = math.ceil(hi), math.floor(low)
        v[i] = round(rng.expovariate(1.0), 8)
    return MarketData(Candles(ts, o, h, lo, c, v), name=f"synthetic:{seed}")


def candles_from_frame(df: pd.DataFrame) -> Candles:
    """A normalised candle frame (``tradebaas.backtest.data``: UTC index of bar starts, OHLCV) -> ``Candles``."""
    idx = df.index
    ts_ms = (idx.as_unit("ms").asi8 if idx.unit != "ms" else idx.asi8).astype(np.int64)
    return Candles(ts_ms, *(df[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close", "volume")))


def load_candles(path: Path) -> MarketData:
    """A candle CSV (optionally gzipped) or Parquet file, read by ``backtest.data.load_candles``.

    The same reader as a backtest's: the same column and timestamp rules (Unix s or ms, ISO times, a datetime
    index), duplicates and order resolved the same way, and ``DataError`` (a ``UserError``) for what cannot be used.
    """
    from tradebaas.backtest.data import load_candles as read_candle_file  # pandas: only when a file is loaded

    return MarketData(candles_from_frame(read_candle_file(path)), name=str(path))


def load_tick_sample(path: Path) -> MarketData:
    """The Binance raw feed format: ``<local_ns> <json>`` lines with ``@trade`` and ``@bookTicker`` streams.

    Event time is the exchange's ``T``/``E`` (ms), not the collector's clock. Trades become trade ticks with the
    current best quotes; book tickers become quote-only ticks. 1-minute candles are built from the trades.
    """
    ticks: list[PriceTick] = []
    bid = ask = None
    last: float | None = None
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        for line in fh:
            _, _, text = line.partition(" ")
            msg = json.loads(text)
            stream = msg.get("stream", "")
            d = msg.get("data") or {}
            if stream.endswith("@trade"):
                last = float(d["p"])
                side = "sell" if d.get("m") else "buy"
                ticks.append(PriceTick(int(d.get("T") or d["E"]), last, float(d["q"]), side, 0, bid, ask))
            elif stream.endswith("@bookTicker"):
                bid, ask = float(d["b"]), float(d["a"])
                ref = last if last is not None else (bid + ask) / 2
                ticks.append(PriceTick(int(d.get("T") or d["E"]), ref, 0.0, "buy", 0, bid, ask))
    if not ticks:
        raise ValueError(f"{path}: no trades or book tickers found")
    ticks.sort(key=lambda t: t.ts_ms)
    ticks = [PriceTick(t.ts_ms, t.price, t.amount_btc, t.side, i + 1, t.bid, t.ask) for i, t in enumerate(ticks)]
    return MarketData(_candles_from_ticks(ticks), ticks, name=str(path))


def _candles_from_ticks(ticks: list[PriceTick]) -> Candles:
    bars: dict[int, list[float]] = {}
    for t in ticks:
        m = t.ts_ms // MINUTE_MS * MINUTE_MS
        b = bars.get(m)
        if b is None:
            bars[m] = [t.price, t.price, t.price, t.price, t.amount_btc]
        else:
            b[1] = max(b[1], t.price)
            b[2] = min(b[2], t.price)
            b[3] = t.price
            b[4] += t.amount_btc
    keys = sorted(bars)
    arr = np.array([bars[k] for k in keys], dtype=float)
    return Candles(np.array(keys, dtype=np.int64), arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4])


def load(path: str | Path | None) -> MarketData:
    """Load ``--data``: a candle CSV/Parquet or the tick-sample feed; ``None`` = the bundled Bitstamp candles."""
    if path is None:
        from tradebaas.backtest.data import default_path

        return load_candles(default_path())
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"market data file not found: {p}")
    if _looks_like_tick_sample(p):
        return load_tick_sample(p)
    return load_candles(p)


def _looks_like_tick_sample(p: Path) -> bool:
    if p.suffix == ".parquet":
        return False
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as fh:
            head = io.BytesIO(fh.read(256)).getvalue()
    except OSError:
        return False
    first = head.split(b"\n", 1)[0]
    return b" {" in first and first.split(b" ", 1)[0].isdigit()


# ---- charts -------------------------------------------------------------------------------------------------

def parse_resolution(value: object) -> int:
    """Minutes of a Deribit chart resolution (``1``..``720`` or ``"1D"``; strings or numbers)."""
    key = str(value).strip().upper()
    if key.endswith(".0"):
        key = key[:-2]
    if key in ("D", "1D"):
        return 1440
    if key not in RESOLUTIONS_MIN:
        raise ValueError(f"unsupported resolution {value!r}")
    return RESOLUTIONS_MIN[key]


class Bar:
    """A forming or finished OHLCV bar (volume BTC, cost USD)."""

    __slots__ = ("tick", "open", "high", "low", "close", "volume", "cost")

    def __init__(self, tick: int, o: float, h: float, lo: float, c: float, v: float, cost: float) -> None:
        self.tick, self.open, self.high, self.low, self.close, self.volume, self.cost = tick, o, h, lo, c, v, cost

    def add(self, price: float, amount_btc: float) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += amount_btc
        self.cost += amount_btc * price

    def merge(self, other: Bar) -> None:
        self.high = max(self.high, other.high)
        self.low = min(self.low, other.low)
        self.close = other.close
        self.volume += other.volume
        self.cost += other.cost

    def to_deribit(self) -> dict[str, float | int]:
        return {"tick": self.tick, "open": self.open, "high": self.high, "low": self.low, "close": self.close,
                "volume": round(self.volume, 8), "cost": round(self.cost, 2)}


class ChartBook:
    """History up to the simulated now: finished 1-minute source bars plus the minute forming from live ticks.

    The forming minute is built only from ticks already emitted, so no bar ever shows the future.
    """

    def __init__(self, data: MarketData) -> None:
        self.c = data.candles
        self.forming: Bar | None = None  # the current 1-minute bar from emitted ticks
        self._live: dict[int, Bar] = {}  # resolution (min) -> its forming bar, kept up to date per tick

    def on_tick(self, tick: PriceTick) -> None:
        m = tick.ts_ms // MINUTE_MS * MINUTE_MS
        if self.forming is None or self.forming.tick != m:
            self.forming = Bar(m, tick.price, tick.price, tick.price, tick.price, 0.0, 0.0)
        self.forming.add(tick.price, tick.amount_btc)
        for res, bar in list(self._live.items()):
            if bar.tick == tick.ts_ms // (res * MINUTE_MS) * (res * MINUTE_MS):
                bar.add(tick.price, tick.amount_btc)
            else:
                del self._live[res]  # a new bucket: rebuilt from history on the next current_bar()

    def bars(self, start_ms: int, end_ms: int, res_min: int, now_ms: int) -> list[Bar]:
        """Bars of ``res_min`` minutes whose start lies in [start_ms, end_ms], using data up to ``now_ms``."""
        res_ms = res_min * MINUTE_MS
        end_ms = min(end_ms, now_ms)
        lo_ms = start_ms // res_ms * res_ms
        c = self.c
        i0 = c.index_at(lo_ms)
        forming = self.forming if self.forming is not None and self.forming.tick <= now_ms else None
        limit = forming.tick if forming is not None else now_ms - MINUTE_MS + 1
        i1 = c.index_at(min(end_ms + 1, limit) if forming is None else limit)
        out: dict[int, Bar] = {}
        ts, o, h, lo, cl, v = c.ts_ms[i0:i1], c.open[i0:i1], c.high[i0:i1], c.low[i0:i1], c.close[i0:i1], c.volume[i0:i1]
        for k in range(len(ts)):
            b = int(ts[k]) // res_ms * res_ms
            one = Bar(b, float(o[k]), float(h[k]), float(lo[k]), float(cl[k]), float(v[k]), float(v[k] * cl[k]))
            cur = out.get(b)
            if cur is None:
                out[b] = one
            else:
                cur.merge(one)
        if forming is not None:
            b = forming.tick // res_ms * res_ms
            one = Bar(b, forming.open, forming.high, forming.low, forming.close, forming.volume, forming.cost)
            cur = out.get(b)
            if cur is None:
                out[b] = one
            else:
                cur.merge(one)
        return [out[k] for k in sorted(out) if start_ms <= k + res_ms - 1 and k <= end_ms]

    def current_bar(self, res_min: int, now_ms: int) -> Bar | None:
        """The bar of ``res_min`` forming at ``now_ms`` (what ``chart.trades`` re-sends)."""
        res_ms = res_min * MINUTE_MS
        start = now_ms // res_ms * res_ms
        live = self._live.get(res_min)
        if live is not None and live.tick == start:
            return live
        bars = self.bars(start, now_ms, res_min, now_ms)
        if not bars:
            return None
        self._live[res_min] = bars[-1]
        return bars[-1]

    def stats_24h(self, now_ms: int) -> dict[str, float]:
        """Deribit ticker ``stats``: volume (BTC), high, low, price_change (%) over the last 24 h of bars."""
        c = self.c
        i1 = c.index_at(now_ms - MINUTE_MS + 1)
        i0 = c.index_at(now_ms - 1440 * MINUTE_MS)
        if i1 <= i0:
            return {"volume": 0.0, "volume_usd": 0.0, "high": None, "low": None, "price_change": 0.0}  # type: ignore[dict-item]
        vol = float(c.volume[i0:i1].sum())
        first, last = float(c.open[i0]), float(c.close[i1 - 1])
        return {"volume": round(vol, 8), "volume_usd": round(float((c.volume[i0:i1] * c.close[i0:i1]).sum()), 2),
                "high": float(c.high[i0:i1].max()), "low": float(c.low[i0:i1].min()),
                "price_change": round((last - first) / first * 100.0, 4) if first else 0.0}
