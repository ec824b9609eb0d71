"""Market-data recordings: the candles the engine traded on and the market's trades, as Parquet under
``TRADEBAAS_HOME/data/``.

Why: research must be able to backtest on exactly what the engine saw (``tradebaas.backtest.data.load_recorded``),
and the exchange's chart history is not guaranteed to be kept or to equal what was streamed.

Layout: ``data/candles/<instrument>/<YYYY-MM-DD>.parquet`` (UTC day of the candle's start), columns ``timestamp``
(bar start, Unix ms, int64), ``open, high, low, close, volume`` (float64), sorted, one row per minute; and
``data/trades/<instrument>/<YYYY-MM-DD>.parquet``, the exchange's public trades (``trades.{inst}.100ms``), columns
``timestamp`` (ms), ``trade_id``, ``price``, ``amount``, ``direction`` (taker side), one row per trade id.

Durability: candles are buffered and flushed in batches (``batch`` candles, default 1: a candle a minute is
cheap). A flush rewrites each touched day file *atomically* (write a temporary file, fsync, ``os.replace``), so a
crash at any moment leaves either the old or the new day file, never a torn one; at most the unflushed buffer is
lost. A day file holds at most 1,440 rows, so rewriting it costs a few milliseconds.

Trades are flushed with the candles or every ``batch`` trades, in a worker thread; a busy day file grows to some
10^5 rows, which a rewrite still handles in tens of milliseconds, off the event loop.

When (``MarketRecorder``): a flush starts ``FLUSH_DELAY_S`` after a candle closed (or a batch of trades filled),
and at most once every ``FLUSH_EVERY_S`` of wall time. Why: the worker thread's Parquet work holds the GIL for
stretches, and a flush started at the candle's close competed with the orders that candle causes (the engine's
close -> ack p99 showed it); and a fast replay (``tradebaas sim --speed 600``: ten candles a second) rewrote the
day files ten times a second. In real time nothing changes but the quarter second: a candle a minute is written a
quarter second after it closed. A crash loses at most the candles and trades of the last ``FLUSH_EVERY_S``.

The pure part (``CandleBuffer``) has no I/O; ``CandleRecorder``/``TradeRecorder`` add the Parquet flush; the engine
service ``MarketRecorder`` feeds them from the live loop's events (``candles.<instrument>``, and the internal
``market_trades.<instrument>``) and runs the flushes in a worker thread. Recording never raises into the live loop:
a failed flush is logged and retried with the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from tradebaas.domain import Candle
from tradebaas.engine.process.app import EngineContext

log = logging.getLogger("tradebaas.engine.live.recorder")

DAY_MS = 86_400_000
#: Seconds (wall) between a candle's close and the flush it makes due: its orders go out first.
FLUSH_DELAY_S = 0.25
#: At most one flush per this many seconds of wall time (a fast replay closes many candles a second).
FLUSH_EVERY_S = 5.0
COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


def day_name(ts_ms: int) -> str:
    """``YYYY-MM-DD`` (UTC) of a timestamp: the day file a candle belongs to."""
    import datetime as dt

    return dt.datetime.fromtimestamp(ts_ms // DAY_MS * 86_400, dt.UTC).strftime("%Y-%m-%d")


def candles_dir(data_dir: Path, instrument: str) -> Path:
    return Path(data_dir) / "candles" / instrument


class CandleBuffer:
    """Closed candles per instrument waiting to be written; drops repeats (the same minute closed twice, e.g.
    by two strategies on one instrument, or a replay after a reconnect)."""

    def __init__(self) -> None:
        self.pending: dict[str, dict[int, Candle]] = defaultdict(dict)
        self.last_ts: dict[str, int] = {}

    def add(self, instrument: str, candle: Candle) -> bool:
        """Buffer ``candle``; False if that minute (or a later one) was already recorded for ``instrument``."""
        if candle.ts_ms <= self.last_ts.get(instrument, -1):
            return False
        self.pending[instrument][candle.ts_ms] = candle
        self.last_ts[instrument] = candle.ts_ms
        return True

    def size(self) -> int:
        return sum(len(v) for v in self.pending.values())

    def take(self) -> dict[str, list[Candle]]:
        """Everything pending, per instrument, oldest first; the buffer is empty afterwards."""
        out = {inst: [c[k] for k in sorted(c)] for inst, c in self.pending.items() if c}
        self.pending = defaultdict(dict)
        return out

    def put_back(self, batches: dict[str, list[Candle]]) -> None:
        """Return candles whose flush failed (they are written with the next flush)."""
        for inst, candles in batches.items():
            for c in candles:
                self.pending[inst].setdefault(c.ts_ms, c)


class CandleRecorder:
    """Buffers closed candles and flushes them to the day files under ``data_dir`` (``TRADEBAAS_HOME/data``)."""

    def __init__(self, data_dir: Path, batch: int = 1) -> None:
        self.data_dir = Path(data_dir)
        self.batch = max(1, int(batch))
        self.buffer = CandleBuffer()
        self.written = 0
        self.errors = 0
        self._lock = threading.Lock()  # the engine buffers on its loop and writes in a worker thread

    def add(self, instrument: str, candle: Candle) -> bool:
        """Buffer one closed candle without I/O; True when a batch is full and ``flush`` is due."""
        with self._lock:
            return self.buffer.add(instrument, candle) and self.buffer.size() >= self.batch

    def record(self, instrument: str, candle: Candle) -> None:
        """Add one closed candle; flush when a batch is full. Never raises (the live loop must go on)."""
        if self.add(instrument, candle):
            self.flush()

    def flush(self) -> int:
        """Write everything pending; returns the number of candles written (0 after a logged failure).

        Safe to call from a worker thread while the loop keeps adding (the engine does, so a Parquet rewrite
        never sits between a candle's close and the order it causes)."""
        with self._lock:
            batches = self.buffer.take()
        n = 0
        for inst, candles in batches.items():
            by_day: dict[str, list[Candle]] = defaultdict(list)
            for c in candles:
                by_day[day_name(c.ts_ms)].append(c)
            for day, rows in by_day.items():
                try:
                    write_day(candles_dir(self.data_dir, inst) / f"{day}.parquet", rows)
                    n += len(rows)
                except Exception as exc:  # noqa: BLE001 - disk full, permissions: log, keep, retry later
                    self.errors += 1
                    log.warning("recording %d candles of %s (%s) failed: %s", len(rows), inst, day, exc)
                    with self._lock:
                        self.buffer.put_back({inst: rows})
        self.written += n
        return n


def write_day(path: Path, candles: list[Candle]) -> None:
    """Merge ``candles`` into the day file at ``path`` (newer rows win) and replace it atomically."""
    import pandas as pd

    new = pd.DataFrame([(c.ts_ms, c.open, c.high, c.low, c.close, c.volume) for c in candles], columns=COLUMNS)
    merge_day_file(path, new, "timestamp", {"timestamp": "int64", **{c: "float64" for c in COLUMNS[1:]}})


ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


def prefer_system_arrow_pool() -> bool:
    """Have pyarrow allocate with the C library's ``malloc`` in this process (``ARROW_DEFAULT_MEMORY_POOL=system``);
    the engine calls it at start, before anything imports pyarrow. Returns whether the choice was made here (False:
    pyarrow is loaded already, its pool is fixed; or the variable is set already, which wins).

    Why (issue 15, memory): every flush reads a day file, merges and rewrites it, and the buffers of a day file grow
    all day. pyarrow's default pool (mimalloc) keeps what they freed: an engine trading two strategies grew ~50 MB
    over a simulated day, in steps as the day files grew (the same seen with the recorder alone, 155 -> 211 MB over
    30 flushes). With the system allocator the freed buffers go back to the OS: the recorder alone stays at ~136 MB
    over two simulated days. A variable, not ``pyarrow.set_memory_pool``: Parquet's C++ reader takes the default
    pool the variable chooses when pyarrow loads.
    """
    import sys

    if "pyarrow" in sys.modules or ARROW_POOL_ENV in os.environ:
        return False
    os.environ[ARROW_POOL_ENV] = "system"
    return True


def merge_day_file(path: Path, new: Any, key: str, dtypes: dict[str, str]) -> None:
    """Merge the rows of ``new`` into the Parquet day file at ``path`` (rows with the same ``key``: the newer wins),
    sorted by ``timestamp``, and replace the file atomically (temporary file, fsync, rename, fsync the folder)."""
    import pandas as pd

    if path.exists():
        new = pd.concat([pd.read_parquet(path), new], ignore_index=True)
    new = new.drop_duplicates(key, keep="last").sort_values(["timestamp", key], kind="stable")
    new = new.astype(dtypes).reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    new.to_parquet(tmp, index=False)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


TRADE_COLUMNS = ("timestamp", "trade_id", "price", "amount", "direction")
TRADE_DTYPES = {"timestamp": "int64", "trade_id": "str", "price": "float64", "amount": "float64", "direction": "str"}


def trades_dir(data_dir: Path, instrument: str) -> Path:
    return Path(data_dir) / "trades" / instrument


class TradeRecorder:
    """Buffers the exchange's public trades and flushes them to day files (``data/trades/<inst>/<day>.parquet``).

    Same durability and threading contract as ``CandleRecorder``: ``add`` on the event loop (no I/O), ``flush`` in a
    worker thread; a failed flush is logged and its rows are written with the next one.
    """

    def __init__(self, data_dir: Path, batch: int = 5_000) -> None:
        self.data_dir = Path(data_dir)
        self.batch = max(1, int(batch))
        self.pending: dict[str, list[tuple[int, str, float, float, str]]] = defaultdict(list)
        self.written = 0
        self.errors = 0
        self._lock = threading.Lock()

    def add(self, instrument: str, trades: list[dict[str, Any]]) -> bool:
        """Buffer Deribit public trade objects; True when a batch is full and ``flush`` is due."""
        rows = [(int(t["timestamp"]), str(t["trade_id"]), float(t["price"]), float(t["amount"]), str(t["direction"]))
                for t in trades if isinstance(t, dict) and "trade_id" in t and "timestamp" in t]
        with self._lock:
            self.pending[instrument].extend(rows)
            return sum(len(v) for v in self.pending.values()) >= self.batch

    def flush(self) -> int:
        """Write everything pending; returns the number of trades written."""
        import pandas as pd

        with self._lock:
            batches, self.pending = dict(self.pending), defaultdict(list)
        n = 0
        for inst, rows in batches.items():
            by_day: dict[str, list[tuple[int, str, float, float, str]]] = defaultdict(list)
            for row in rows:
                by_day[day_name(row[0])].append(row)
            for day, day_rows in by_day.items():
                try:
                    merge_day_file(trades_dir(self.data_dir, inst) / f"{day}.parquet",
                                   pd.DataFrame(day_rows, columns=TRADE_COLUMNS), "trade_id", TRADE_DTYPES)
                    n += len(day_rows)
                except Exception as exc:  # noqa: BLE001 - disk full, permissions: log, keep, retry later
                    self.errors += 1
                    log.warning("recording %d trades of %s (%s) failed: %s", len(day_rows), inst, day, exc)
                    with self._lock:
                        self.pending[inst].extend(day_rows)
        self.written += n
        return n


class MarketRecorder:
    """The engine service that records closed candles and public trades under ``TRADEBAAS_HOME/data``.

    It listens to what the live loop publishes, buffers on the loop (no I/O) and writes in a worker thread, one
    flush at a time, so a Parquet rewrite never sits between a candle's close and the order it causes. On stop it
    waits for a running flush and writes what is left.
    """

    name = "recorder"

    def __init__(self, engine: EngineContext, *, delay_s: float = FLUSH_DELAY_S, every_s: float = FLUSH_EVERY_S
                 ) -> None:
        self.engine = engine
        self.candles = CandleRecorder(engine.home.root / "data")  # closed candles -> data/candles/<inst>/<day>
        self.trades = TradeRecorder(engine.home.root / "data")  # public trades -> data/trades/<inst>/<day>
        self.delay_s = delay_s
        self.every_s = every_s
        self._flush: asyncio.Future[int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._again = False  # something became due while a flush ran: schedule one more after it
        self._last_flush = float("-inf")
        self._remove_listener: Any = None

    async def start(self) -> None:
        self._remove_listener = self.engine.add_listener(self._on_event)

    async def stop(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flush is not None:
            with contextlib.suppress(Exception):
                await self._flush
        self._write()

    def _on_event(self, channel: str, data: Any) -> None:
        if channel.startswith("candles."):
            candle = Candle(int(data["ts_ms"]), float(data["open"]), float(data["high"]), float(data["low"]),
                            float(data["close"]), float(data["volume"]))
            due = self.candles.add(channel.removeprefix("candles."), candle)
        elif channel.startswith("market_trades."):
            due = self.trades.add(channel.removeprefix("market_trades."), list(data or []))
        else:
            return
        if due:
            self._schedule()

    def _schedule(self) -> None:
        """A flush ``delay_s`` from now, or when ``every_s`` since the last one has passed, whichever is later."""
        if self._timer is not None or (self._flush is not None and not self._flush.done()):
            self._again = self._timer is None
            return
        loop = asyncio.get_running_loop()
        delay = max(self.delay_s, self._last_flush + self.every_s - loop.time())
        self._timer = loop.call_later(delay, self._start_flush)

    async def flush_now(self) -> int:
        """Write everything buffered so far and return once it is on disk (the number of rows written).

        For readers of the recordings inside the engine (``strategy.compare``): without it they see the recordings
        as of the last paced flush, up to ``every_s`` behind the live loop (minutes of market in a fast replay).
        Still one flush at a time: a running one is waited for, a scheduled one is taken over."""
        while self._flush is not None and not self._flush.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flush)
        if self._timer is not None:
            self._timer.cancel()
        return await asyncio.shield(self._start_flush())

    def _start_flush(self) -> asyncio.Future[int]:
        self._timer = None
        self._last_flush = asyncio.get_running_loop().time()
        self._flush = flush = asyncio.ensure_future(asyncio.to_thread(self._write))
        flush.add_done_callback(self._flushed)
        return flush

    def _flushed(self, _: Any) -> None:
        if self._again and self._remove_listener is not None:
            self._again = False
            self._schedule()

    def _write(self) -> int:
        return self.candles.flush() + self.trades.flush()

