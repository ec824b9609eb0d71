"""The report schedule as a specification: pure functions of (cron, marks, now), no clock, no waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tradebaas.reports.schedule import Fire, Skip, Spec, missed_slots, next_due, next_slot, plan, prev_slot

DAILY = Spec("0 7 * * *")


def t(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2025, 1, day, hour, minute, second, tzinfo=UTC)


# -- slots -------------------------------------------------------------------------------------------------------
def test_prev_slot_includes_a_slot_exactly_at_now() -> None:
    assert prev_slot("0 7 * * *", t(2, 7)) == t(2, 7)


def test_prev_slot_before_todays_slot_is_yesterdays() -> None:
    assert prev_slot("0 7 * * *", t(2, 6, 59, 59)) == t(1, 7)


def test_next_slot_is_strictly_after() -> None:
    assert next_slot("0 7 * * *", t(2, 7)) == t(3, 7)
    assert next_slot("*/15 * * * *", t(2, 7, 1)) == t(2, 7, 15)


def test_slots_follow_the_reports_time_zone_including_dst() -> None:
    # 07:00 in Amsterdam is 06:00 UTC in winter and 05:00 UTC in summer
    assert prev_slot("0 7 * * *", t(2, 12), "Europe/Amsterdam") == t(2, 6)
    summer = datetime(2025, 7, 2, 12, tzinfo=UTC)
    assert prev_slot("0 7 * * *", summer, "Europe/Amsterdam") == datetime(2025, 7, 2, 5, tzinfo=UTC)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        prev_slot("0 7 * * *", datetime(2025, 1, 2, 7))


def test_missed_slots_counts_slots_in_the_half_open_interval() -> None:
    assert missed_slots("0 7 * * *", t(1, 7), t(8, 7)) == 7
    assert missed_slots("0 7 * * *", t(1, 7), t(1, 8)) == 0


# -- plan: on time -----------------------------------------------------------------------------------------------
def test_nothing_fires_before_the_slot() -> None:
    p = plan({"daily": DAILY}, {"daily": t(1, 7)}, t(2, 6, 59))
    assert p.fires == [] and p.skips == []
    assert p.handled["daily"] == t(1, 7)


def test_the_slot_fires_when_reached_and_the_mark_moves_to_it() -> None:
    p = plan({"daily": DAILY}, {"daily": t(1, 7)}, t(2, 7, 0, 1))
    assert p.fires == [Fire("daily", t(2, 7), late=False)]
    assert p.handled["daily"] == t(2, 7)


def test_a_handled_slot_never_fires_twice() -> None:
    first = plan({"daily": DAILY}, {"daily": t(1, 7)}, t(2, 7, 0, 1))
    again = plan({"daily": DAILY}, first.handled, t(2, 7, 0, 30))
    assert again.fires == [] and again.skips == []


def test_every_minute_cron_fires_once_per_minute_when_ticked_often() -> None:
    spec = {"m": Spec("* * * * *")}
    marks: dict[str, datetime] = {"m": t(2, 7)}
    fired = []
    now = t(2, 7)
    for _ in range(5 * 60):  # five minutes of one-second ticks
        now += timedelta(seconds=1)
        p = plan(spec, marks, now)
        fired += p.fires
        marks = p.handled
    assert [f.slot for f in fired] == [t(2, 7, m) for m in range(1, 6)]
    assert not any(f.late for f in fired)


# -- plan: downtime and catch-up ---------------------------------------------------------------------------------
def test_after_a_week_down_a_missed_slot_runs_once_not_once_per_missed_slot() -> None:
    p = plan({"daily": DAILY}, {"daily": t(1, 7)}, t(8, 9, 30))
    assert p.fires == [Fire("daily", t(8, 7), late=True)]
    follow_up = plan({"daily": DAILY}, p.handled, t(8, 9, 31))
    assert follow_up.fires == []


def test_a_missed_slot_is_skipped_when_catch_up_is_off() -> None:
    spec = {"daily": Spec("0 7 * * *", catch_up=False)}
    p = plan(spec, {"daily": t(1, 7)}, t(3, 9))
    assert p.fires == []
    assert p.skips == [Skip("daily", t(3, 7), "missed")]
    assert p.handled["daily"] == t(3, 7)  # not retried on the next tick either
    assert plan(spec, p.handled, t(3, 9, 1)).skips == []


def test_catch_up_off_still_fires_on_time_slots() -> None:
    spec = {"daily": Spec("0 7 * * *", catch_up=False)}
    assert plan(spec, {"daily": t(1, 7)}, t(2, 7, 0, 5)).fires == [Fire("daily", t(2, 7), late=False)]


def test_the_grace_period_separates_on_time_from_late() -> None:
    marks = {"daily": t(1, 7)}
    assert plan({"daily": DAILY}, marks, t(2, 7, 1), grace_s=60).fires[0].late is False
    assert plan({"daily": DAILY}, marks, t(2, 7, 1, 1), grace_s=60).fires[0].late is True


def test_restart_after_todays_run_does_not_rerun_it() -> None:
    p = plan({"daily": DAILY}, {"daily": t(2, 7)}, t(2, 15))
    assert p.fires == []


# -- plan: new reports and busy ones -----------------------------------------------------------------------------
def test_a_new_report_does_not_fire_at_once_it_waits_for_its_next_slot() -> None:
    p = plan({"daily": DAILY}, {}, t(2, 15))
    assert p.fires == []
    assert p.handled["daily"] == t(2, 15)
    assert plan({"daily": DAILY}, p.handled, t(3, 7, 0, 2)).fires == [Fire("daily", t(3, 7))]


def test_a_baseline_in_the_past_makes_a_never_run_report_catch_up() -> None:
    p = plan({"daily": DAILY}, {}, t(3, 9), baseline={"daily": t(1, 12)})
    assert p.fires == [Fire("daily", t(3, 7), late=True)]


def test_a_slot_reached_while_the_previous_run_still_goes_is_skipped() -> None:
    p = plan({"daily": DAILY}, {"daily": t(1, 7)}, t(2, 7, 0, 1), busy={"daily"})
    assert p.fires == []
    assert p.skips == [Skip("daily", t(2, 7), "running")]
    assert plan({"daily": DAILY}, p.handled, t(2, 7, 5)).fires == []  # not made up for when it finishes


def test_reports_are_planned_independently() -> None:
    specs = {"daily": DAILY, "hourly": Spec("0 * * * *")}
    marks = {"daily": t(2, 7), "hourly": t(2, 7)}
    p = plan(specs, marks, t(2, 8, 0, 3), busy={"daily"})
    assert p.fires == [Fire("hourly", t(2, 8))]
    assert p.handled == {"daily": t(2, 7), "hourly": t(2, 8)}


def test_next_due_is_the_earliest_upcoming_slot() -> None:
    specs = {"daily": DAILY, "hourly": Spec("30 * * * *")}
    assert next_due(specs, {"daily": t(2, 7), "hourly": t(2, 7)}, t(2, 7, 10)) == t(2, 7, 30)
    assert next_due({}, {}, t(2, 7)) is None
