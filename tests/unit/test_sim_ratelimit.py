"""Deribit's credit model: burst pool, continuous refill, a separate matching-engine tier."""

from __future__ import annotations

import pytest

from tradebaas.exchange.sim.faults import Faults
from tradebaas.exchange.sim.ratelimit import RateLimitConfig, RateLimiter


def test_non_matching_calls_burst_100_then_refill_20_per_second() -> None:
    rl = RateLimiter(RateLimitConfig())
    assert sum(rl.allow("a", "public/ticker", 0.0) for _ in range(150)) == 100
    assert not rl.allow("a", "public/ticker", 0.0)
    assert sum(rl.allow("a", "public/ticker", 1.0) for _ in range(50)) == 20


def test_matching_engine_tier_is_separate_and_per_account() -> None:
    rl = RateLimiter(RateLimitConfig.parse("deribit"))
    assert sum(rl.allow("a", "private/buy", 0.0) for _ in range(30)) == 20
    assert rl.allow("a", "private/get_positions", 0.0)  # other pool
    assert rl.allow("b", "private/buy", 0.0)  # other account
    assert not rl.allow("a", "private/cancel", 0.1)
    assert rl.allow("a", "private/cancel", 0.2)  # 5/s refill: one token after 0.2 s


def test_off_allows_everything() -> None:
    rl = RateLimiter(RateLimitConfig.parse("off"))
    assert all(rl.allow("a", "private/buy", 0.0) for _ in range(10_000))


def test_spec_parsing() -> None:
    cfg = RateLimitConfig.parse("me_burst=5,me_rate_per_s=1")
    assert cfg.me_burst == 5 and cfg.me_rate_per_s == 1 and cfg.pool == 50_000
    with pytest.raises(ValueError):
        RateLimitConfig.parse("bogus=1")


def test_fault_errors_count_down_and_clear() -> None:
    f = Faults()
    f.apply({"action": "error", "methods": ["private/buy"], "code": 10028, "count": 2}, 0.0)
    assert f.error_for("private/sell") is None
    assert f.error_for("private/buy").code == 10028  # type: ignore[union-attr]
    assert f.error_for("private/buy") is not None
    assert f.error_for("private/buy") is None
    f.apply({"action": "stall", "seconds": 2}, 10.0)
    assert f.stalled(11.0) and not f.stalled(12.5)
    f.apply({"action": "clear"}, 0.0)
    assert f.describe(0.0)["errors"] == [] and not f.stalled(0.0)
    with pytest.raises(ValueError):
        f.apply({"action": "explode"}, 0.0)


def test_limits_are_reported_in_the_shape_of_deribits_extended_account_summary() -> None:
    limits = RateLimitConfig.parse("deribit").deribit_limits()
    assert limits["matching_engine"] == {"trading": {"total": {"burst": 20, "rate": 5.0}},
                                         "cancel_all": {"burst": 20, "rate": 5.0}}
    assert limits["non_matching_engine"] == {"burst": 100, "rate": 20.0}
