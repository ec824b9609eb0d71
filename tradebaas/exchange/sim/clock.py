"""The simulated clock: every timestamp the simulator emits (orders, trades, tickers, get_time) follows it.

Why a separate clock: ``--speed 60`` replays a minute of market per real second, and a strategy must see exchange
time, never the host's. The clock maps real (monotonic) time to simulated ms and stops at the end of the data
(``end_ms``) so the replay freezes there instead of running into a future without prices.

Two modes (``--clock``):

- ``replay`` (the default of ``tradebaas sim``): the data's own timestamps, at ``--speed``; a replay of January
  2025 says it is January 2025.
- ``present`` (what ``tradebaas up`` runs): the replay is *presented at wall-clock time*. Every timestamp of the
  data is shifted by one offset, a whole number of days (``present_offset``), so the simulated clock is the
  host's clock and candles, ticks, trades, orders and charts all agree with each other and with "now". Why:
  third-party clients compute "since" from their own clock (ccxt's ``fetch_ohlcv`` with only ``limit`` asks for the
  last minutes of *now*), so a replay of the past would answer them with nothing. Speed is 1. The offset is saved
  with the state, so a restart keeps the mapping and the market moves on by the time it was down, as a real one
  does; a new offset is chosen only when there is none, or the data at "now" has run out.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MINUTE_MS = 60_000
DAY_MS = 1440 * MINUTE_MS
CLOCK_MODES = ("replay", "present")


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

    @classmethod
    def wall(cls, end_ms: int | None = None, now: Callable[[], float] = time.time) -> SimClock:
        """The ``present`` clock: ``now_ms()`` is the host's clock itself (``now()`` in ms, capped at ``end_ms``).

        Anchored at the epoch, not at construction: a clock anchored at a wall time taken before the data and the
        saved state were loaded ran behind the host by that loading time (seconds on a busy machine), and a
        client asking for its trades "since a second ago" by its own clock got none."""
        clock = cls(0, 1.0, end_ms=end_ms, monotonic=now)
        clock._t0 = 0.0
        return clock

    def wall_delay_s(self, target_ms: int) -> float:
        """Real seconds until the simulated clock reaches ``target_ms`` (0 if already there)."""
        return max(0.0, (target_ms - self.now_ms()) / (self.speed * 1000.0))

    @property
    def finished(self) -> bool:
        return self.end_ms is not None and self.now_ms() >= self.end_ms


def present_offset(wall_ms: int, data_start_ms: int, data_end_ms: int, replay_from_ms: int,
                   saved_offset_ms: int | None = None) -> int:
    """The shift (ms) that presents the replay at wall-clock time.

    ``saved_offset_ms`` (from the state of a previous present-mode run) is kept while the data still covers
    ``wall_ms - offset``. Otherwise the replay starts (again) at ``replay_from_ms`` (``--start`` or the data's default
    start): the offset is a whole number of days when that leaves ``wall_ms - offset`` inside the data (within a day
    after the start), so every bar of every resolution (1 minute to 1 day) and the time of day are the data's own;
    for data shorter than that (the tick sample), a whole number of minutes (within a minute after the start), which
    keeps every minute bar whole.
    """
    if saved_offset_ms is not None and data_start_ms <= wall_ms - saved_offset_ms <= data_end_ms:
        return saved_offset_ms
    days = (wall_ms - replay_from_ms) // DAY_MS * DAY_MS
    if wall_ms - days <= data_end_ms:
        return days
    return (wall_ms - replay_from_ms) // MINUTE_MS * MINUTE_MS
