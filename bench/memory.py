"""An engine trading two strategies over 24 simulated hours: does its RSS stay flat after warm-up? (JSON lines)

Real processes in a throw-away TRADEBAAS_HOME: ``tradebaas sim`` replaying the bundled candles at ``--speed``
(600: a simulated day in 144 s of wall time, 10 candles and 120 ticks a second per instrument) and the engine,
with Razor trading often on BTC_USDC-PERPETUAL and ema_cross on BTC-PERPETUAL, and one attached client subscribed
to every push (a panel). The engine's RSS (``/proc``) is sampled every second; after ``--warmup-h`` simulated
hours, a least-squares line through the samples gives the growth in MB per simulated hour (and per wall minute),
and the RSS at the end of the warm-up and at the end. A day at 600x holds as many candles, decisions, orders and
trades as a real day; what a 600x run does not show is growth with wall time alone (timers): the engine's timers
do no work that accumulates.

Run: ``.venv/bin/python bench/memory.py [--hours 24] [--speed 600] [--warmup-h 4] [--tracemalloc]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latency import RAZOR_OFTEN, Sim, env_for, kill_engine, start_engine, wait  # noqa: E402
from scale import PANEL_CHANNELS, cpu_s, rss_mb  # noqa: E402

from tradebaas.connection import read_connection_file  # noqa: E402
from tradebaas.home import get_home  # noqa: E402
from tradebaas.rpc.client import EngineClient  # noqa: E402


def emit(**fields: object) -> None:
    print(json.dumps({"bench": "memory", **fields}), flush=True)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two distinct xs)."""
    import numpy as np

    return float(np.polyfit(xs, ys, 1)[0]) if len(set(xs)) >= 2 else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours to trade")
    ap.add_argument("--speed", type=float, default=600.0)
    ap.add_argument("--warmup-h", type=float, default=4.0, help="simulated hours left out of the slope")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="run the engine under tracemalloc (bench/_traced_engine.py) and print where memory grew")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tb-bench-memory-") as tmp:
        home = get_home(Path(tmp) / "home").ensure()
        sim = Sim(home, args.speed)
        try:
            traced = Path(tmp) / "tracemalloc.json"
            if args.tracemalloc:
                base_s = args.warmup_h * 3600 / args.speed + 10
                subprocess.Popen([sys.executable, str(Path(__file__).with_name("_traced_engine.py")), str(traced),
                                  str(base_s), "10"], env=env_for(home), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
                wait(lambda: read_connection_file(home), 60, "the traced engine", 0.1)
            else:
                start_engine(home)
            info = read_connection_file(home)
            assert info is not None
            pid = info.pid
            with EngineClient(home=home, timeout=300) as c, EngineClient(home=home, timeout=300) as panel:
                pushes = [0]
                for channel in PANEL_CHANNELS:
                    panel.subscribe(channel, lambda _c, _d: pushes.__setitem__(0, pushes[0] + 1))
                ids = [c.call("strategy.start", name="razor", instrument="BTC_USDC-PERPETUAL", config=RAZOR_OFTEN)["id"],
                       c.call("strategy.start", name="ema_cross", instrument="BTC-PERPETUAL",
                              config={"fast": 5, "slow": 13})["id"]]
                t0, cpu0 = time.monotonic(), cpu_s(pid)
                samples: list[tuple[float, float]] = []  # (simulated hours since the start, RSS MB)
                wall_end = args.hours * 3600 / args.speed
                while (elapsed := time.monotonic() - t0) < wall_end:
                    samples.append((elapsed * args.speed / 3600, rss_mb(pid)))
                    time.sleep(1.0)  # the sampling period of a benchmark, not synchronisation
                cpu = cpu_s(pid) - cpu0
                status = c.call("engine.status")
                trades = len(c.call("trades.list"))
                after = [(h, m) for h, m in samples if h >= args.warmup_h]
                per_h = slope([h for h, _ in after], [m for _, m in after])
                warm = after[0][1] if after else None
                emit(hours=args.hours, speed=args.speed, samples=len(samples), warmup_h=args.warmup_h,
                     rss_mb_start=samples[0][1], rss_mb_after_warmup=warm, rss_mb_end=samples[-1][1],
                     rss_mb_max=max(m for _, m in samples), growth_mb_per_sim_h=round(per_h, 3),
                     growth_mb_per_wall_min=round(per_h * args.speed / 60, 3),
                     growth_mb_over_day_after_warmup=round(per_h * (args.hours - args.warmup_h), 1),
                     cpu_s_per_s=round(cpu / max(1e-9, time.monotonic() - t0), 3),
                     pushes_received=pushes[0], decisions=sum(c.call("strategy.get", id=i)["decisions"] for i in ids),
                     rss_series=[[round(h, 2), m] for h, m in samples[:: max(1, len(samples) // 48)]],
                     uptime_s=status.get("uptime_s"), load_1m=round(os.getloadavg()[0], 2), trades=trades)
                if args.tracemalloc and traced.exists():
                    emit(case="tracemalloc", **json.loads(traced.read_text()))
                c.call("engine.shutdown")
            try:
                wait(lambda: not (home.root / "engine.json").exists(), 60, "the engine to stop", 0.1)
            except TimeoutError:
                emit(case="engine stop", stopped=False)
                kill_engine(home)
        finally:
            kill_engine(home)  # only if still running (a failed run must not leave it behind)
            sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
