"""When reports are due: pure cron arithmetic, no clock, no I/O (the scheduler passes ``now`` in).

Model. Each scheduled report has a *handled* mark: the latest cron slot that was dealt with (run, or deliberately
skipped). A slot is a point in time the cron expression names (``0 7 * * *`` -> every day 07:00 in the report's
time zone). Given ``now``, the latest slot ``<= now`` is either already handled (nothing to do), or it is new:

- *on time* (``now - slot <= grace_s``): fire it;
- *late* (the engine was down, or busy, when it came): fire it once if ``catch_up`` (one run, however many slots
  were missed: a morning report for the day, not seven of them after a week off), else skip it;
- if a run of the report is still going (queued or running), the slot is skipped: one run per report at a time,
  and a slow report never piles runs up behind itself.

In every case the mark moves to that slot, so the same slot is never acted on twice. A report never handled
starts with its mark at ``baseline`` (when the scheduler first saw it), so adding a report to the config does not
fire it at once. All datetimes are timezone-aware; slots are computed in the report's zone and compared in UTC.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

#: A slot is "on time" this long after it passed; later it counts as missed (catch-up rules apply).
DEFAULT_GRACE_S = 60.0


@dataclass(frozen=True, slots=True)
class Spec:
    """What the scheduler needs of a report's config."""

    cron: str
    catch_up: bool = True
    tz: str = "UTC"


@dataclass(frozen=True, slots=True)
class Fire:
    """Run ``name`` for ``slot``; ``late`` says it is a catch-up after downtime (or a busy engine)."""

    name: str
    slot: datetime
    late: bool = False


@dataclass(frozen=True, slots=True)
class Skip:
    """``slot`` of ``name`` is not run; ``reason`` is "running" or "missed" (late, catch_up off)."""

    name: str
    slot: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    fires: list[Fire]
    skips: list[Skip]
    handled: dict[str, datetime]  # the new marks (every report of ``specs``)


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError("schedule times must be timezone-aware (use datetime.now(UTC))")
    return t


def prev_slot(cron: str, now: datetime, tz: str = "UTC") -> datetime:
    """The latest slot at or before ``now`` (a slot exactly at ``now`` counts)."""
    local = _aware(now).astimezone(ZoneInfo(tz))
    # croniter's get_prev is strictly before its start: start one microsecond later to include ``now`` itself.
    it = croniter(cron, local + timedelta(microseconds=1))
    return it.get_prev(datetime).astimezone(now.tzinfo)


def next_slot(cron: str, after: datetime, tz: str = "UTC") -> datetime:
    """The first slot strictly after ``after``."""
    local = _aware(after).astimezone(ZoneInfo(tz))
    return croniter(cron, local).get_next(datetime).astimezone(after.tzinfo)


def plan(
    specs: Mapping[str, Spec],
    handled: Mapping[str, datetime | None],
    now: datetime,
    *,
    busy: Collection[str] = (),
    baseline: datetime | Mapping[str, datetime] | None = None,
    grace_s: float = DEFAULT_GRACE_S,
) -> Plan:
    """Decide, for every report in ``specs``, whether a slot fires now (see the module doc for the rules).

    ``handled[name]`` is the report's mark (None/absent: never handled, then ``baseline`` - one time for all or a
    time per report - else ``now``). ``busy`` names the reports with a queued or running run.
    """
    _aware(now)
    fires: list[Fire] = []
    skips: list[Skip] = []
    marks: dict[str, datetime] = {}
    for name in sorted(specs):
        spec = specs[name]
        mark = handled.get(name)
        if mark is None:
            base = baseline.get(name) if isinstance(baseline, Mapping) else baseline
            mark = base if base is not None else now
        _aware(mark)
        slot = prev_slot(spec.cron, now, spec.tz)
        if slot <= mark:
            marks[name] = mark
            continue
        marks[name] = slot
        late = (now - slot).total_seconds() > grace_s
        if name in busy:
            skips.append(Skip(name, slot, "running"))
        elif late and not spec.catch_up:
            skips.append(Skip(name, slot, "missed"))
        else:
            fires.append(Fire(name, slot, late))
    return Plan(fires, skips, marks)


def next_due(specs: Mapping[str, Spec], handled: Mapping[str, datetime], now: datetime) -> datetime | None:
    """The earliest upcoming slot over all reports (when the scheduler should look again), None if none."""
    upcoming = [next_slot(s.cron, max(now, handled.get(n, now)), s.tz) for n, s in specs.items()]
    return min(upcoming) if upcoming else None


def missed_slots(cron: str, since: datetime, now: datetime, tz: str = "UTC", limit: int = 10_000) -> int:
    """How many slots fell in ``(since, now]`` (for log messages: "3 slots missed, running once")."""
    count, t = 0, since
    while count < limit:
        t = next_slot(cron, t, tz)
        if t > now:
            break
        count += 1
    return count
