"""Schedules on the visitor's wall clock: time zones, midnight, DST days, weekday edges.

Every context is built by the real context builder from a UTC instant and a zoneinfo time
zone, exactly as a request would be.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime

import pytest

from proxy.context.model import VisitorContext
from proxy.rules.schedule import check, describe, parse_schedule

from .test_rules_support import at, visitor


def schedule(toml: str) -> object:
    return parse_schedule(tomllib.loads(f"s = {{ {toml} }}")["s"])


def utc(moment: str, time_zone: str) -> VisitorContext:
    """A visitor in ``time_zone`` at a UTC instant."""
    stamp = datetime.fromisoformat(moment).replace(tzinfo=UTC).timestamp()
    return visitor(time_zone=time_zone, now=stamp)


# (schedule, visitor, on?)
CASES = [
    # one instant, three wall clocks
    ('hours = ["5-11"]', utc("2025-10-14T06:15", "Europe/Berlin"), True),  # 08:15
    ('hours = ["5-11"]', utc("2025-10-14T06:15", "America/New_York"), False),  # 02:15
    ('hours = ["5-11"]', utc("2025-10-14T06:15", "Asia/Tokyo"), False),  # 15:15
    ('hours = ["5-11"]', at("2025-10-14T11:59", "Europe/Berlin"), True),  # end hour included
    ('hours = ["5-11"]', at("2025-10-14T12:00", "Europe/Berlin"), False),
    ('hours = ["5-11"]', at("2025-10-14T04:59", "Europe/Berlin"), False),
    # ranges wrapping midnight
    ('hours = ["22-5"]', at("2025-10-14T23:30", "Europe/Paris"), True),
    ('hours = ["22-5"]', at("2025-10-15T00:00", "Europe/Paris"), True),
    ('hours = ["22-5"]', at("2025-10-15T05:59", "Europe/Paris"), True),
    ('hours = ["22-5"]', at("2025-10-15T06:00", "Europe/Paris"), False),
    ('hours = ["22-5"]', at("2025-10-14T21:59", "Europe/Paris"), False),
    ('hours = [0]', at("2025-10-15T00:00", "Europe/Paris"), True),
    ('hours = [12, "17-18"]', at("2025-10-15T18:45", "Europe/Paris"), True),
    ('hours = [12, "17-18"]', at("2025-10-15T13:00", "Europe/Paris"), False),
    # DST starts in Berlin on 2025-03-30: 02:00 CET jumps to 03:00 CEST
    ('hours = [2]', utc("2025-03-30T00:59", "Europe/Berlin"), False),  # 01:59 CET
    ('hours = [2]', utc("2025-03-30T01:00", "Europe/Berlin"), False),  # 03:00 CEST
    ('hours = [3]', utc("2025-03-30T01:00", "Europe/Berlin"), True),
    # DST ends on 2025-10-26: 02:00-02:59 happens twice, both are hour 2
    ('hours = [2]', utc("2025-10-26T00:30", "Europe/Berlin"), True),  # 02:30 CEST
    ('hours = [2]', utc("2025-10-26T01:30", "Europe/Berlin"), True),  # 02:30 CET
    ('hours = [2]', utc("2025-10-26T02:30", "Europe/Berlin"), False),  # 03:30 CET
    # weekdays on the visitor's calendar: Friday 15:30 UTC is already Saturday in Tokyo
    ('weekdays = ["mon-fri"]', utc("2025-10-17T14:59", "Asia/Tokyo"), True),  # Fri 23:59
    ('weekdays = ["mon-fri"]', utc("2025-10-17T15:00", "Asia/Tokyo"), False),  # Sat 00:00
    ('weekdays = ["mon-fri"]', utc("2025-10-17T15:00", "Europe/London"), True),  # Fri 16:00
    ('weekdays = ["saturday", "sun"]', at("2025-10-19T23:59", "America/Los_Angeles"), True),
    ('weekdays = ["saturday", "sun"]', at("2025-10-20T00:00", "America/Los_Angeles"), False),
    ('weekdays = ["fri-mon"]', at("2025-10-20T09:00", "Europe/Rome"), True),  # a Monday
    ('weekdays = ["fri-mon"]', at("2025-10-21T09:00", "Europe/Rome"), False),  # a Tuesday
    ('weekdays = "wed", hours = ["9-17"]', at("2025-10-15T09:00", "Europe/Rome"), True),
    ('weekdays = "wed", hours = ["9-17"]', at("2025-10-14T09:00", "Europe/Rome"), False),
    # local dates: an end date keeps the rule on through that day, start is inclusive
    ("start = 2025-12-01, end = 2025-12-26", at("2025-11-30T23:59", "Europe/Berlin"), False),
    ("start = 2025-12-01, end = 2025-12-26", at("2025-12-01T00:00", "Europe/Berlin"), True),
    ("start = 2025-12-01, end = 2025-12-26", at("2025-12-26T23:59", "Europe/Berlin"), True),
    ("start = 2025-12-01, end = 2025-12-26", at("2025-12-27T00:00", "Europe/Berlin"), False),
    # a local date-time is each visitor's local time ...
    ("start = 2025-12-01T09:00:00", at("2025-12-01T09:00", "America/New_York"), True),
    ("start = 2025-12-01T09:00:00", at("2025-12-01T08:59", "America/New_York"), False),
    ("end = 2025-12-01T09:00:00", at("2025-12-01T09:00", "Asia/Tokyo"), False),
    # ... while an offset makes it one instant everywhere (00:00 CET = 18:00 in New York)
    ("start = 2025-12-01T00:00:00+01:00", at("2025-11-30T18:00", "America/New_York"), True),
    ("start = 2025-12-01T00:00:00+01:00", at("2025-11-30T17:59", "America/New_York"), False),
    ("end = 2025-12-01T00:00:00Z", at("2025-12-01T00:59", "Europe/Berlin"), True),  # 23:59Z
    ("end = 2025-12-01T00:00:00Z", at("2025-12-01T00:59", "Europe/London"), False),
    # dates written as text work too
    ('start = "2025-12-01", end = "2025-12-01"', at("2025-12-01T23:00", "UTC"), True),
]


@pytest.mark.parametrize(("toml", "context", "on"), CASES,
                         ids=[f"{i}:{c[0]}" for i, c in enumerate(CASES)])
def test_schedule_on_the_visitors_clock(toml: str, context: VisitorContext, on: bool) -> None:
    assert (check(schedule(toml), context.get) is None) is on  # type: ignore[arg-type]


@pytest.mark.parametrize(("toml", "context", "reason"), [
    ('hours = ["5-11"]', at("2025-10-14T14:05", "Europe/Berlin"),
     "it is 14:05 for the visitor; the rule runs in hours 05:00-11:59"),
    ('weekdays = ["sat-sun"]', at("2025-10-14T14:05", "Europe/Berlin"),
     "it is tuesday for the visitor; the rule runs on saturday, sunday"),
    ("start = 2025-12-01", at("2025-10-14T14:05", "Europe/Berlin"),
     "starts 2025-12-01 00:00; it is 2025-10-14 14:05 for the visitor"),
    ("end = 2025-10-01", at("2025-10-14T14:05", "Europe/Berlin"),
     "ended 2025-10-02 00:00; it is 2025-10-14 14:05 for the visitor"),
])
def test_out_of_schedule_names_why(toml: str, context: VisitorContext, reason: str) -> None:
    assert check(schedule(toml), context.get) == reason  # type: ignore[arg-type]


def test_without_a_local_time_a_schedule_is_off() -> None:
    assert check(schedule('hours = ["0-23"]'), lambda name: None) == (  # type: ignore[arg-type]
        "the visitor's local time is not known")


def test_describe() -> None:
    assert describe(schedule('weekdays = ["mon-wed", "fri"], hours = ["22-1", 7]')) == (  # type: ignore[arg-type]
        "on monday, tuesday, wednesday, friday in hours 00:00-01:59, 07:00-07:59, "
        "22:00-23:59 (visitor's local time)")
