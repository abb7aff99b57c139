"""When a rule is on: dates, weekdays and hours on the visitor's own wall clock.

"Good morning" means the visitor's morning, so a schedule is checked against the context's
``time.*`` attributes (the visitor's local time, from the geo time zone via zoneinfo, so
DST days are exact) rather than the server clock. ``start``/``end`` without an offset are
local times everywhere (a banner that starts at midnight starts at each visitor's
midnight); with an offset (``2025-12-01T00:00:00+01:00``) they are one instant for all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from proxy.context.localtime import WEEKDAYS, zone
from proxy.rules.attributes import did_you_mean
from proxy.rules.model import Problem, Schedule

KEYS = ("start", "end", "weekdays", "hours")
_ABBREVIATIONS = {name[:3]: i for i, name in enumerate(WEEKDAYS, 1)}


def parse_schedule(raw: Any, field: str = "schedule") -> Schedule:
    """Validate a ``[rule.schedule]`` table; raises :class:`Problem`."""
    if not isinstance(raw, Mapping) or not raw:
        raise Problem(field, "must be a table with start, end, weekdays and/or hours")
    for key in raw:
        if key not in KEYS:
            raise Problem(field, f'unknown key "{key}"' + did_you_mean(key, KEYS)
                          + f"; valid: {', '.join(KEYS)}", key)
    start = _moment(raw.get("start"), f"{field}.start", end=False)
    end = _moment(raw.get("end"), f"{field}.end", end=True)
    if start and end and start.replace(tzinfo=None) >= end.replace(tzinfo=None):
        raise Problem(f"{field}.end", f"{end.isoformat(' ')} is not after start "
                      f"{start.isoformat(' ')}", "end")
    weekdays = _weekdays(raw["weekdays"], f"{field}.weekdays") if "weekdays" in raw else ()
    hours = _hours(raw["hours"], f"{field}.hours") if "hours" in raw else ()
    return Schedule(start, end, frozenset(weekdays), frozenset(hours))


def _moment(value: Any, field: str, end: bool) -> datetime | None:
    """A TOML date-time or date (also as ISO text). A date as ``end`` means the end of
    that day: ``end = 2025-12-26`` keeps the rule on through the 26th."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value) if "T" in value or " " in value.strip() \
                else date.fromisoformat(value)
        except ValueError:
            value = None
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value + timedelta(days=1) if end else value, time())
    raise Problem(field, "expected a date (2025-12-01) or a date-time (2025-12-01T08:00:00, "
                  "with an offset such as +01:00 for one instant everywhere)",
                  field.rsplit(".", 1)[-1])


def _weekdays(value: Any, field: str) -> set[int]:
    valid = ('weekday names ("monday" or "mon") or ranges ("mon-fri", may wrap: '
             '"fri-mon")')
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise Problem(field, f"expected a list of {valid}", "weekdays")
    days: set[int] = set()
    for item in items:
        if not isinstance(item, str):
            raise Problem(field, f"{item!r} is not one of {valid}", "weekdays")
        ends = [_day(part.strip(), field, valid) for part in item.split("-")]
        if len(ends) > 2:
            raise Problem(field, f"{item!r} is not one of {valid}", item)
        days.update(_span(ends[0], ends[-1], 1, 7))
    return days


def _day(text: str, field: str, valid: str) -> int:
    key = text.lower()
    number = _ABBREVIATIONS.get(key[:3]) if key in WEEKDAYS or key in _ABBREVIATIONS else None
    if number is None:
        raise Problem(field, f'"{text}" is not a weekday' + did_you_mean(key, WEEKDAYS)
                      + f"; expected {valid}", text)
    return number


def _hours(value: Any, field: str) -> set[int]:
    valid = 'hours 0-23 or inclusive ranges such as "6-11" (06:00-11:59; may wrap: "22-5")'
    items = value if isinstance(value, list) else [value]
    if not items:
        raise Problem(field, f"expected a list of {valid}", "hours")
    hours: set[int] = set()
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            ends = [item]
        elif isinstance(item, str) and all(p.strip().isdigit() for p in item.split("-")):
            ends = [int(p) for p in item.split("-")]
        else:
            raise Problem(field, f"{item!r} is not one of {valid}", "hours")
        if len(ends) > 2 or not all(0 <= h <= 23 for h in ends):
            raise Problem(field, f"{item!r} is not one of {valid}", str(item))
        hours.update(_span(ends[0], ends[-1], 0, 23))
    return hours


def _span(first: int, last: int, lo: int, hi: int) -> list[int]:
    size = hi - lo + 1
    return [lo + (first - lo + i) % size for i in range((last - first) % size + 1)]


def check(schedule: Schedule, get: Callable[[str], Any]) -> str | None:
    """None when the schedule is on for this visitor now, else why it is not."""
    day, hour, minute = get("time.date"), get("time.hour"), get("time.minute")
    if not isinstance(day, str) or not isinstance(hour, int):
        return "the visitor's local time is not known"
    if schedule.weekdays and get("time.weekday_number") not in schedule.weekdays:
        return (f"it is {get('time.weekday')} for the visitor; the rule runs on "
                f"{describe_days(schedule.weekdays)}")
    if schedule.hours and hour not in schedule.hours:
        return (f"it is {hour:02d}:{(minute or 0):02d} for the visitor; the rule runs in "
                f"hours {describe_hours(schedule.hours)}")
    if schedule.start is None and schedule.end is None:
        return None
    local = datetime.combine(date.fromisoformat(day), time(hour, minute or 0))
    if schedule.start is not None and _now(local, schedule.start, get) < schedule.start:
        return f"starts {_show(schedule.start)}; it is {_show(local)} for the visitor"
    if schedule.end is not None and _now(local, schedule.end, get) >= schedule.end:
        return f"ended {_show(schedule.end)}; it is {_show(local)} for the visitor"
    return None


def _now(local: datetime, bound: datetime, get: Callable[[str], Any]) -> datetime:
    """The visitor's wall clock, as an instant when the bound is one."""
    if bound.tzinfo is None:
        return local
    tz: tzinfo | None = zone(str(get("time.zone") or ""))
    return local.replace(tzinfo=tz) if tz is not None else local.astimezone()


def _show(moment: datetime) -> str:
    return moment.isoformat(" ", "minutes")


def describe_days(days: frozenset[int]) -> str:
    return ", ".join(WEEKDAYS[d - 1] for d in sorted(days))


def describe_hours(hours: frozenset[int]) -> str:
    runs: list[list[int]] = []
    for h in sorted(hours):
        if runs and runs[-1][-1] == h - 1:
            runs[-1].append(h)
        else:
            runs.append([h])
    return ", ".join(f"{r[0]:02d}:00-{r[-1]:02d}:59" for r in runs)


def describe(schedule: Schedule) -> str:
    parts = []
    if schedule.start:
        parts.append(f"from {_show(schedule.start)}")
    if schedule.end:
        parts.append(f"until {_show(schedule.end)}")
    if schedule.weekdays:
        parts.append(f"on {describe_days(schedule.weekdays)}")
    if schedule.hours:
        parts.append(f"in hours {describe_hours(schedule.hours)}")
    return " ".join(parts) + " (visitor's local time)"
