"""How much chaos to run: the short run that ``make test`` collects, or the full run of ``make chaos``.

Why environment variables: the same test files serve both runs, and ``make chaos`` only sets ``CHAOS=full``; any
count can also be set on its own (``CHAOS_ENGINE_KILLS=20 pytest tests/chaos/test_engine_kills.py``). Every
figure a run produced goes to stdout (run pytest with ``-s`` to see progress) and, as JSON lines, to
``CHAOS_OUT`` (default ``test-artifacts/chaos/results.jsonl``).

Counts of the full run (issue 13): 100 engine kills, 100 engine kills while the exchange answers slowly, 100
simulator kills, fault rounds of every kind, 10,000 fuzz frames, a 24-simulated-hour soak.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

FULL = os.environ.get("CHAOS", "").lower() == "full"


def _int(name: str, short: int, full: int) -> int:
    return int(os.environ.get(name, full if FULL else short))


def _float(name: str, short: float, full: float) -> float:
    return float(os.environ.get(name, full if FULL else short))


ENGINE_KILLS = _int("CHAOS_ENGINE_KILLS", 3, 100)
SLOW_KILLS = _int("CHAOS_SLOW_KILLS", 2, 100)
SIM_KILLS = _int("CHAOS_SIM_KILLS", 2, 100)
FAULT_ROUNDS = _int("CHAOS_FAULT_ROUNDS", 4, 20)
FUZZ_FRAMES = _int("CHAOS_FUZZ_FRAMES", 600, 10_000)
#: Simulated hours of the soak and the simulator's speed for it (simulated seconds per real second): the full run's
#: 24 hours at 60x take 24 minutes of wall time.
SOAK_HOURS = _float("CHAOS_SOAK_HOURS", 1.0, 24.0)
SOAK_SPEED = _float("CHAOS_SOAK_SPEED", 600.0, 60.0)
#: The market's pace during kill and fault rounds: a 1-minute candle every 0.2 s, so Razor (tuned to trade often)
#: and ema_cross keep orders, fills and brackets in flight when the kill lands.
SPEED = _float("CHAOS_SPEED", 300.0, 300.0)
#: Swap the strategies' instruments every this many rounds, so both strategies trade both instruments.
SWAP_EVERY = _int("CHAOS_SWAP_EVERY", 2, 25)
#: "Running within 5 s of the exchange being back" (issue 13).
RESUME_LIMIT_S = float(os.environ.get("CHAOS_RESUME_LIMIT_S", 5.0))

SEED = int(os.environ.get("CHAOS_SEED", random.SystemRandom().randrange(1 << 31)))

OUT = Path(os.environ.get("CHAOS_OUT", Path(__file__).resolve().parents[2] / "test-artifacts" / "chaos"
                          / "results.jsonl"))


def timeout_for(rounds: int, per_round_s: float, base_s: float = 120.0) -> float:
    """A pytest-timeout for a test of ``rounds`` rounds: generous, so a loaded machine fails on a real hang only."""
    return base_s + rounds * per_round_s
