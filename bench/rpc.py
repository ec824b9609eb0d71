"""RPC benchmark: sync-client round trips against a real engine process; prints JSON lines.

Starts a throw-away engine in a temporary TRADEBAAS_HOME (or uses the running one with ``--home``), then measures
``engine.ping`` round-trip latency (p50/p99/max, ms) one call at a time, throughput with N threads sharing one
client, and event fan-out (``engine.log`` -> ``log`` notification back to the caller).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tradebaas.engine.process import daemon  # noqa: E402
from tradebaas.home import get_home  # noqa: E402
from tradebaas.rpc.client import connect  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def emit(**fields: object) -> None:
    print(json.dumps({"bench": "rpc", **fields}), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--home", help="use the engine already running for this home")
    ap.add_argument("-n", type=int, default=5000, help="sequential round trips")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of the throughput run")
    args = ap.parse_args()

    tmp = None
    if args.home:
        home = get_home(args.home)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="tradebaas-bench-")
        home = get_home(tmp.name)
        t0 = time.perf_counter()
        daemon.start_detached(home, "sim")  # no simulator needed: the RPC answers while the link retries
        emit(metric="engine_start_s", value=round(time.perf_counter() - t0, 3))
    try:
        with connect(home) as client:
            for _ in range(200):  # warm-up
                client.ping()
            lat = []
            for _ in range(args.n):
                t = time.perf_counter()
                client.ping()
                lat.append((time.perf_counter() - t) * 1000)
            emit(metric="ping_roundtrip_ms", n=args.n, p50=round(statistics.median(lat), 4),
                 p99=round(pct(lat, 0.99), 4), max=round(max(lat), 4),
                 calls_per_s=round(args.n / (sum(lat) / 1000), 1))

            count = [0] * args.threads
            stop = threading.Event()

            def worker(i: int) -> None:
                while not stop.is_set():
                    client.ping()
                    count[i] += 1

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
            t0 = time.perf_counter()
            for th in threads:
                th.start()
            time.sleep(args.seconds)
            stop.set()
            for th in threads:
                th.join()
            elapsed = time.perf_counter() - t0
            emit(metric="ping_throughput", threads=args.threads, calls=sum(count),
                 calls_per_s=round(sum(count) / elapsed, 1))

            got = threading.Event()
            sent_at: list[float] = []
            event_lat: list[float] = []

            def on_log(rec: dict) -> None:
                if rec.get("logger") == "tradebaas.user":
                    event_lat.append((time.perf_counter() - sent_at[-1]) * 1000)
                    got.set()

            client.subscribe("log", on_log)
            for i in range(500):
                got.clear()
                sent_at.append(time.perf_counter())
                client.call("engine.log", message=f"bench {i}")
                got.wait(5)
            emit(metric="event_push_ms", n=len(event_lat), p50=round(statistics.median(event_lat), 4),
                 p99=round(pct(event_lat, 0.99), 4))
    finally:
        if tmp is not None:
            daemon.stop(home)
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
