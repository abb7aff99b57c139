"""Visitor local time: zones, midnight, DST switch days, part of day, year-wrapping ranges."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from proxy.context.localtime import local_time
from proxy.context.settings import ContextSettings, DateRange, PartOfDay, parse_settings

DEFAULT = ContextSettings()


def ts(text: str) -> float:
    """Unix time of a UTC timestamp written as ISO text."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("utc", "zone", "local_date", "hour", "minute", "weekday"),
    [
        ("2025-06-15T12:00:00", "UTC", "2025-06-15", 12, 0, "sunday"),
        ("2025-06-15T12:00:00", "Europe/Berlin", "2025-06-15", 14, 0, "sunday"),
        ("2025-06-15T12:00:00", "America/New_York", "2025-06-15", 8, 0, "sunday"),
        ("2025-06-15T12:00:00", "Asia/Kolkata", "2025-06-15", 17, 30, "sunday"),
        ("2025-06-15T12:00:00", "Pacific/Kiritimati", "2025-06-16", 2, 0, "monday"),
        ("2025-06-15T12:00:00", "Pacific/Pago_Pago", "2025-06-15", 1, 0, "sunday"),
        # midnight
        ("2025-12-31T15:00:00", "Asia/Tokyo", "2026-01-01", 0, 0, "thursday"),
        ("2025-12-31T14:59:59", "Asia/Tokyo", "2025-12-31", 23, 59, "wednesday"),
        ("2025-12-31T23:00:00", "Europe/Berlin", "2026-01-01", 0, 0, "thursday"),
        # Europe/Berlin: spring forward 2025-03-30 02:00 CET -> 03:00 CEST
        ("2025-03-30T00:59:59", "Europe/Berlin", "2025-03-30", 1, 59, "sunday"),
        ("2025-03-30T01:00:00", "Europe/Berlin", "2025-03-30", 3, 0, "sunday"),
        # Europe/Berlin: fall back 2025-10-26 03:00 CEST -> 02:00 CET, 02:30 happens twice
        ("2025-10-26T00:30:00", "Europe/Berlin", "2025-10-26", 2, 30, "sunday"),
        ("2025-10-26T01:30:00", "Europe/Berlin", "2025-10-26", 2, 30, "sunday"),
        ("2025-10-26T02:30:00", "Europe/Berlin", "2025-10-26", 3, 30, "sunday"),
        # America/New_York: spring forward 2025-03-09 02:00 EST -> 03:00 EDT
        ("2025-03-09T06:59:59", "America/New_York", "2025-03-09", 1, 59, "sunday"),
        ("2025-03-09T07:00:00", "America/New_York", "2025-03-09", 3, 0, "sunday"),
        # America/New_York: fall back 2025-11-02 02:00 EDT -> 01:00 EST
        ("2025-11-02T05:30:00", "America/New_York", "2025-11-02", 1, 30, "sunday"),
        ("2025-11-02T06:30:00", "America/New_York", "2025-11-02", 1, 30, "sunday"),
        ("2025-11-02T07:30:00", "America/New_York", "2025-11-02", 2, 30, "sunday"),
        # the day after the switch is a normal day at the new offset
        ("2025-03-31T10:00:00", "Europe/Berlin", "2025-03-31", 12, 0, "monday"),
        ("2025-11-03T13:00:00", "America/New_York", "2025-11-03", 8, 0, "monday"),
    ],
)
def test_wall_clock(utc: str, zone: str, local_date: str, hour: int, minute: int,
                    weekday: str) -> None:
    found = local_time(ts(utc), zone, DEFAULT)
    assert (found.date, found.hour, found.minute, found.weekday, found.time_zone) == (
        local_date, hour, minute, weekday, zone)


def test_weekday_number_weekend_month_day() -> None:
    found = local_time(ts("2025-12-27T10:00:00"), "UTC", DEFAULT)
    assert (found.weekday_number, found.weekend, found.month, found.day) == (6, True, 12, 27)
    found = local_time(ts("2025-12-29T10:00:00"), "UTC", DEFAULT)
    assert (found.weekday_number, found.weekend) == (1, False)


@pytest.mark.parametrize(
    ("hour", "default", "custom"),
    [
        (0, "night", "night"), (4, "night", "night"), (5, "morning", "night"),
        (6, "morning", "morning"), (11, "morning", "morning"), (12, "afternoon", "afternoon"),
        (16, "afternoon", "afternoon"), (17, "evening", "afternoon"), (18, "evening", "evening"),
        (21, "evening", "evening"), (22, "night", "evening"), (23, "night", "night"),
    ],
)
def test_part_of_day(hour: int, default: str, custom: str) -> None:
    assert local_time(ts(f"2025-06-15T{hour:02d}:30:00"), "UTC", DEFAULT).part_of_day == default
    settings = parse_settings({"part_of_day": {"morning": 6, "afternoon": 12, "evening": 18,
                                               "night": 23}})
    assert local_time(ts(f"2025-06-15T{hour:02d}:30:00"), "UTC", settings).part_of_day == custom


def test_night_may_start_after_midnight() -> None:
    pod = PartOfDay(morning=6, afternoon=12, evening=18, night=1)
    assert [pod.name(h) for h in (0, 1, 5, 6, 23)] == [
        "evening", "night", "night", "morning", "evening"]


def test_part_of_day_uses_the_local_hour() -> None:
    # 06:30 UTC is morning in London (07:30 BST) but night in New York (02:30 EDT)
    assert local_time(ts("2025-06-15T06:30:00"), "Europe/London", DEFAULT).part_of_day == "morning"
    assert local_time(ts("2025-06-15T06:30:00"), "America/New_York", DEFAULT).part_of_day == "night"


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        ("2025-11-30", ()),
        ("2025-12-01", ("christmas-season",)),
        ("2025-12-24", ("christmas-season",)),
        ("2025-12-26", ("christmas-season",)),
        ("2025-12-27", ("new-year",)),
        ("2025-12-31", ("new-year",)),
        ("2026-01-01", ("new-year",)),
        ("2026-01-06", ("new-year",)),
        ("2026-01-07", ()),
        ("2026-07-01", ()),
    ],
)
def test_default_ranges_wrap_the_year_end(day: str, expected: tuple[str, ...]) -> None:
    assert local_time(ts(f"{day}T12:00:00"), "UTC", DEFAULT).ranges == expected


def test_ranges_are_read_on_the_local_date() -> None:
    # 23:30 UTC on Nov 30 is already Dec 1 in Berlin
    instant = ts("2025-11-30T23:30:00")
    assert local_time(instant, "UTC", DEFAULT).ranges == ()
    assert local_time(instant, "Europe/Berlin", DEFAULT).ranges == ("christmas-season",)


def test_configured_ranges() -> None:
    settings = parse_settings({"date_ranges": {
        "summer-sale": ["06-20", "07-15"],
        "winter": ["11-15", "02-28"],
        "black-friday-2025": ["2025-11-28", "2025-12-01"],
        "leap-day": ["02-29", "02-29"],
    }})
    def ranges(day: str) -> tuple[str, ...]:
        return local_time(ts(f"{day}T12:00:00"), "UTC", settings).ranges
    assert ranges("2025-07-01") == ("summer-sale",)
    assert ranges("2025-11-28") == ("winter", "black-friday-2025")
    assert ranges("2026-11-28") == ("winter",)  # one-off range does not repeat
    assert ranges("2026-01-15") == ("winter",)
    assert ranges("2028-02-29") == ("leap-day",)  # winter ends on "02-28"
    assert ranges("2026-03-01") == ()


def test_date_range_contains() -> None:
    wrap = DateRange("x", (0, 12, 20), (0, 1, 10))
    assert [wrap.contains(date(2025, m, d)) for m, d in
            [(12, 19), (12, 20), (1, 1), (1, 10), (1, 11)]] == [False, True, True, True, False]


@pytest.mark.parametrize("zone", ["", "Mars/Olympus_Mons", "../../etc/passwd", "/etc/localtime",
                                  "Europe/Berlin\x00", "x" * 300])
def test_unknown_zones_fall_back_to_the_default(zone: str) -> None:
    settings = parse_settings({"default_timezone": "Asia/Tokyo"})
    found = local_time(ts("2025-06-15T12:00:00"), zone, settings)
    assert (found.time_zone, found.hour) == ("Asia/Tokyo", 21)


def test_without_any_zone_the_server_zone_is_used() -> None:
    instant = ts("2025-06-15T12:00:00")
    found = local_time(instant, "", DEFAULT)
    expected = datetime.fromtimestamp(instant).astimezone()
    assert (found.time_zone, found.hour, found.date) == (
        "local", expected.hour, expected.date().isoformat())
