"""Deribit's credit model for rate limits, pure (the caller passes the time).

Why: a client that works against the simulator must also survive the real exchange's limits, so the model is the
real one (credits that refill continuously, a burst pool, a separate tier for matching-engine calls) with
configurable numbers. Time is real (monotonic) seconds: limits protect the server, not the simulated market.
"""

from __future__ import annotations

from dataclasses import dataclass

MATCHING_ENGINE_METHODS = frozenset({
    "private/buy", "private/sell", "private/edit", "private/edit_by_label", "private/cancel", "private/cancel_all",
    "private/cancel_all_by_instrument", "private/cancel_all_by_currency", "private/cancel_all_by_kind_or_type",
    "private/cancel_by_label", "private/close_position",
})


@dataclass(slots=True, frozen=True)
class RateLimitConfig:
    """Non-matching calls cost ``cost`` credits from a pool of ``pool`` refilled at ``refill_per_s``; matching
    engine calls use a request bucket of ``me_burst`` refilled at ``me_rate_per_s``. ``enabled=False`` = off."""

    cost: float = 500.0
    pool: float = 50_000.0
    refill_per_s: float = 10_000.0
    me_burst: float = 100.0
    me_rate_per_s: float = 30.0
    enabled: bool = True

    @classmethod
    def parse(cls, spec: str) -> RateLimitConfig:
        """``off`` | ``deribit`` (lowest real tier: burst 20, 5/s) | ``default`` | ``key=value,...``."""
        spec = spec.strip()
        if spec in ("", "default"):
            return cls()
        if spec == "off":
            return cls(enabled=False)
        if spec == "deribit":
            return cls(me_burst=20.0, me_rate_per_s=5.0)
        values: dict[str, float] = {}
        for part in spec.split(","):
            key, sep, val = part.partition("=")
            if not sep or key.strip() not in ("cost", "pool", "refill_per_s", "me_burst", "me_rate_per_s"):
                raise ValueError(f"bad rate limit spec {part!r} (use off, deribit, default or key=value,...)")
            values[key.strip()] = float(val)
        return cls(**values)  # type: ignore[arg-type]

    def deribit_limits(self) -> dict[str, object]:
        """These limits in the shape of the ``limits`` object of Deribit's extended account summary (requests:
        ``burst`` = bucket size, ``rate`` = refill per second), so a client can read its headroom the same way
        from the simulator as from the exchange."""
        me = {"burst": int(self.me_burst), "rate": self.me_rate_per_s}
        return {
            "limits_per_currency": False,
            "non_matching_engine": {"burst": int(self.pool // self.cost), "rate": self.refill_per_s / self.cost},
            "matching_engine": {"trading": {"total": dict(me)}, "cancel_all": dict(me)},
        }


class Bucket:
    """A token bucket: ``capacity`` tokens, ``rate`` tokens per second, starts full."""

    __slots__ = ("capacity", "rate", "tokens", "t")

    def __init__(self, capacity: float, rate: float, now_s: float) -> None:
        self.capacity, self.rate, self.tokens, self.t = capacity, rate, capacity, now_s

    def take(self, cost: float, now_s: float) -> bool:
        if now_s > self.t:
            self.tokens = min(self.capacity, self.tokens + (now_s - self.t) * self.rate)
            self.t = now_s
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class RateLimiter:
    """Per-key (account id, or connection for anonymous calls) credit buckets."""

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config
        self._credits: dict[str, Bucket] = {}
        self._me: dict[str, Bucket] = {}

    def allow(self, key: str, method: str, now_s: float) -> bool:
        """True if the call may run; False means answer 10028 too_many_requests."""
        cfg = self.config
        if not cfg.enabled:
            return True
        if method in MATCHING_ENGINE_METHODS:
            b = self._me.get(key)
            if b is None:
                b = self._me[key] = Bucket(cfg.me_burst, cfg.me_rate_per_s, now_s)
            return b.take(1.0, now_s)
        b = self._credits.get(key)
        if b is None:
            b = self._credits[key] = Bucket(cfg.pool, cfg.refill_per_s, now_s)
        return b.take(cfg.cost, now_s)

    def forget(self, key: str) -> None:
        self._credits.pop(key, None)
        self._me.pop(key, None)
