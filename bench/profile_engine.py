"""Where the engine spends its time while trading: py-spy samples of a real engine process, summed by function.

How the live path was profiled (issue 15; docs/benchmarks.md, "Profiling the engine"): ``tradebaas sim`` and
``tradebaas engine start --foreground`` run as real processes in a throw-away TRADEBAAS_HOME, the engine under
``py-spy record`` (sampling, so the engine runs at full speed: cProfile would multiply the cost of every small call
and distort a sub-millisecond path). Razor trades often; after ``--entries`` entries the engine is asked to shut
down and py-spy's raw samples (idle ones dropped) are summed: for every function, the share of busy samples in
which it is on the stack (inclusive) and at the top (self), overall and among the samples below ``--focus``
(default: the closing of a candle, ``_closed``). Prints a table and, with ``--json``, JSON lines.

py-spy is a profiling tool, not a dependency: ``.venv/bin/pip install py-spy`` (it needs to ptrace its child).
Run: ``.venv/bin/python bench/profile_engine.py [--entries 60] [--speed 600] [--rate 2000]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latency import ACK_RE, RAZOR_OFTEN, Sim, env_for, summary, wait  # noqa: E402

from tradebaas.home import get_home  # noqa: E402
from tradebaas.rpc.client import EngineClient  # noqa: E402


def frames_of(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip().rpartition(" ")
    names = []
    for frame in stack.split(";"):
        name, _, where = frame.partition(" (")
        names.append(f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})")
    return names, int(count)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=60)
    ap.add_argument("--speed", type=float, default=600.0)
    ap.add_argument("--rate", type=int, default=2000, help="py-spy samples per second")
    ap.add_argument("--focus", default="_closed", help="function whose subtree gets its own table")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", help="copy py-spy's raw output here")
    args = ap.parse_args()
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if pyspy is None:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    with tempfile.TemporaryDirectory(prefix="tb-profile-") as tmp:
        home = get_home(Path(tmp) / "home").ensure()
        raw = Path(tmp) / "raw.txt"
        sim = Sim(home, args.speed)
        engine = subprocess.Popen(
            [pyspy, "record", "--rate", str(args.rate), "--format", "raw", "--output", str(raw), "--",
             sys.executable, "-m", "tradebaas.cli", "engine", "start", "--foreground", "--exchange", "sim"],
            env=env_for(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True)  # its own process group: a failed run stops py-spy *and* the engine under it
        try:
            wait(lambda: (home.root / "engine.json").exists(), 60, "the engine", 0.1)
            with EngineClient(home=home, timeout=120) as c:
                wait(lambda: c.call("engine.status")["exchange"]["connected"], 60, "the exchange connected", 0.05)
                c.call("strategy.start", name="razor", config=RAZOR_OFTEN)
                wait(lambda: len(ACK_RE.findall(home.engine_log.read_text(errors="replace"))) >= args.entries,
                     600, f"{args.entries} entries", 0.5)
                c.call("engine.shutdown")
            engine.wait(120)
        finally:
            if engine.poll() is None:
                os.killpg(engine.pid, signal.SIGTERM)
                engine.wait(30)
            sim.stop()
        log_text = home.engine_log.read_text(errors="replace")
        close_ms = [float(m.group(3)) for m in ACK_RE.finditer(log_text) if m.group(3)]
        lines = raw.read_text().splitlines() if raw.exists() else []
        if args.keep:
            shutil.copy(raw, args.keep)
    total = focus_total = 0
    incl: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    f_incl: collections.Counter[str] = collections.Counter()
    f_self: collections.Counter[str] = collections.Counter()
    for line in lines:
        if not line.strip():
            continue
        names, n = frames_of(line)
        total += n
        for name in set(names):
            incl[name] += n
        self_[names[-1]] += n
        at = next((i for i, name in enumerate(names) if args.focus in name.split(" ")[0].split(".")), None)
        if at is not None:
            focus_total += n
            for name in set(names[at:]):
                f_incl[name] += n
            f_self[names[-1]] += n
    load = round(os.getloadavg()[0], 2)
    print(f"# engine close->ack: {summary(close_ms)}; {total} busy samples at {args.rate}/s, "
          f"{focus_total} under {args.focus}; load {load}")
    for title, inc, slf, tot in (("all busy samples", incl, self_, total), (f"under {args.focus}", f_incl, f_self,
                                                                             focus_total)):
        print(f"\n## {title} ({tot} samples): inclusive % / self %")
        for name, n in inc.most_common(args.top):
            print(f"{100 * n / max(tot, 1):6.1f} {100 * slf[name] / max(tot, 1):6.1f}  {name}")
            if args.json:
                print(json.dumps({"bench": "profile", "scope": title, "function": name, "inclusive_pct":
                                  round(100 * n / max(tot, 1), 2), "self_pct": round(100 * slf[name] / max(tot, 1),
                                                                                     2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
