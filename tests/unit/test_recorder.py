"""The engine's candle recordings: buffering, atomic day files, and loading them back for backtests."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tradebaas.backtest.data import DataError, load_recorded
from tradebaas.domain import Candle
from tradebaas.engine.live.recorder import (
    CandleBuffer,
    CandleRecorder,
    MarketRecorder,
    day_name,
    prefer_system_arrow_pool,
    write_day,
)

INST = "BTC_USDC-PERPETUAL"
T0 = 1_736_553_540_000  # 2025-01-10 23:59 UTC


def c(i: int, price: float = 100.0) -> Candle:
    return Candle(T0 + i * 60_000, price, price + 1, price - 1, price + 0.5, 1.0 + i)


def test_buffer_drops_repeats_and_older_minutes() -> None:
    b = CandleBuffer()
    assert b.add(INST, c(0)) and b.add(INST, c(1))
    assert not b.add(INST, c(1)) and not b.add(INST, c(0))
    assert b.add("OTHER", c(0))
    assert b.size() == 3
    taken = b.take()
    assert [x.ts_ms for x in taken[INST]] == [c(0).ts_ms, c(1).ts_ms] and b.size() == 0


def test_day_name_is_the_utc_day_of_the_bar_start() -> None:
    assert day_name(c(0).ts_ms) == "2025-01-10" and day_name(c(1).ts_ms) == "2025-01-11"


def test_flushes_split_by_day_append_and_load_back(tmp_path: Path) -> None:
    rec = CandleRecorder(tmp_path / "data", batch=2)
    rec.record(INST, c(0))
    assert rec.written == 0  # still buffered
    rec.record(INST, c(1))  # batch full: two day files
    for i in range(2, 5):
        rec.record(INST, c(i))
    rec.flush()
    days = sorted(p.name for p in (tmp_path / "data" / "candles" / INST).iterdir())
    assert days == ["2025-01-10.parquet", "2025-01-11.parquet"]  # no temporary files left behind
    df = load_recorded(tmp_path, INST)
    assert len(df) == 5 and df.index.is_monotonic_increasing
    assert df.index[0] == pd.Timestamp(c(0).ts_ms, unit="ms", tz="UTC")
    assert df["volume"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    part = load_recorded(tmp_path, INST, start="2025-01-11T00:01Z", end="2025-01-11T00:02Z")
    assert len(part) == 2


def test_a_failed_flush_keeps_the_candles_for_the_next(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    rec = CandleRecorder(blocker)
    rec.record(INST, c(1))  # flush fails, logged, nothing raised
    assert rec.errors == 1 and rec.buffer.size() == 1
    blocker.unlink()
    assert rec.flush() == 1
    assert len(load_recorded(tmp_path, INST)) == 1


def test_load_recorded_without_files_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no recorded candles"):
        load_recorded(tmp_path, INST)


def _trade(i: int, ts: int) -> dict[str, object]:
    return {"trade_id": f"USDC-{i}", "timestamp": ts, "price": 100.0 + i, "amount": 0.01 * i, "direction": "buy"}


def test_public_trades_are_recorded_once_per_trade_id_by_day_and_load_back(tmp_path: Path) -> None:
    from tradebaas.backtest.data import load_recorded_trades
    from tradebaas.engine.live.recorder import TradeRecorder

    rec = TradeRecorder(tmp_path / "data", batch=3)
    assert not rec.add(INST, [_trade(1, T0), _trade(2, T0 + 30_000)])
    assert rec.add(INST, [_trade(2, T0 + 30_000), _trade(3, T0 + 90_000), {"junk": True}])  # batch full
    assert rec.flush() == 4
    rec.add(INST, [_trade(3, T0 + 90_000)])  # seen again after a reconnect: still one row
    rec.flush()
    days = sorted(p.name for p in (tmp_path / "data" / "trades" / INST).iterdir())
    assert days == ["2025-01-10.parquet", "2025-01-11.parquet"]
    df = load_recorded_trades(tmp_path, INST)
    assert list(df["trade_id"]) == ["USDC-1", "USDC-2", "USDC-3"]
    assert df.index.is_monotonic_increasing and str(df.index.tz) == "UTC"


def test_a_failed_trade_flush_keeps_the_rows_for_the_next_one(tmp_path: Path) -> None:
    from tradebaas.engine.live.recorder import TradeRecorder

    blocker = tmp_path / "data"
    blocker.write_text("not a folder")  # the recordings cannot be written below a file
    rec = TradeRecorder(blocker, batch=1)
    rec.add(INST, [_trade(1, T0)])
    assert rec.flush() == 0 and rec.errors == 1
    blocker.unlink()
    assert rec.flush() == 1


def test_recordings_read_while_the_engine_replaces_the_day_file_are_whole(tmp_path: Path) -> None:
    """The engine rewrites a day file (atomic rename) every flush while notebooks and the compare read it; a read must
    see one whole file, old or new, never the halves of two."""
    folder = tmp_path / "data" / "candles" / "BTC_USDC-PERPETUAL"
    folder.mkdir(parents=True)
    path = folder / "2026-12-03.parquet"
    t0 = 1_796_256_000_000  # 2026-12-03 00:00 UTC
    write_day(path, [Candle(t0 + i * 60_000, 100.0, 101.0, 99.0, 100.5, 1.0) for i in range(200)])
    stop = threading.Event()

    def rewrite() -> None:
        n = 200
        while not stop.is_set():
            write_day(path, [Candle(t0 + n * 60_000, 100.0, 101.0, 99.0, 100.5, 1.0)])
            n += 1

    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    try:
        sizes = [len(load_recorded(tmp_path)) for _ in range(300)]
    finally:
        stop.set()
        writer.join(timeout=10)
    assert sizes == sorted(sizes) and sizes[0] >= 200


class _Engine:
    """What ``MarketRecorder`` uses of the engine: its home and its event listeners."""

    def __init__(self, root: Path) -> None:
        self.home = type("H", (), {"root": root})()
        self.listeners: list[Any] = []

    def add_listener(self, fn: Any) -> Any:
        self.listeners.append(fn)
        return lambda: self.listeners.remove(fn)

    def publish(self, channel: str, data: Any) -> None:
        for fn in list(self.listeners):
            fn(channel, data)


def test_the_market_recorder_flushes_after_the_candle_and_at_most_once_per_interval(tmp_path: Path) -> None:
    """A fast replay closes many candles a second: they are written together, not one rewrite per candle, and
    none is written inside the candle's own close (the orders it causes go first)."""
    engine = _Engine(tmp_path)
    rec = MarketRecorder(engine, delay_s=0.05, every_s=0.5)  # type: ignore[arg-type]
    writes: list[int] = []
    real_write = rec._write
    rec._write = lambda: writes.append(n := real_write()) or n  # type: ignore[method-assign]

    async def run() -> None:
        await rec.start()
        for i in range(20):
            before = len(writes)
            engine.publish(f"candles.{INST}", dataclasses.asdict(c(i)))
            assert len(writes) == before  # never inside the close
            await asyncio.sleep(0.01)  # candles 10 ms apart (a replay at 6000x)
        deadline = asyncio.get_running_loop().time() + 5
        while sum(writes) < 20 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        await rec.stop()

    asyncio.run(run())
    assert sum(writes) == 20
    assert 1 <= len([n for n in writes if n]) <= 3  # 0.2 s of candles: the first flush, then at most one per 0.5 s
    assert len(load_recorded(tmp_path, INST)) == 20


def _arrow_pool(call_first: bool) -> str:
    code = ("from tradebaas.engine.live.recorder import prefer_system_arrow_pool\n"
            "assert prefer_system_arrow_pool() is True\n" if call_first else "") + \
        "import pyarrow as pa\nprint(pa.default_memory_pool().backend_name)"
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_engine_has_pyarrow_give_freed_day_file_buffers_back_to_the_os() -> None:
    """The bound on the engine's memory (issue 15): a day file's buffers, freed after each rewrite, return to the OS
    instead of staying in pyarrow's own pool; chosen before pyarrow loads, and only then."""
    assert _arrow_pool(call_first=False) != "system"  # pyarrow's default keeps freed memory (mimalloc/jemalloc)
    assert _arrow_pool(call_first=True) == "system"
    import pyarrow  # noqa: F401 - loaded in this process: too late to choose, and it says so

    assert prefer_system_arrow_pool() is False


def test_flush_now_writes_what_the_paced_flush_would_write_later_and_never_two_at_once(tmp_path: Path) -> None:
    """``strategy.compare`` reads the recordings inside the engine: they must hold every candle closed so far, not
    the state of the last paced flush (up to ``every_s`` behind); and a scheduled flush must not run beside it."""
    engine = _Engine(tmp_path)
    rec = MarketRecorder(engine, delay_s=3600, every_s=3600)  # type: ignore[arg-type]
    running = [0, 0]  # now, at most
    real_write = rec._write

    def write() -> int:
        running[0] += 1
        running[1] = max(running)
        try:
            return real_write()
        finally:
            running[0] -= 1

    rec._write = write  # type: ignore[method-assign]

    async def run() -> int:
        await rec.start()
        for i in range(5):
            engine.publish(f"candles.{INST}", dataclasses.asdict(c(i)))
        first = await rec.flush_now()
        assert len(load_recorded(tmp_path, INST)) == 5  # on disk now, not in an hour
        engine.publish(f"candles.{INST}", dataclasses.asdict(c(5)))
        both = await asyncio.gather(rec.flush_now(), rec.flush_now())
        await rec.stop()
        return first + sum(both)

    assert asyncio.run(run()) == 6
    assert running[1] == 1
    assert len(load_recorded(tmp_path, INST)) == 6
