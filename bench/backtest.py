"""Backtest throughput, sweeps, and the peers (backtesting.py, backtrader, vectorbt) in the same run (JSON lines).

1. candles/s over N (default 1,000,000) one-minute candles: the bundled 27 days of real Bitstamp candles repeated
   end to end (timestamps continued, each repeat re-based on the previous close). Every strategy twice: its array
   path (``path="array"``: ema_cross's fast path, Razor's and the docs example's declared series) and the
   candle-by-candle loop (``path="event"``, ``vectorized=False``), with ``identical``: the two made exactly the
   same trades (every column). ``loop_s`` is the strategy run, ``total_s`` the whole ``backtest()`` call plus
   ``.stats`` (trades frame, equity, statistics), which is what a user waits for. The array path runs
   ``--repeat`` times: ``total_s`` is the best, ``spread_s`` the worst minus the best.
   ``array_crossover`` is docs/examples/array_crossover.py: a strategy written against the documented API.
2. ``--compare``: ema_cross (9/21) in tradebaas, backtesting.py, backtrader and vectorbt over the same candles,
   checking that the trades are identical (entry/exit bar and direction); the speedup is against our *total* time.
   The libraries live in a separate venv, ``bench/.venv-compare`` (created on first use; never a project
   dependency), and run via ``bench/_compare_impl.py``.
3. ``--sweep N``: ``tb.sweep`` of Razor over N parameter sets (stop-loss x take-profit x RSI oversold) on the
   bundled 27 days with ``--processes`` workers (the goal: 1,000 sets in <= 60 s on 2 cores).
   ``--sweep-strategy ema_cross`` sweeps fast x slow on ``--sweep-candles`` repeated candles instead.
4. ``--dask``: the Razor sweep of ``--dask-sets`` sets on a Dask ``LocalCluster`` of 1, 2 and 4 single-threaded
   worker processes: time per set and scaling against 1 worker (linear: ``efficiency`` 1.0; reported only).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
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


PEERS = ("backtesting", "backtrader", "vectorbt")


def ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = subprocess.run([str(py), "-c", "import backtesting, backtrader, vectorbt"], capture_output=True)
    if probe.returncode:
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PEERS, "pandas", "numpy"], check=True)
    return py


def example_strategy() -> type:
    """docs/examples/array_crossover.py's class (the docs' array API example)."""
    spec = importlib.util.spec_from_file_location("array_crossover", HERE.parent / "docs/examples/array_crossover.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ArrayCrossover


def timed_backtest(name: object, df: pd.DataFrame, **kwargs: object) -> tuple[object, float]:
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
             speedup=round(res["wall_s"] / our_s, 1), version=res.get("version", ""))


def same_trades(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    except AssertionError:
        return False
    return True


def throughput(df: pd.DataFrame, repeat: int) -> None:
    strategies: list[tuple[str, object]] = [("ema_cross", "ema_cross"), ("razor", "razor"),
                                            ("array_crossover", example_strategy())]
    for _label, strat in strategies:  # one-off costs (imports, first calls) are not throughput: pay them here
        timed_backtest(strat, df.iloc[:5000])
    for label, strat in strategies:
        runs = [timed_backtest(strat, df) for _ in range(repeat)]
        best = min(runs, key=lambda rw: rw[1])
        event, event_s = timed_backtest(strat, df, vectorized=False)
        same = same_trades(best[0].trades, event.trades)  # type: ignore[attr-defined]
        for path, (r, wall), spread in (("array", best, max(w for _, w in runs) - best[1]),
                                        ("event", (event, event_s), 0.0)):
            emit(bench="backtest", strategy=label, path=path, candles=len(df), trades=len(r.trades),
                 loop_s=round(r.elapsed_s, 3), total_s=round(wall, 3), spread_s=round(spread, 3),
                 runs=repeat if path == "array" else 1, candles_per_s=round(len(df) / r.elapsed_s),
                 candles_per_s_total=round(len(df) / wall), identical=same)


def razor_grid(n_sets: int) -> dict[str, list[float]]:
    """About ``n_sets`` Razor configs: stop-loss x take-profit x RSI oversold (10 x 10 x 10 for 1,000)."""
    side = max(1, round(n_sets ** (1 / 3)))
    return {"stopLossPercent": [round(0.2 + 0.1 * i, 2) for i in range(side)],
            "takeProfitPercent": [round(0.3 + 0.1 * i, 2) for i in range(side)],
            "rsiOversold": [30.0 + 2 * i for i in range(-(-n_sets // (side * side)))]}


def sweep_bench(n_sets: int, processes: int, strategy: str, n_candles: int) -> None:
    from tradebaas.backtest.sweep import sweep

    if strategy == "razor":
        df, grid = load_default(), razor_grid(n_sets)
    else:
        df = candles(n_candles)
        fasts = list(range(3, 3 + max(1, int(np.sqrt(n_sets)))))
        grid = {"fast": fasts, "slow": list(range(20, 20 + -(-n_sets // len(fasts))))}
    t = time.perf_counter()
    res = sweep(strategy, df, grid, processes=processes, progress=False)
    wall = time.perf_counter() - t
    emit(bench="sweep", strategy=strategy, sets=len(res), candles=len(df), processes=processes,
         wall_s=round(wall, 2), sets_per_s=round(len(res) / wall, 2), ms_per_set=round(wall / len(res) * 1000, 1))


def dask_bench(n_sets: int, workers: list[int]) -> None:
    from distributed import Client, LocalCluster

    from tradebaas.backtest.sweep import sweep

    df, grid = load_default(), razor_grid(n_sets)
    per_set: dict[int, float] = {}
    for w in workers:
        with LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            sweep("razor", df, razor_grid(8), client=client, progress=False)  # workers import and start up
            t = time.perf_counter()
            res = sweep("razor", df, grid, client=client, progress=False)
            wall = time.perf_counter() - t
        per_set[w] = wall / len(res)
        base = per_set[workers[0]] * workers[0]
        emit(bench="dask_sweep", strategy="razor", sets=len(res), candles=len(df), workers=w,
             wall_s=round(wall, 2), ms_per_set=round(per_set[w] * 1000, 1),
             efficiency=round(base / (w * per_set[w]), 2), cores=os.cpu_count())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candles", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each array path (best and spread)")
    ap.add_argument("--no-throughput", action="store_true", help="skip part 1")
    ap.add_argument("--compare", action="store_true", help="also run the peers (backtesting.py, backtrader, vectorbt)")
    ap.add_argument("--libs", default=",".join(PEERS))
    ap.add_argument("--sweep", type=int, default=0, metavar="N", help="sweep N parameter sets")
    ap.add_argument("--sweep-strategy", default="razor", choices=("razor", "ema_cross"))
    ap.add_argument("--sweep-candles", type=int, default=500_000, help="ema_cross sweep: repeated candles")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--dask", action="store_true", help="Razor sweep on a Dask LocalCluster, 1/2/4 workers")
    ap.add_argument("--dask-sets", type=int, default=200)
    args = ap.parse_args()
    df = candles(args.candles)
    if not args.no_throughput:
        throughput(df, args.repeat)
    if args.compare:
        compare(df, 9, 21, args.libs.split(","))
    if args.sweep:
        sweep_bench(args.sweep, args.processes, args.sweep_strategy, args.sweep_candles)
    if args.dask:
        dask_bench(args.dask_sets, [1, 2, 4])


if __name__ == "__main__":
    main()
