"""Coalescing of pushed engine events into a few widget updates per second.

The engine can push hundreds of events a second (orders, positions, log lines, decisions). Every widget trait
assignment becomes a comm message to the browser, so applying each event as it comes would flood the frontend and
the kernel's iopub channel. The :class:`Coalescer` keeps only what matters for display:

- *keyed* updates replace the previous value for the same key (the newest strategy state, position, order or
  decision wins: the panel shows state, not history);
- *appended* items are kept in order but bounded (log lines, closed trades), so a burst cannot grow memory;
- *flags* mark that something must happen once (e.g. "resync": re-fetch the full state after a reconnect).

It is pure: no threads, no clock. Every call takes ``now`` (seconds, any monotonic origin), so it is tested with
plain numbers. :class:`Pump` is the thin threaded driver used by the control panel.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Batch:
    """What accumulated since the previous flush. Keyed values keep their first-seen order per topic."""

    keyed: dict[str, dict[Hashable, Any]] = field(default_factory=dict)
    appended: dict[str, list[Any]] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    dropped: int = 0  # appended items discarded because a topic's bound was reached

    def is_empty(self) -> bool:
        return not (self.keyed or self.appended or self.flags)

    def get(self, topic: str) -> dict[Hashable, Any]:
        """The keyed updates of ``topic`` (empty if none)."""
        return self.keyed.get(topic, {})

    def items(self, topic: str) -> list[Any]:
        """The appended items of ``topic`` in arrival order (empty if none)."""
        return self.appended.get(topic, [])


class Coalescer:
    """Merge updates and release them as batches, at most ``max_per_second`` times per second.

    The first update after a quiet period is released at once (low latency for a single click's answer); further
    updates wait until ``1 / max_per_second`` has passed since the previous flush (bounded rate for bursts).
    """

    def __init__(self, max_per_second: float = 4.0, max_items: int = 200) -> None:
        if max_per_second <= 0:
            raise ValueError("max_per_second must be positive")
        self.interval_s = 1.0 / max_per_second
        self.max_items = max_items
        self._batch = Batch()
        self._appended: dict[str, deque[Any]] = {}
        self._last_flush: float | None = None
        self._pending = False

    @property
    def pending(self) -> bool:
        """True while something waits to be flushed."""
        return self._pending

    def put(self, topic: str, key: Hashable, value: Any) -> None:
        """Record the newest ``value`` for ``key`` in ``topic``; an older pending value for that key is replaced."""
        self._batch.keyed.setdefault(topic, {})[key] = value
        self._pending = True

    def append(self, topic: str, item: Any) -> None:
        """Queue ``item`` in ``topic``; only the newest ``max_items`` per topic survive until the flush."""
        queue = self._appended.get(topic)
        if queue is None:
            queue = self._appended[topic] = deque(maxlen=self.max_items)
        if len(queue) == queue.maxlen:
            self._batch.dropped += 1
        queue.append(item)
        self._pending = True

    def flag(self, name: str) -> None:
        """Ask for a one-off action at the next flush (set semantics: flagging twice is the same as once)."""
        self._batch.flags.add(name)
        self._pending = True

    def next_flush_at(self) -> float | None:
        """When the pending batch may be released (None when nothing is pending)."""
        if not self._pending:
            return None
        if self._last_flush is None:
            return float("-inf")
        return self._last_flush + self.interval_s

    def due(self, now: float) -> bool:
        at = self.next_flush_at()
        return at is not None and now >= at

    def flush(self, now: float, force: bool = False) -> Batch | None:
        """Release the pending batch if the rate allows it (or ``force``), else None."""
        if not self._pending or (not force and not self.due(now)):
            return None
        batch = self._batch
        batch.appended = {topic: list(q) for topic, q in self._appended.items() if q}
        self._batch = Batch()
        self._appended = {}
        self._pending = False
        self._last_flush = now
        return batch


class Pump:
    """Run a :class:`Coalescer` on a daemon thread: producers call ``put``/``append``/``flag`` from any thread,
    and ``apply(batch)`` runs on the pump's thread, never on the producer's (the RPC client's callback thread must
    not be blocked) and never on the kernel's main thread (so the notebook stays responsive).

    ``tick(now)`` runs at least every ``tick_s`` seconds even without events: the panel uses it to refresh
    uptimes and to notice a lost engine.
    """

    def __init__(
        self,
        apply: Callable[[Batch], None],
        max_per_second: float = 4.0,
        tick: Callable[[float], None] | None = None,
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "tradebaas-panel",
    ) -> None:
        self._coalescer = Coalescer(max_per_second)
        self._apply = apply
        self._tick = tick
        self._tick_s = tick_s
        self._clock = clock
        self._on_error = on_error
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._started and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def put(self, topic: str, key: Hashable, value: Any) -> None:
        with self._cond:
            self._coalescer.put(topic, key, value)
            self._cond.notify_all()

    def append(self, topic: str, item: Any) -> None:
        with self._cond:
            self._coalescer.append(topic, item)
            self._cond.notify_all()

    def flag(self, name: str) -> None:
        with self._cond:
            self._coalescer.flag(name)
            self._cond.notify_all()

    def _run(self) -> None:
        next_tick = self._clock()
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    now = self._clock()
                    batch = self._coalescer.flush(now)
                    if batch is not None or now >= next_tick:
                        break
                    at = self._coalescer.next_flush_at()
                    wake = next_tick if at is None else min(at, next_tick)
                    self._cond.wait(max(wake - now, 0.001))
            try:
                if batch is not None:
                    self._apply(batch)
                if self._tick is not None and now >= next_tick:
                    next_tick = now + self._tick_s
                    self._tick(now)
                elif now >= next_tick:
                    next_tick = now + self._tick_s
            except Exception as exc:  # a display bug must not kill live updates
                if self._on_error is not None:
                    self._on_error(exc)
