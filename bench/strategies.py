"""One slow strategy never delays another's orders: Razor's candle close -> entry acknowledged, alone and beside a
deployed strategy that takes 300 ms per candle (JSON lines on stdout).

Real processes in a throw-away TRADEBAAS_HOME: ``tradebaas sim`` and the engine; Razor (built in: it decides on the
engine's loop) trades often on BTC_USDC-PERPETUAL, and its ``close->ack`` times are read from the engine's log
(``engine_close_to_ack_ms``, as ``bench/latency.py``). Then a deployed strategy on BTC-PERPETUAL that spends 300 ms
in every ``on_candle`` — once sleeping (I/O-like), once spinning the CPU (holding the GIL as pure Python does) — runs
beside it, and Razor's times are measured again. A strategy that is not built in decides in a thread of its own
(``engine/live/strategy_runner.py``), so the slow one holds up only itself; what remains is the CPU it takes.

Run: ``.venv/bin/python bench/strategies.py [--entries 25]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latency import ACK_RE, RAZOR_OFTEN, Sim, start_engine, summary, wait  # noqa: E402

from tradebaas.home import get_home  # noqa: E402
from tradebaas.rpc.client import EngineClient  # noqa: E402

SLOW = textwrap.dedent('''
    import time

    from tradebaas.strategies.base import BaseStrategy, Decision, Param


    class Slow(BaseStrategy):
        """Spends `ms` milliseconds per candle, sleeping or spinning, and never trades."""

        name = "slow"
        params = (Param("ms", float, 0.0, 0.0, 10_000.0, "time per candle"),
                  Param("spin", bool, False, help="spin the CPU instead of sleeping"))

        def on_candle(self, candle, context):
            if not context.warming_up and self.config["ms"]:
                end = time.perf_counter() + self.config["ms"] / 1000
                if self.config["spin"]:
                    while time.perf_counter() < end:
                        pass
                else:
                    time.sleep(self.config["ms"] / 1000)
            return Decision(candle.ts_ms, "none", {}, {}, ())
''')


def close_to_ack(log: Path, after: int) -> list[float]:
    text = log.read_text(errors="replace")[after:]
    return [float(m.group(3)) for m in ACK_RE.finditer(text) if m.group(3)]


def measure(c: EngineClient, log: Path, entries: int, timeout: float) -> list[float]:
    start = log.stat().st_size
    wait(lambda: len(close_to_ack(log, start)) >= entries, timeout, f"{entries} Razor entries", 0.2)
    return close_to_ack(log, start)[:entries]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=25)
    ap.add_argument("--speed", type=float, default=60.0, help="a candle a second: the slow one keeps up")
    ap.add_argument("--slow-ms", type=float, default=300.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tb-bench-strategies-") as tmp:
        home = get_home(Path(tmp) / "home").ensure()
        sim = Sim(home, args.speed)
        try:
            start_engine(home)
            log = home.engine_log
            with EngineClient(home=home, timeout=300) as c:
                c.call("strategy.start", name="razor", config=RAZOR_OFTEN)
                alone = measure(c, log, args.entries, 600)
                print(json.dumps({"bench": "strategies", "case": "razor alone", "engine_close_to_ack_ms":
                                  summary(alone)}), flush=True)
                c.call("strategy.deploy", source=SLOW, timeout=600)
                for spin in (False, True):
                    slow = c.call("strategy.start", name="slow", instrument="BTC-PERPETUAL",
                                  config={"ms": args.slow_ms, "spin": spin})
                    wait(lambda sid=slow["id"]: c.call("strategy.get", id=sid)["decisions"] >= 2, 120,
                         "the slow strategy deciding", 0.2)
                    beside = measure(c, log, args.entries, 600)
                    print(json.dumps({"bench": "strategies", "case": f"razor beside a {args.slow_ms:g} ms "
                                      f"{'spinning' if spin else 'sleeping'} strategy",
                                      "engine_close_to_ack_ms": summary(beside),
                                      "slow_state": c.call("strategy.get", id=slow["id"])["state"]}), flush=True)
                    c.call("strategy.stop", id=slow["id"])
                c.call("engine.shutdown")
            wait(lambda: not (home.root / "engine.json").exists(), 30, "the engine to stop", 0.1)
        finally:
            sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
