"""The visitor's local time: hour, part of day, weekday, date and named date ranges.

"Show the breakfast offer in the morning" means the visitor's morning, so the clock is
read in the time zone the geo lookup found (IANA name via :mod:`zoneinfo`, so daylight
saving changes are exact), falling back to ``context.default_timezone`` and then to the
server's local zone. Time comes in as a Unix timestamp: one instant, no ambiguity at the
DST fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

from proxy.context.settings import ContextSettings
from proxy.values import quick_init

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@quick_init
@dataclass(frozen=True, slots=True)
class LocalTime:
    """One instant on the visitor's wall clock."""

    time_zone: str  # the zone used; "local" when the server's own zone was the fallback
    hour: int
    minute: int
    part_of_day: str  # "morning", "afternoon", "evening" or "night"
    weekday: str  # "monday" ... "sunday"
    weekday_number: int  # ISO: 1 = Monday ... 7 = Sunday
    date: str  # ISO "2025-12-24"
    month: int
    day: int
    ranges: tuple[str, ...]  # names of the configured date ranges containing this date

    @property
    def weekend(self) -> bool:
        return self.weekday_number >= 6


def zone(name: str) -> ZoneInfo | None:
    """The zone for an IANA name, or None when it is unknown or malformed (cached)."""
    if not name or len(name) > 64:
        return None
    return _zone(name)


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # not found, or a path-like name
        return None


_CACHE_SIZE = 2048
_cache: dict[tuple[str, int], tuple[ContextSettings, LocalTime]] = {}


def local_time(now: float, time_zone: str, settings: ContextSettings) -> LocalTime:
    """The visitor's wall clock at Unix time ``now`` in ``time_zone`` (never raises).

    Memoised per zone and minute (every zone in use today is offset from UTC by whole
    minutes, so all fields are the same for a whole UTC minute); an entry is only reused
    for the very settings object it was computed with.
    """
    key = (time_zone, int(now // 60))
    hit = _cache.get(key)
    if hit is not None and hit[0] is settings:
        return hit[1]
    result = _compute(now, time_zone, settings)
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()  # a new minute makes all entries stale anyway
    _cache[key] = (settings, result)
    return result


def _compute(now: float, time_zone: str, settings: ContextSettings) -> LocalTime:
    name = time_zone
    tz: tzinfo | None = zone(time_zone)
    if tz is None:
        name = settings.default_timezone
        tz = zone(name)
    if tz is None:
        name = "local"
        tz = datetime.fromtimestamp(now, UTC).astimezone().tzinfo
    moment = datetime.fromtimestamp(now, tz)
    day = moment.date()
    return LocalTime(
        time_zone=name,
        hour=moment.hour,
        minute=moment.minute,
        part_of_day=settings.part_of_day.name(moment.hour),
        weekday=WEEKDAYS[day.weekday()],
        weekday_number=day.isoweekday(),
        date=day.isoformat(),
        month=day.month,
        day=day.day,
        ranges=tuple(r.name for r in settings.date_ranges if r.contains(day)),
    )
