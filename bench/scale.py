"""One engine, 100 strategies, 100 ticks/s, 5 attached panels: tick-to-decision lag, RSS, CPU (JSON lines).

Real processes in a throw-away TRADEBAAS_HOME: ``tradebaas sim --synthetic`` (the seeded random walk) and the
engine. The simulator serves two instruments and sends 12 ticks per simulated minute on each, so ``--speed 250``
gives 50 ticks/s on each, 100 ticks/s in all: the tick volume of 10 instruments at 10 ticks/s (issue 15). It is
harsher than 10 instruments in real time on the decisions: a candle closes every 0.24 s on each instrument
instead of once a minute, so the engine decides some 400 times a second instead of 100 times a minute.

The strategies: one Razor that trades often (``TRADER``: ``RAZOR_OFTEN`` without a daily limit, on
BTC_USDC-PERPETUAL) and 99 Razors that decide on every candle but never enter (``maxDailyTrades: 0``), split over
both instruments (``allow_shared_instrument``).
Five clients attach as panels do and subscribe to every push (``strategy.*``, ``strategies``, ``ticker.*``,
``candles.*``, ``orders``, ``trades``, ``positions``, ``log``); the first one reads each decision's ``lag_ms``
(``strategy.<id>`` pushes: the market event that closed the candle reached the engine -> the decision journaled,
engine clock; a decision to enter is journaled once the exchange acknowledged the entry) and, for decisions with
intents, ``done_ms`` (-> the intents carried out: an entry's brackets placed too), reported apart.

Measured over ``--seconds`` after warm-up, twice: as above, and with a deployed strategy beside them that spins
the CPU ``--slow-ms`` per candle (200 ms of every 240 ms candle by default: most of a core, and it keeps up; it
decides in a process of its own): the others' lag should not change. Per phase: lag p50/p99/max over every
decision, the engine's RSS (``/proc``), its CPU seconds per wall second, decisions/s, pushes/s received per client,
and the trader's candle close -> entry acknowledged (engine log); in the second phase also the slow strategy's
decisions/s, its state at the end (it must still be running: one that fell behind and was stopped would leave the
phase without it) and its process's CPU seconds per wall second.

Run: ``.venv/bin/python bench/scale.py [--speed 250] [--strategies 100] [--clients 5] [--seconds 60]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latency import ACK_RE, RAZOR_OFTEN, Sim, kill_engine, start_engine, summary, wait  # noqa: E402
from strategies import SLOW  # noqa: E402

from tradebaas.connection import read_connection_file  # noqa: E402
from tradebaas.home import get_home  # noqa: E402
from tradebaas.rpc.client import EngineClient  # noqa: E402

INSTRUMENTS = ("BTC_USDC-PERPETUAL", "BTC-PERPETUAL")
WATCH = {"maxDailyTrades": 0}  # decides on every candle, never enters
#: Trades often in both phases (at 250x a simulated day lasts 6 minutes: Razor's default 150 entries a day would be
#: used up in the first phase)
TRADER = {**RAZOR_OFTEN, "maxDailyTrades": 100_000}
PANEL_CHANNELS = ("strategy.*", "strategies", "ticker.*", "candles.*", "orders", "trades", "positions", "log")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def emit(**fields: object) -> None:
    print(json.dumps({"bench": "scale", **fields}), flush=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


class Panel:
    """One attached client subscribed to every push; counts what it receives, keeps the decisions' lags."""

    def __init__(self, home: Any) -> None:
        self.client = EngineClient(home=home, timeout=300)
        self.pushes = 0
        self.lags: dict[str, list[float]] = defaultdict(list)
        self.done: list[float] = []  # decisions with intents: -> carried out (an entry's brackets placed)
        self._lock = threading.Lock()
        for channel in PANEL_CHANNELS:
            self.client.subscribe(channel, self._on)

    def _on(self, channel: str, data: Any) -> None:
        with self._lock:
            self.pushes += 1
            if channel.startswith("strategy.") and isinstance(data, dict) and "lag_ms" in data:
                self.lags[channel.removeprefix("strategy.")].append(float(data["lag_ms"]))
                if "done_ms" in data:
                    self.done.append(float(data["done_ms"]))

    def take(self) -> tuple[int, dict[str, list[float]], list[float]]:
        with self._lock:
            out = self.pushes, self.lags, self.done
            self.pushes, self.lags, self.done = 0, defaultdict(list), []
            return out


def strategy_process(engine_pid: int) -> int | None:
    """The pid of a deployed strategy's process (a child of the engine), if there is one."""
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and b"strategy_process" in (entry / "cmdline").read_bytes()
                    and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == engine_pid):
                return int(entry.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def phase(name: str, panels: list[Panel], pid: int, log: Path, seconds: float, exclude: set[str],
          slow: tuple[EngineClient, str] | None = None) -> None:
    """Measure for ``seconds``; one JSON line."""
    for p in panels:
        p.take()
    log_at = log.stat().st_size
    extra: dict[str, Any] = {}
    if slow is not None:
        child = strategy_process(pid)
        decided0, child_cpu0 = slow[0].call("strategy.get", id=slow[1])["decisions"], cpu_s(child) if child else 0.0
    cpu0, t0 = cpu_s(pid), time.monotonic()
    rss: list[float] = []
    while time.monotonic() - t0 < seconds:
        rss.append(rss_mb(pid))
        time.sleep(1.0)  # sampling period of a benchmark, not synchronisation
    wall = time.monotonic() - t0
    cpu = cpu_s(pid) - cpu0
    if slow is not None:
        info = slow[0].call("strategy.get", id=slow[1])
        extra = {"slow_state": info["state"], "slow_decisions_per_s": round((info["decisions"] - decided0) / wall, 2),
                 "slow_process_cpu_s_per_s": round((cpu_s(child) - child_cpu0) / wall, 3) if child else None}
    taken = [p.take() for p in panels]
    lags = [v for sid, vals in taken[0][1].items() if sid not in exclude for v in vals]
    text = log.read_text(errors="replace")[log_at:]
    acks = [float(m.group(3)) for m in ACK_RE.finditer(text) if m.group(3)]
    emit(case=name, tick_to_decision_ms=summary(lags), decisions_per_s=round(len(lags) / wall, 1),
         acting_tick_to_done_ms=summary(taken[0][2]),
         strategies_deciding=len([s for s in taken[0][1] if s not in exclude]),
         rss_mb_max=max(rss), rss_mb_last=rss[-1], cpu_s_per_s=round(cpu / wall, 3), wall_s=round(wall, 1),
         pushes_per_s_per_client=[round(n / wall) for n, _, _ in taken], trader_close_to_ack_ms=summary(acks),
         load_1m=round(os.getloadavg()[0], 2), **extra)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speed", type=float, default=250.0, help="simulated seconds per real second")
    ap.add_argument("--strategies", type=int, default=100)
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=60.0, help="measuring time per phase")
    ap.add_argument("--slow-ms", type=float, default=200.0, help="the slow strategy's CPU time per candle")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tb-bench-scale-") as tmp:
        home = get_home(Path(tmp) / "home").ensure()
        sim = Sim(home, args.speed, ("--synthetic", str(args.seed), "--no-persist"))
        panels: list[Panel] = []
        pid = 0
        try:
            start_engine(home)
            info = read_connection_file(home)
            assert info is not None
            pid = info.pid
            emit(case="idle engine", rss_mb=rss_mb(pid))
            with EngineClient(home=home, timeout=300) as c:
                ids = [c.call("strategy.start", name="razor", instrument=INSTRUMENTS[0], config=TRADER)["id"]]
                for i in range(args.strategies - 1):
                    ids.append(c.call("strategy.start", name="razor", instrument=INSTRUMENTS[(i + 1) % 2],
                                      config=WATCH, allow_shared_instrument=True)["id"])
                panels = [Panel(home) for _ in range(args.clients)]
                wait(lambda: len(panels[0].lags) >= args.strategies, 300, "every strategy deciding", 0.5)
                phase(f"{args.strategies} strategies, {args.clients} panels", panels, pid, home.engine_log,
                      args.seconds, set())
                c.call("strategy.deploy", source=SLOW, timeout=600)
                slow = c.call("strategy.start", name="slow", instrument=INSTRUMENTS[1],
                              config={"ms": args.slow_ms, "spin": True}, allow_shared_instrument=True)["id"]
                wait(lambda: c.call("strategy.get", id=slow)["decisions"] >= 2, 120, "the slow one deciding", 0.5)
                phase(f"{args.strategies} strategies, {args.clients} panels, + one spinning {args.slow_ms:g} ms "
                      "per candle", panels, pid, home.engine_log, args.seconds, {slow}, (c, slow))
                emit(case="slow strategy", state=c.call("strategy.get", id=slow)["state"],
                     decisions=c.call("strategy.get", id=slow)["decisions"])
                for p in panels:
                    p.client.close()
                c.call("engine.shutdown")
            try:
                wait(lambda: not (home.root / "engine.json").exists(), 60, "the engine to stop", 0.1)
            except TimeoutError:  # reported, the log kept, the engine killed: a benchmark must not leave it running
                kept = Path(tempfile.gettempdir()) / f"tb-bench-scale-engine-{pid}.log"
                shutil.copy(home.engine_log, kept)
                emit(case="engine stop", stopped=False, log=str(kept))
                os.kill(pid, signal.SIGKILL)
        finally:
            for p in panels:
                p.client.close()
            kill_engine(home)  # only if still running (a failed run must not leave it behind)
            sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
