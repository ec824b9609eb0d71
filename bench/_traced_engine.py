"""The engine in the foreground under ``tracemalloc`` (``bench/memory.py --tracemalloc``): where memory grows.

``python bench/_traced_engine.py OUT BASE_S EVERY_S``: runs ``tradebaas engine start --foreground --exchange sim``
in this process (TRADEBAAS_HOME from the environment), takes a first snapshot ``BASE_S`` seconds after the start
(after warm-up) and then every ``EVERY_S`` seconds writes to OUT (JSON) the 25 allocation sites that grew most
since that first snapshot, with their tracebacks. tracemalloc slows the engine down: figures of this run are for
finding where memory goes, not for RSS or latency.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sampler(out: Path, base_s: float, every_s: float) -> None:
    time.sleep(base_s)
    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    base = tracemalloc.take_snapshot().filter_traces(keep)
    started = time.monotonic()
    while True:
        time.sleep(every_s)
        snap = tracemalloc.take_snapshot().filter_traces(keep)
        top = snap.compare_to(base, "traceback")[:25]
        rows = [{"kib": round(s.size_diff / 1024, 1), "count": s.count_diff,
                 "where": [f"{f.filename.split('site-packages/')[-1].split('wt-perf/')[-1]}:{f.lineno}"
                           for f in s.traceback][-6:]} for s in top]
        out.write_text(json.dumps({"after_s": round(time.monotonic() - started, 1),
                                   "traced_mib": round(tracemalloc.get_traced_memory()[0] / 2**20, 1),
                                   "top": rows}))


def main() -> int:
    out, base_s, every_s = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    tracemalloc.start(3)  # three frames: enough to name the caller, cheap enough to keep the engine trading
    threading.Thread(target=sampler, args=(out, base_s, every_s), daemon=True, name="tracemalloc").start()
    from tradebaas.engine.process.daemon import run_foreground
    from tradebaas.home import get_home

    return run_foreground(get_home(), "sim", detached_child=True)


if __name__ == "__main__":
    raise SystemExit(main())
