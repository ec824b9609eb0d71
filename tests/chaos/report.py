"""Progress and figures of a chaos run: one JSON line per round and one per test summary, on stdout and appended to
``settings.OUT``; plus the small statistics the summaries need (percentiles, a least-squares slope)."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

from tests.chaos import settings


def emit(kind: str, **fields: Any) -> dict[str, Any]:
    """Write one record ``{"kind": kind, "wall": ..., **fields}`` (stdout, flushed, and the results file)."""
    record = {"kind": kind, "wall": round(time.time(), 3), **fields}
    line = json.dumps(record, sort_keys=False, default=str)
    print(line, file=sys.stdout, flush=True)
    settings.OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(settings.OUT, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    return record


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / max of a list of durations (seconds), rounded for reading."""
    return {"n": len(values), "p50": round(percentile(values, 0.5), 3), "p90": round(percentile(values, 0.9), 3),
            "max": round(max(values), 3) if values else math.nan}


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (0 when fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
