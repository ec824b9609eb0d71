"""The coalescer: merges pushed events and bounds the rate of widget updates."""

from __future__ import annotations

import threading

import pytest

from tradebaas.notebook.coalesce import Batch, Coalescer, Pump


def test_newest_value_per_key_wins_and_first_seen_order_is_kept() -> None:
    c = Coalescer(max_per_second=4)
    c.put("strategies", "a", 1)
    c.put("strategies", "b", 2)
    c.put("strategies", "a", 3)
    batch = c.flush(now=0.0)
    assert batch is not None
    assert list(batch.get("strategies").items()) == [("a", 3), ("b", 2)]
    assert batch.get("orders") == {}


def test_first_update_after_quiet_period_flushes_at_once() -> None:
    c = Coalescer(max_per_second=4)
    assert c.flush(now=100.0) is None  # nothing pending
    c.put("t", 1, "x")
    assert c.due(100.0)
    assert c.flush(now=100.0) is not None


def test_flushes_at_most_max_per_second() -> None:
    c = Coalescer(max_per_second=4)  # interval 0.25 s
    c.put("t", 1, "x")
    assert c.flush(now=10.0) is not None
    c.put("t", 1, "y")
    assert not c.due(10.1)
    assert c.flush(now=10.1) is None
    assert c.next_flush_at() == pytest.approx(10.25)
    batch = c.flush(now=10.25)
    assert batch is not None and batch.get("t") == {1: "y"}


def test_rate_over_a_burst_is_bounded() -> None:
    c = Coalescer(max_per_second=5)
    flushes = 0
    now = 0.0
    for i in range(10_000):  # 10,000 events over 2 simulated seconds
        now = i * 0.0002
        c.put("positions", i % 3, i)
        if c.flush(now) is not None:
            flushes += 1
    assert flushes <= 2 * 5 + 1


def test_force_flush_ignores_the_rate() -> None:
    c = Coalescer(max_per_second=1)
    c.put("t", 1, 1)
    c.flush(0.0)
    c.put("t", 1, 2)
    assert c.flush(0.1) is None
    assert c.flush(0.1, force=True) is not None


def test_appended_items_keep_order_and_are_bounded() -> None:
    c = Coalescer(max_per_second=4, max_items=3)
    for i in range(5):
        c.append("log", i)
    batch = c.flush(0.0)
    assert batch is not None
    assert batch.items("log") == [2, 3, 4]
    assert batch.dropped == 2
    c.append("log", "next")
    assert c.flush(1.0).items("log") == ["next"]  # type: ignore[union-attr]


def test_flags_are_set_semantics_and_cleared_by_flush() -> None:
    c = Coalescer()
    c.flag("resync")
    c.flag("resync")
    batch = c.flush(0.0)
    assert batch is not None and batch.flags == {"resync"}
    assert not c.pending
    c.put("t", 1, 1)
    assert c.flush(5.0).flags == set()  # type: ignore[union-attr]


def test_rejects_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        Coalescer(max_per_second=0)


def test_batch_is_empty_until_something_is_added() -> None:
    assert Batch().is_empty()
    assert not Batch(flags={"x"}).is_empty()


def test_pump_applies_on_its_own_thread_and_merges_a_burst() -> None:
    applied: list[Batch] = []
    threads: set[str] = set()
    done = threading.Event()

    def apply(batch: Batch) -> None:
        threads.add(threading.current_thread().name)
        applied.append(batch)
        if batch.get("t").get("k") == 999:
            done.set()

    pump = Pump(apply, max_per_second=5, name="pump-under-test")
    pump.start()
    try:
        for i in range(1000):
            pump.put("t", "k", i)
        assert done.wait(5.0), "the newest value never reached apply"
    finally:
        pump.stop()
    assert threads == {"pump-under-test"}
    assert len(applied) <= 3  # 1000 puts became a handful of applies
    assert not pump.alive


def test_pump_ticks_without_events_and_survives_apply_errors() -> None:
    ticks = threading.Event()
    failed = threading.Event()
    recovered = threading.Event()

    def apply(batch: Batch) -> None:
        if "boom" in batch.flags:
            raise RuntimeError("display bug")
        recovered.set()

    pump = Pump(apply, tick=lambda now: ticks.set(), tick_s=0.05, on_error=lambda exc: failed.set())
    pump.start()
    try:
        assert ticks.wait(5.0)
        pump.flag("boom")
        assert failed.wait(5.0)
        pump.put("t", 1, 1)
        assert recovered.wait(5.0), "apply stopped running after an error"
    finally:
        pump.stop()
