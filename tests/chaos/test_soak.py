"""The soak: hours of simulated trading (24 in the full run, at 60x: 24 minutes of wall time), sampling the engine's
resources, and asserting that none grows without bound once warm.

Sampled every ``STEP_MIN`` simulated minutes: the engine's RSS (``/proc/<pid>/status`` VmRSS), its open file
descriptors (``/proc/<pid>/fd``), the journal (``journal.sqlite`` and its ``-wal``), the engine's logs
(``logs/engine.log*``), the market recordings (``data/``), and the journal's event count. The engine runs as a
detached engine does (``--detached-child``: its log goes only to ``engine.log``, which rotates).

"Bounded", precisely (the second half of the run, after the first ``WARMUP_FRACTION`` of it, is what counts):
- RSS: the least-squares slope over the second half is below ``RSS_SLOPE_MB_PER_H`` MB per simulated hour, so a
  leak of that size or more fails (the earlier engine grew ~1.5 MB per wall minute while trading). Asserted only
  for runs of at least ``RSS_MIN_HOURS`` simulated hours: RSS climbs for the first ~10 of them as lazily imported
  modules (pandas, pyarrow: the recorder's first flush) arrive and the recorder's day file of market trades grows
  toward UTC midnight, then levels (tracemalloc showed no Python object accumulating: see docs/reliability.md); a
  shorter run (``make test``'s) reports RSS and checks everything else;
- file descriptors: never more in the second half than the most seen in the first half plus ``FD_SLACK`` (sockets
  come and go; a leak climbs);
- journal: the WAL stays below ``WAL_LIMIT_BYTES`` (checkpoints happen), the journal costs at most
  ``BYTES_PER_EVENT_LIMIT`` bytes per journaled event, and an event costs no more in the second half than
  ``GROWTH_RATIO_LIMIT`` times what it cost in the first (linear in what happened, never accelerating);
- logs: ``engine.log`` within its rotation size and no more rotated files than the rotation keeps.
The figures go out as JSON lines (a sample every ~10% of the run, and the summary).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import rounds, settings
from tests.chaos.report import emit, slope
from tests.chaos.world import World
from tests.conftest import wait_for
from tradebaas.engine.process.logs import BACKUP_COUNT, MAX_BYTES

STEP_MIN = 5 if settings.SOAK_HOURS >= 6 else 1
WARMUP_FRACTION = 0.5
RSS_SLOPE_MB_PER_H = float(os.environ.get("CHAOS_SOAK_RSS_SLOPE", 0.5))
FD_SLACK = 4
WAL_LIMIT_BYTES = 64 << 20
BYTES_PER_EVENT_LIMIT = 4096
GROWTH_RATIO_LIMIT = 1.5
HOUR_MS = 3_600_000
RSS_MIN_HOURS = 12.0


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _size(path: Path) -> int:
    """Bytes under ``path``, read while the engine writes: a file renamed away between the listing and its stat
    (the recorder's temporary file, renamed into place) counts as gone."""
    if not path.exists():
        return 0
    total = 0
    for p in [path] if path.is_file() else path.rglob("*"):
        with contextlib.suppress(FileNotFoundError):
            if p.is_file():
                total += p.stat().st_size
    return total


def _events(world: World) -> int:
    import sqlite3

    conn = sqlite3.connect(f"file:{world.home.root / 'journal.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT max(id) FROM events").fetchone()[0] or 0)
    finally:
        conn.close()


def sample(world: World, start_ms: int) -> dict[str, Any]:
    assert world.eng is not None and world.eng.alive(), "the engine died during the soak"
    pid = world.eng.pid
    root = world.home.root
    logs = sorted(world.home.logs_dir.glob("engine.log*"))
    return {
        "sim_h": round((world.sim.now_ms() - start_ms) / HOUR_MS, 4),
        "rss_mb": round(_rss_kb(pid) / 1024, 2),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "journal_bytes": _size(root / "journal.sqlite"),
        "wal_bytes": _size(root / "journal.sqlite-wal"),
        "events": _events(world),
        "log_bytes": sum(_size(p) for p in logs),
        "log_files": len(logs),
        "engine_log_bytes": _size(world.home.logs_dir / "engine.log"),
        "recordings_bytes": _size(root / "data"),
    }


def bounds(samples: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The soak's figures and the bounds they break (see the module docstring)."""
    cut = int(len(samples) * WARMUP_FRACTION)
    first, second = samples[:cut], samples[cut:]
    hours = [s["sim_h"] for s in second]
    rss_slope = slope(hours, [s["rss_mb"] for s in second])

    def rate(part: list[dict[str, Any]], key: str) -> float:
        return (part[-1][key] - part[0][key]) / max(1e-9, part[-1]["sim_h"] - part[0]["sim_h"])

    journal_rate = (rate(first, "journal_bytes"), rate(second, "journal_bytes"))

    def per_event(part: list[dict[str, Any]]) -> float:
        return (part[-1]["journal_bytes"] - part[0]["journal_bytes"]) / max(1, part[-1]["events"] - part[0]["events"])

    event_cost = (per_event(first), per_event(second))
    end = samples[-1]
    figures = {
        "samples": len(samples), "sim_hours": end["sim_h"],
        "rss_mb": {"start": samples[0]["rss_mb"], "after_warmup": second[0]["rss_mb"], "end": end["rss_mb"],
                   "max": max(s["rss_mb"] for s in samples),
                   "slope_mb_per_sim_h_second_half": round(rss_slope, 3),
                   "slope_mb_per_sim_h_first_half": round(slope([s["sim_h"] for s in first],
                                                                [s["rss_mb"] for s in first]), 3)},
        "fds": {"max_first_half": max(s["fds"] for s in first), "max_second_half": max(s["fds"] for s in second),
                "end": end["fds"]},
        "journal": {"end_bytes": end["journal_bytes"], "max_wal_bytes": max(s["wal_bytes"] for s in samples),
                    "events": end["events"],
                    "bytes_per_event": round(end["journal_bytes"] / max(1, end["events"]), 1),
                    "bytes_per_sim_h": [round(r) for r in journal_rate],
                    "bytes_per_new_event": [round(c) for c in event_cost]},
        "logs": {"bytes": end["log_bytes"], "files": end["log_files"], "engine_log_bytes": end["engine_log_bytes"],
                 "bytes_per_sim_h": round(rate(samples, "log_bytes"))},
        "recordings": {"bytes": end["recordings_bytes"], "bytes_per_sim_h": round(rate(samples, "recordings_bytes"))},
    }
    broken = []
    if end["sim_h"] >= RSS_MIN_HOURS and rss_slope > RSS_SLOPE_MB_PER_H:
        broken.append(f"RSS grows {rss_slope:.3f} MB per simulated hour after warm-up (limit {RSS_SLOPE_MB_PER_H})")
    if figures["fds"]["max_second_half"] > figures["fds"]["max_first_half"] + FD_SLACK:
        broken.append(f"file descriptors climb: {figures['fds']}")
    if figures["journal"]["max_wal_bytes"] > WAL_LIMIT_BYTES:
        broken.append(f"the WAL reached {figures['journal']['max_wal_bytes']} bytes")
    if figures["journal"]["bytes_per_event"] > BYTES_PER_EVENT_LIMIT:
        broken.append(f"the journal costs {figures['journal']['bytes_per_event']} bytes per event")
    if event_cost[1] > GROWTH_RATIO_LIMIT * max(event_cost[0], 256.0):
        broken.append(f"a journaled event costs more in the second half: {event_cost} bytes")
    if end["engine_log_bytes"] > MAX_BYTES or end["log_files"] > BACKUP_COUNT + 1:
        broken.append(f"logs beyond their rotation: {figures['logs']}")
    return figures, broken


@pytest.mark.timeout(300 + settings.SOAK_HOURS * 3600 / settings.SOAK_SPEED * 2)
def test_a_long_trading_run_keeps_memory_descriptors_journal_and_logs_bounded(
    make_world: Callable[..., World]
) -> None:
    world = make_world(speed=settings.SOAK_SPEED, engine_args=["--detached-child"])
    world.start_strategies()
    start_ms = world.sim.now_ms()
    end_ms = start_ms + int(settings.SOAK_HOURS * HOUR_MS)
    wall_per_step = STEP_MIN * 60 / settings.SOAK_SPEED
    samples = [sample(world, start_ms)]
    emit("soak_start", hours=settings.SOAK_HOURS, speed=settings.SOAK_SPEED, step_min=STEP_MIN, **samples[0])
    every = max(1, int(settings.SOAK_HOURS * 60 / STEP_MIN / 10))
    while samples[-1]["sim_h"] * HOUR_MS < end_ms - start_ms:
        target = start_ms + int(len(samples) * STEP_MIN * 60_000)
        wait_for(lambda: world.sim.now_ms() >= target, timeout=60 + 20 * wall_per_step,  # noqa: B023 - used at once
                 what="the next simulated step")
        samples.append(sample(world, start_ms))
        if len(samples) % every == 0:
            emit("soak_sample", **samples[-1])
    found, _ = world.checker.settle(world.should_run(), timeout=30)
    assert not found, found
    figures, broken = bounds(samples)
    trades = rounds.final_audit(world, "soak")
    emit("soak_summary", hours=settings.SOAK_HOURS, speed=settings.SOAK_SPEED, bounded=not broken, broken=broken,
         fills=trades["fills"], trades=trades["trades"], **figures)
    assert not broken, broken
