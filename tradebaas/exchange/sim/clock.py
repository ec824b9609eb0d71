"""The simulated clock: every timestamp the simulator emits (orders, trades, tickers, get_time) follows it.

Why a separate clock: ``--speed 60`` replays a minute of market per real second, and a strategy must see exchange
time, never the host's. The clock maps real (monotonic) time to simulated ms and stops at the end of the data
(``end_ms``) so the replay freezes there instead of running into a future without prices.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SimClock:
    """``now_ms() = start_ms + (monotonic - t0) * speed * 1000``, capped at ``end_ms`` and never going back."""

    def __init__(self, start_ms: int, speed: float = 1.0, end_ms: int | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self._mono = monotonic
        self.speed = float(speed)
        self.end_ms = end_ms
        self._anchor_ms = int(start_ms)
        self._t0 = monotonic()
        self._last = int(start_ms)

    def now_ms(self) -> int:
        t = self._anchor_ms + int((self._mono() - self._t0) * self.speed * 1000.0)
        if self.end_ms is not None and t > self.end_ms:
            t = self.end_ms
        if t < self._last:
            t = self._last
        self._last = t
        return t

    def wall_delay_s(self, target_ms: int) -> float:
        """Real seconds until the simulated clock reaches ``target_ms`` (0 if already there)."""
        return max(0.0, (target_ms - self.now_ms()) / (self.speed * 1000.0))

    @property
    def finished(self) -> bool:
        return self.end_ms is not None and self.now_ms() >= self.end_ms
