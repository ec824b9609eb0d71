"""``make bench``: run every benchmark script, keep their JSON lines, print the goals with their figures.

Each script (bench/sim.py, latency.py, rpc.py, scale.py, memory.py, strategies.py, backtest.py) runs as its own process with a timeout; every JSON
line it prints is kept, tagged with the script, the host, the time and the load average at the start, in
``bench/results/<YYYY-MM-DD>-<host>.jsonl`` (appended: one file per day and machine). Then the table: one row per
goal with its figure and PASS / MISS (``reported`` where the goal is to report, not to meet), as Markdown, which
is what docs/benchmarks.md holds. ``--only backtest,rpc`` runs some scripts; ``--from FILE`` prints the table of
the last run kept in a file without running anything.

Benchmarks are not tests: nothing here fails a build. Figures depend on the machine and on what else runs on it
(the load average is in every line: compare like with like).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

#: script -> (arguments, timeout in seconds)
SCRIPTS: dict[str, tuple[list[str], int]] = {
    "sim": ([], 300),
    "latency": ([], 900),
    "rpc": ([], 300),
    "scale": ([], 900),
    "memory": (["--hours", "44", "--warmup-h", "20"], 900),  # the first simulated day warms up, 24 h measured
    "strategies": ([], 900),
    "backtest": (["--compare", "--sweep", "1000", "--dask"], 3600),
}

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Goal:
    """One line of the table: ``figure(rows)`` -> (text, verdict) with verdict True/False, or None (reported)."""

    area: str
    what: str
    goal: str
    figure: Callable[[Rows], tuple[str, bool | None]]


def pick(rows: Rows, **match: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def last(rows: Rows, **match: Any) -> dict[str, Any] | None:
    found = pick(rows, **match)
    return found[-1] if found else None


def _missing() -> tuple[str, bool | None]:
    return "not measured", False


def backtest_goal(strategy: str, path: str, test: Callable[[dict[str, Any]], bool]) -> Callable[[Rows], Any]:
    def figure(rows: Rows) -> tuple[str, bool | None]:
        r = last(rows, bench="backtest", strategy=strategy, path=path)
        if r is None:
            return _missing()
        spread = f" (spread {r['spread_s']:.2f} s over {r['runs']} runs)" if r.get("runs", 1) > 1 else ""
        text = (f"{r['total_s']:.2f} s{spread}, {r['candles_per_s_total']:,} candles/s, {r['trades']:,} trades")
        return text, test(r)
    return figure


def identity(rows: Rows) -> tuple[str, bool | None]:
    found = pick(rows, bench="backtest", path="event")
    if not found:
        return _missing()
    parts = [f"{r['strategy']} {'identical' if r['identical'] else 'DIFFERENT'} ({r['trades']:,} trades)"
             for r in found]
    return "; ".join(parts), all(r["identical"] for r in found)


def peer(library: str, minimum: float | None) -> Callable[[Rows], Any]:
    def figure(rows: Rows) -> tuple[str, bool | None]:
        r = last(rows, bench="compare", library=library)
        if r is None:
            return _missing()
        text = (f"{r['speedup']}x ({r['their_s']:.2f} s vs our {r['our_s']:.2f} s, {library} {r.get('version', '')}, "
                f"{'identical' if r['identical'] else 'DIFFERENT'} {r['trades']:,} trades)")
        return text, (r["identical"] and r["speedup"] >= minimum) if minimum is not None else r["identical"]
    return figure


def sweep_goal(rows: Rows) -> tuple[str, bool | None]:
    r = last(rows, bench="sweep", strategy="razor")
    if r is None:
        return _missing()
    return (f"{r['wall_s']:.1f} s for {r['sets']:,} sets x {r['candles']:,} candles, {r['processes']} processes "
            f"({r['ms_per_set']} ms/set)"), r["wall_s"] <= 60 and r["sets"] >= 1000


def dask_goal(rows: Rows) -> tuple[str, bool | None]:
    found = pick(rows, bench="dask_sweep")[-3:]
    if not found:
        return _missing()
    cores = found[0].get("cores")
    text = ", ".join(f"{r['workers']} worker{'s' if r['workers'] > 1 else ''}: {r['ms_per_set']} ms/set "
                     f"(efficiency {r['efficiency']})" for r in found)
    return f"{text}; {cores} cores", None


def metric(bench: str, name: str, key: str, unit: str, test: Callable[[float], bool] | None, **match: Any
           ) -> Callable[[Rows], Any]:
    def figure(rows: Rows) -> tuple[str, bool | None]:
        r = last(rows, bench=bench, **({"metric": name} if name else {}), **match)
        if r is None or key not in r:
            return _missing()
        return f"{r[key]:,} {unit}".strip(), None if test is None else test(float(r[key]))
    return figure


def scale_goal(key: str, sub: str | None, unit: str, limit: float | None, slow: bool = False
               ) -> Callable[[Rows], Any]:
    """A figure of ``bench/scale.py``: the phase without (or with, ``slow``) the spinning strategy."""
    def figure(rows: Rows) -> tuple[str, bool | None]:
        found = [r for r in pick(rows, bench="scale") if "tick_to_decision_ms" in r and ("spinning" in r["case"]) == slow]
        if not found:
            return _missing()
        r = found[-1]
        if key not in r or (sub and not r[key].get("n", 1)):
            return "not measured", None if limit is None else False
        value = float(r[key][sub] if sub else r[key])
        text = f"{value:,} {unit}".strip()
        if key == "acting_tick_to_done_ms":
            text += f" (p50 {r[key]['p50']} ms, {r[key]['n']} decisions)"
        if key == "tick_to_decision_ms":
            text += f" (p50 {r[key]['p50']} ms, {r['decisions_per_s']} decisions/s, load {r.get('load_1m')})"
        kept_up = True
        if slow and "slow_state" in r:
            kept_up = r["slow_state"] == "running"
            text += (f"; the slow one {r['slow_state']} at the end, {r['slow_decisions_per_s']} decisions/s, its "
                     f"process {r['slow_process_cpu_s_per_s']} CPU s/s")
        return text, None if limit is None else value <= limit and kept_up
    return figure


def slow_goal(rows: Rows) -> tuple[str, bool | None]:
    found = pick(rows, bench="strategies")
    if len(found) < 2:
        return _missing()
    alone, beside = found[0]["engine_close_to_ack_ms"], found[-1]["engine_close_to_ack_ms"]
    if not alone.get("n") or not beside.get("n"):
        return _missing()
    return f"{beside['p50']} ms beside it vs {alone['p50']} ms alone (p99 {beside['p99']} vs {alone['p99']})", \
        beside["p50"] <= alone["p50"] * 1.5 + 0.5


def memory_goal(rows: Rows) -> tuple[str, bool | None]:
    r = last(rows, bench="memory")
    if r is None or "growth_mb_per_sim_h" not in r:
        return _missing()
    day = r["growth_mb_per_sim_h"] * 24
    return (f"{day:+.1f} MB/day ({r['rss_mb_after_warmup']} -> {r['rss_mb_end']} MB after {r['warmup_h']} h "
            f"warm-up; max {r['rss_mb_max']} MB)"), abs(day) <= 5.0


GOALS: list[Goal] = [
    Goal("backtest", "Razor, array path, 1,000,000 candles", "<= 2 s",
         backtest_goal("razor", "array", lambda r: r["total_s"] <= 2.0)),
    Goal("backtest", "docs example (declared series), array path", ">= 1,000,000 candles/s",
         backtest_goal("array_crossover", "array", lambda r: r["candles_per_s_total"] >= 1_000_000)),
    Goal("backtest", "ema_cross, array path", "",
         backtest_goal("ema_cross", "array", lambda r: True)),
    Goal("backtest", "Razor, candle by candle (before: the only path)", "",
         backtest_goal("razor", "event", lambda r: True)),
    Goal("backtest", "array path = candle-by-candle path, trade for trade", "identical", identity),
    Goal("backtest", "ema_cross vs backtesting.py", ">= 10x, identical trades", peer("backtesting", 10)),
    Goal("backtest", "ema_cross vs backtrader", ">= 50x, identical trades", peer("backtrader", 50)),
    Goal("backtest", "ema_cross vs vectorbt (arrays vs arrays)", "identical trades", peer("vectorbt", None)),
    Goal("sweep", "Razor, 1,000 parameter sets over the bundled 27 days", "<= 60 s on 2 cores", sweep_goal),
    Goal("sweep", "Dask LocalCluster, time per set with 1/2/4 workers", "within 20 % of linear (reported)",
         dask_goal),
    Goal("latency", "candle close -> entry acknowledged, p50 (engine)", "<= 0.5 ms",
         metric("latency", "engine_close_to_ack_ms", "p50", "ms", lambda v: v <= 0.5)),
    Goal("latency", "candle close -> entry acknowledged, p99 (engine)", "<= 3 ms",
         metric("latency", "engine_close_to_ack_ms", "p99", "ms", lambda v: v <= 3.0)),
    Goal("latency", "of which the simulator's answer (order sent -> acknowledged), p50", "reported",
         metric("latency", "entry_send_to_ack_ms", "p50", "ms", None)),
    Goal("latency", "of which the engine's own part (close -> order sent), p50", "reported",
         metric("latency", "engine_close_to_send_ms", "p50", "ms", None)),
    Goal("latency", "resume after kill -9, p50", "<= 1 s",
         metric("latency", "resume_s", "p50", "s", lambda v: v <= 1.0)),
    Goal("scale", "100 strategies, 100 ticks/s, 5 panels: tick -> decision, p99", "<= 20 ms",
         scale_goal("tick_to_decision_ms", "p99", "ms", 20.0)),
    Goal("scale", "... of which the trader's decisions to enter/exit: tick -> carried out (brackets placed), p99",
         "reported", scale_goal("acting_tick_to_done_ms", "p99", "ms", None)),
    Goal("scale", "... engine RSS (max)", "<= 250 MB", scale_goal("rss_mb_max", None, "MB", 250.0)),
    Goal("scale", "... engine CPU (CPU seconds per wall second)", "reported",
         scale_goal("cpu_s_per_s", None, "", None)),
    Goal("scale", "... with one deployed strategy spinning most of a core (200 ms of each 240 ms candle): the others' "
         "p99", "unchanged (<= 20 ms)",
         scale_goal("tick_to_decision_ms", "p99", "ms", 20.0, slow=True)),
    Goal("scale", "one slow strategy: Razor's close -> ack p50 beside a 300 ms spinning one (vs alone)", "unchanged",
         slow_goal),
    Goal("memory", "RSS growth over 24 simulated hours after warm-up, 2 strategies trading", "flat (<= 5 MB/day)",
         memory_goal),
    Goal("rpc", "sync client round trip, p50", "<= 0.3 ms",
         metric("rpc", "ping_roundtrip_ms", "p50", "ms", lambda v: v <= 0.3)),
    Goal("rpc", "calls/s, 8 threads, one client", ">= 5,000/s",
         metric("rpc", "ping_throughput", "calls_per_s", "/s", lambda v: v >= 5000)),
    Goal("sim", "matched orders/s, 4 clients, state saving on", ">= 5,000/s",
         metric("sim_orders", "", "orders_per_s", "/s", lambda v: v >= 5000, persist=True)),
    Goal("sim", "market-data messages/s, 4 subscribers", ">= 50,000/s",
         metric("sim_market_data", "", "messages_per_s", "/s", lambda v: v >= 50_000)),
]


def header(rows: Rows) -> str:
    """Which run, where, and the load each script started under."""
    if not rows:
        return "no results"
    first = rows[0]
    loads: dict[str, Any] = {}
    for r in rows:
        loads.setdefault(r.get("script", "?"), r.get("load_1m"))
    load = ", ".join(f"{k} {v}" for k, v in loads.items())
    return (f"Run {first.get('run_at', '?')} on `{first.get('host', '?')}` ({first.get('cores', '?')} cores); "
            f"1-minute load average when each script started: {load}.")


def latest_run(rows: Rows) -> Rows:
    """The lines of the last run in a results file (one ``make bench``)."""
    last_at = max((r.get("run_at", "") for r in rows), default="")
    return [r for r in rows if r.get("run_at", "") == last_at]


def table(rows: Rows) -> str:
    """The goals as a Markdown table."""
    out = ["| area | what | goal | figure | |", "|---|---|---|---|---|"]
    for g in GOALS:
        text, verdict = g.figure(rows)
        mark = "reported" if verdict is None else ("PASS" if verdict else "MISS")
        if not g.goal and verdict:
            mark = ""
        out.append(f"| {g.area} | {g.what} | {g.goal} | {text} | {mark} |")
    return "\n".join(out)


def run_script(name: str, args: list[str], timeout: int, stamp: dict[str, Any]) -> Rows:
    """Run ``bench/<name>.py``; its JSON lines, tagged. A crash or a timeout is a line too."""
    cmd = [sys.executable, str(HERE / f"{name}.py"), *args]
    print(f"# {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    rows: Rows = []
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out, rc, err = proc.stdout, proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        rc, err = -1, f"timed out after {timeout} s"
    for line in out.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append({**stamp, "script": name, **row})
    if rc != 0:
        rows.append({**stamp, "script": name, "bench": "error", "returncode": rc, "stderr_tail": err[-2000:]})
    print(f"#   {len(rows)} lines, {time.perf_counter() - t0:.0f} s, exit {rc}", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated scripts (default: all)")
    ap.add_argument("--from", dest="from_file", help="print the table of a results file's last run, run nothing")
    ap.add_argument("--all", action="store_true", help="with --from: every run of the file (latest line wins)")
    ap.add_argument("--run", help="with --from: the run that started at this run_at (ISO time, as in the lines)")
    args = ap.parse_args()
    if args.from_file:
        rows = [json.loads(line) for line in Path(args.from_file).read_text().splitlines() if line.strip()]
        if args.run:
            rows = [r for r in rows if r.get("run_at") == args.run]
        elif not args.all:
            rows = latest_run(rows)
        print(header(rows) + "\n")
        print(table(rows))
        return 0
    host = socket.gethostname()
    now = dt.datetime.now(dt.UTC)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{now:%Y-%m-%d}-{host}.jsonl"
    names = [n for n in args.only.split(",") if n] or list(SCRIPTS)
    rows: Rows = []
    for name in names:
        extra, timeout = SCRIPTS[name]
        stamp = {"run_at": now.isoformat(timespec="seconds"), "host": host, "cores": os.cpu_count(),
                 "load_1m": round(os.getloadavg()[0], 2)}
        got = run_script(name, extra, timeout, stamp)
        with path.open("a") as f:
            for row in got:
                f.write(json.dumps(row) + "\n")
        rows += got
    print(f"results: {path.relative_to(HERE.parent)}")
    print(header(rows) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
