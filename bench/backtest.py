"""Backtest throughput, and the same EMA cross in backtesting.py and backtrader (JSON lines on stdout).

1. candles/s of Razor and ema_cross over N (default 1,000,000) one-minute candles: the bundled 27 days of real
   Bitstamp candles repeated end to end (timestamps continued, each repeat re-based on the previous close).
   ema_cross twice: the array fast path (``path="vectorized"``, the default of ``backtest``) and the event-driven
   loop (``path="event"``, ``vectorized=False``); ``loop_s`` is the strategy run, ``total_s`` the whole
   ``backtest()`` call plus ``.stats`` (trades frame, equity, statistics), which is what a user waits for.
2. ``--compare``: ema_cross (9/21) in tradebaas, backtesting.py and backtrader over the same candles, checking
   that the trades are identical (entry/exit bar and direction); the speedup is against our *total* time
   (the libraries' times include their own statistics). The two libraries live in a separate venv,
   ``bench/.venv-compare`` (created on first use with ``python -m venv`` + ``pip install backtesting backtrader``;
   never a project dependency), and run via ``bench/_compare_impl.py``.
3. ``--sweep N``: ``tb.sweep`` of ema_cross over N parameter sets (fast x slow) on ``--sweep-candles`` candles
   with ``--processes`` workers; prints the wall time (the goal is 1,000 sets over 500,000 candles in <= 60 s on
   2 cores). The grid is fast 3..34 x slow 20..51 for 1,000 sets (every row has full statistics).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tradebaas.backtest.backtester import backtest
from tradebaas.backtest.data import load_default

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-compare"


def candles(n: int) -> pd.DataFrame:
    base = load_default()
    reps = -(-n // len(base))
    parts, scale = [], 1.0
    for _ in range(reps):
        parts.append(base[["open", "high", "low", "close"]].to_numpy() * scale)
        scale = parts[-1][-1, 3] / base["open"].iloc[0]
    ohlc = np.vstack(parts)[:n]
    idx = pd.date_range(base.index[0], periods=n, freq="1min")
    vol = np.resize(base["volume"].to_numpy(), n)
    return pd.DataFrame({"open": ohlc[:, 0], "high": ohlc[:, 1], "low": ohlc[:, 2], "close": ohlc[:, 3],
                         "volume": vol}, index=idx)


def emit(**row: object) -> None:
    print(json.dumps(row), flush=True)


def ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "backtesting", "backtrader", "pandas", "numpy"],
                       check=True)
    return py


def timed_backtest(name: str, df: pd.DataFrame, **kwargs: object) -> tuple[object, float]:
    """``backtest(...)`` plus its ``.stats``: the wall time of everything a user gets back."""
    t = time.perf_counter()
    r = backtest(name, df, decisions="none", **kwargs)
    r.stats  # noqa: B018 - computed (and cached) inside the timing on purpose
    return r, time.perf_counter() - t


def our_trades(df: pd.DataFrame, fast: int, slow: int) -> tuple[list[dict[str, object]], float]:
    r, total = timed_backtest("ema_cross", df, config={"fast": fast, "slow": slow})
    ms = lambda t: int(t.value // 1_000_000)  # noqa: E731
    return ([{"entry": ms(t.entry_time), "exit": ms(t.exit_time), "direction": t.direction}
             for t in r.trades.itertuples()], total)


def compare(df: pd.DataFrame, fast: int, slow: int, libs: list[str]) -> None:
    py = ensure_venv()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candles.csv"
        out = df.copy()
        out.index = out.index.as_unit("ms").asi8
        out.to_csv(path)
        proc = subprocess.run([str(py), str(HERE / "_compare_impl.py"), str(path), str(fast), str(slow),
                               ",".join(libs)], capture_output=True, text=True, check=True)
    theirs = json.loads(proc.stdout)
    ours, our_s = our_trades(df, fast, slow)
    for lib, res in theirs.items():
        same = res["trades"] == ours
        first_diff = next((i for i, (a, b) in enumerate(zip(res["trades"], ours, strict=False)) if a != b), None)
        emit(bench="compare", library=lib, candles=len(df), trades=len(res["trades"]), our_trades=len(ours),
             identical=same, first_difference=first_diff, their_s=round(res["wall_s"], 3), our_s=round(our_s, 3),
             speedup=round(res["wall_s"] / our_s, 1))


def sweep_bench(n_sets: int, n_candles: int, processes: int) -> None:
    from tradebaas.backtest.sweep import sweep

    df = candles(n_candles)
    fasts = list(range(3, 3 + max(1, int(np.sqrt(n_sets)))))
    slows = list(range(20, 20 + -(-n_sets // len(fasts))))
    grid = {"fast": fasts, "slow": slows}
    t = time.perf_counter()
    res = sweep("ema_cross", df, grid, processes=processes, progress=False)
    wall = time.perf_counter() - t
    emit(bench="sweep", strategy="ema_cross", sets=len(res), candles=n_candles, processes=processes,
         wall_s=round(wall, 2), sets_per_s=round(len(res) / wall, 2),
         projected_1000x500k_s=round(wall / len(res) * 1000 * 500_000 / n_candles, 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candles", type=int, default=1_000_000)
    ap.add_argument("--compare", action="store_true", help="also run backtesting.py and backtrader")
    ap.add_argument("--libs", default="backtesting,backtrader")
    ap.add_argument("--sweep", type=int, default=0, metavar="N", help="sweep N parameter sets")
    ap.add_argument("--sweep-candles", type=int, default=500_000)
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    df = candles(args.candles)
    for name in ("ema_cross", "razor"):  # one-off costs (imports, first calls) are not throughput: pay them here
        timed_backtest(name, df.iloc[:5000])
    for name, path in (("ema_cross", "vectorized"), ("ema_cross", "event"), ("razor", "event")):
        r, wall = timed_backtest(name, df, vectorized=path == "vectorized")
        emit(bench="backtest", strategy=name, path=path, candles=len(df), trades=len(r.trades),
             loop_s=round(r.elapsed_s, 3), total_s=round(wall, 3), candles_per_s=round(len(df) / r.elapsed_s),
             candles_per_s_total=round(len(df) / wall))
    if args.compare:
        compare(df, 9, 21, args.libs.split(","))
    if args.sweep:
        sweep_bench(args.sweep, args.sweep_candles, args.processes)


if __name__ == "__main__":
    main()
