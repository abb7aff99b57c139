"""``[context]`` settings: validated once at start-up into a frozen :class:`ContextSettings`.

Everything the visitor-context modules can be told lives here, already checked and compiled
(path patterns become regular expressions, the source tables are merged), so the request
path never validates or compiles anything. A bad value stops start-up with a message that
names the key, the bad value and what would be valid, like the rest of Kairos' config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from proxy.context.sourcetable import SourceTable, load_table

MAX_INTEREST_SLOTS = 16  # bounds the cookie: every slot costs up to ~40 bytes


@dataclass(frozen=True, slots=True)
class PathRule:
    """A named set of path patterns (``*`` matches any characters, ``/`` included)."""

    name: str
    patterns: tuple[str, ...]
    regex: re.Pattern[str] = field(compare=False, repr=False)

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


def path_rule(name: str, patterns: tuple[str, ...]) -> PathRule:
    """Compile glob-like path patterns into one anchored regex."""
    alternatives = ("(?:" + ".*".join(map(re.escape, p.split("*"))) + ")" for p in patterns)
    return PathRule(name, patterns, re.compile("|".join(alternatives), re.DOTALL))


@dataclass(frozen=True, slots=True)
class DateRange:
    """A named range of days, both ends included.

    Yearly ranges (``"12-01"`` to ``"12-26"``) repeat every year and may wrap the year end
    (``"12-27"`` to ``"01-06"``); ranges with years (``"2025-11-28"``) happen once.
    """

    name: str
    start: tuple[int, int, int]  # (year or 0, month, day)
    end: tuple[int, int, int]

    def contains(self, day: date) -> bool:
        if self.start[0]:
            return date(*self.start) <= day <= date(*self.end)
        key = (day.month, day.day)
        lo, hi = self.start[1:], self.end[1:]
        return lo <= key <= hi if lo <= hi else (key >= lo or key <= hi)


@dataclass(frozen=True, slots=True)
class PartOfDay:
    """Hours (0-23) at which each part of the day starts; night runs into the morning."""

    morning: int = 5
    afternoon: int = 12
    evening: int = 17
    night: int = 22

    def name(self, hour: int) -> str:
        offset = (hour - self.morning) % 24
        if offset < (self.afternoon - self.morning) % 24:
            return "morning"
        if offset < (self.evening - self.morning) % 24:
            return "afternoon"
        if offset < (self.night - self.morning) % 24:
            return "evening"
        return "night"


DEFAULT_STAGES = (
    path_rule("awareness", ("/",)),
    path_rule("consideration", ("/products/*",)),
    path_rule("purchase", ("/checkout*",)),
    path_rule("customer", ("/checkout/complete",)),
)
DEFAULT_RANGES = (
    DateRange("christmas-season", (0, 12, 1), (0, 12, 26)),
    DateRange("new-year", (0, 12, 27), (0, 1, 6)),
)


@dataclass(frozen=True, slots=True)
class ContextSettings:
    """Everything the context modules are configured by; defaults work without config."""

    visit_timeout_minutes: int = 30
    part_of_day: PartOfDay = PartOfDay()
    date_ranges: tuple[DateRange, ...] = DEFAULT_RANGES
    journey_stages: tuple[PathRule, ...] = DEFAULT_STAGES  # ordered, first to furthest
    interests: tuple[PathRule, ...] = ()
    interest_slots: int = 8
    geo_database: str = ""  # empty: the dated GeoLite2 file of python-geoip-geolite2
    trust_cdn_headers: bool = False  # and then only from peers the proxy trusts
    sources: SourceTable = field(default_factory=load_table)
    consent_cookie: str = ""  # empty: no consent cookie is required for profiling
    consent_value: str = "1"
    honour_dnt: bool = False  # Sec-GPC is always honoured; DNT only when this is true
    default_timezone: str = ""  # empty: the server's local zone

    def stage_rank(self, name: str) -> int:
        """Position of a journey stage, -1 for none or a stage no longer configured."""
        for index, rule in enumerate(self.journey_stages):
            if rule.name == name:
                return index
        return -1


KEYS = tuple(ContextSettings.__slots__)  # type: ignore[attr-defined]
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")
_MONTH_DAY = re.compile(r"(?:(\d{4})-)?(\d{2})-(\d{2})")


def parse_settings(table: Mapping[str, Any], where: str = "") -> ContextSettings:
    """Validate the ``[context]`` table of config.toml into :class:`ContextSettings`.

    ``where`` names the source (``"config.toml"``) and prefixes every error message.
    """
    prefix = f"{where}: " if where else ""

    def fail(key: str, value: Any, valid: str) -> ValueError:
        return ValueError(f"{prefix}context.{key} = {value!r} is not valid: expected {valid}")

    if not isinstance(table, Mapping):
        raise ValueError(f"{prefix}[context] must be a table")
    for key in table:
        if key not in KEYS:
            raise ValueError(f"{prefix}context.{key} is not a known key; valid keys: "
                             f"{', '.join(KEYS)}")
    kw: dict[str, Any] = {}
    get = table.get

    if "visit_timeout_minutes" in table:
        kw["visit_timeout_minutes"] = _int(get("visit_timeout_minutes"), 1, 1440, fail,
                                           "visit_timeout_minutes", "minutes from 1 to 1440")
    if "interest_slots" in table:
        kw["interest_slots"] = _int(get("interest_slots"), 1, MAX_INTEREST_SLOTS, fail,
                                    "interest_slots", f"a number from 1 to {MAX_INTEREST_SLOTS}")
    if "part_of_day" in table:
        kw["part_of_day"] = _part_of_day(get("part_of_day"), fail)
    if "date_ranges" in table:
        kw["date_ranges"] = _date_ranges(get("date_ranges"), fail)
    if "journey_stages" in table:
        kw["journey_stages"] = _stages(get("journey_stages"), fail)
    if "interests" in table:
        kw["interests"] = _interests(get("interests"), fail)
    for key in ("trust_cdn_headers", "honour_dnt"):
        if key in table:
            if not isinstance(get(key), bool):
                raise fail(key, get(key), "true or false")
            kw[key] = get(key)
    if "geo_database" in table:
        path = get("geo_database")
        if not isinstance(path, str) or (path and not Path(path).is_file()):
            raise fail("geo_database", path, "the path of a GeoIP2/GeoLite2 City .mmdb file "
                       "that exists, or \"\" for the bundled 2015 GeoLite2 file")
        kw["geo_database"] = path
    if "consent_cookie" in table:
        name = get("consent_cookie")
        if not isinstance(name, str) or (name and not re.fullmatch(r"[A-Za-z0-9_.-]+", name)):
            raise fail("consent_cookie", name, "a cookie name of letters, digits, _ . -, "
                       "or \"\" for none")
        kw["consent_cookie"] = name
    if "consent_value" in table:
        value = get("consent_value")
        if not isinstance(value, str) or not value or ";" in value or len(value) > 200:
            raise fail("consent_value", value, "the non-empty cookie value that means consent")
        kw["consent_value"] = value
    if "default_timezone" in table:
        kw["default_timezone"] = _zone(get("default_timezone"), fail)
    if "sources" in table:
        kw["sources"] = load_table(get("sources"), f"{prefix}context.sources")
    return ContextSettings(**kw)


def _int(value: Any, lo: int, hi: int, fail: Any, key: str, valid: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise fail(key, value, valid)
    return value


def _part_of_day(value: Any, fail: Any) -> PartOfDay:
    valid = ("a table {morning = 5, afternoon = 12, evening = 17, night = 22} of distinct "
             "hours 0-23 in that order around the clock")
    names = ("morning", "afternoon", "evening", "night")
    if not isinstance(value, Mapping) or set(value) - set(names):
        raise fail("part_of_day", value, valid)
    merged = {n: value.get(n, getattr(PartOfDay(), n)) for n in names}
    if not all(isinstance(h, int) and not isinstance(h, bool) and 0 <= h <= 23
               for h in merged.values()):
        raise fail("part_of_day", value, valid)
    offsets = [(merged[n] - merged["morning"]) % 24 for n in names]
    if offsets != sorted(set(offsets)):
        raise fail("part_of_day", value, valid)
    return PartOfDay(**merged)


def _date_ranges(value: Any, fail: Any) -> tuple[DateRange, ...]:
    valid = ('a table of name = ["MM-DD", "MM-DD"] (yearly, may wrap the year end) or '
             '["YYYY-MM-DD", "YYYY-MM-DD"] (once)')
    if not isinstance(value, Mapping):
        raise fail("date_ranges", value, valid)
    ranges = []
    for name, ends in value.items():
        key = f"date_ranges.{name}"
        if not _NAME.fullmatch(str(name)):
            raise fail(key, name, "a lower-case name of letters, digits, _ . -")
        if not isinstance(ends, list | tuple) or len(ends) != 2:
            raise fail(key, ends, valid)
        parsed = [_month_day(e) for e in ends]
        if None in parsed or bool(parsed[0][0]) != bool(parsed[1][0]):  # type: ignore[index]
            raise fail(key, ends, valid)
        start, end = parsed
        if start[0] and date(*start) > date(*end):  # type: ignore[misc]
            raise fail(key, ends, "a start on or before the end")
        ranges.append(DateRange(str(name), start, end))  # type: ignore[arg-type]
    return tuple(ranges)


def _month_day(text: Any) -> tuple[int, int, int] | None:
    match = _MONTH_DAY.fullmatch(text) if isinstance(text, str) else None
    if not match:
        return None
    year, month, day = int(match[1] or 0), int(match[2]), int(match[3])
    try:
        date(year or 2000, month, day)  # 2000 is a leap year: "02-29" is a valid yearly day
    except ValueError:
        return None
    return year, month, day


def _patterns(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = [value]
    if (not isinstance(value, list | tuple) or not value
            or not all(isinstance(p, str) and p.startswith("/") for p in value)):
        return None
    return tuple(value)


def _stages(value: Any, fail: Any) -> tuple[PathRule, ...]:
    valid = ('an ordered list of tables like {name = "consideration", paths = ["/products/*"]},'
             ' first stage to furthest')
    if not isinstance(value, list | tuple):
        raise fail("journey_stages", value, valid)
    stages: list[PathRule] = []
    for item in value:
        if not isinstance(item, Mapping) or set(item) != {"name", "paths"}:
            raise fail("journey_stages", item, valid)
        name, paths = item["name"], _patterns(item["paths"])
        if not isinstance(name, str) or not _NAME.fullmatch(name) or paths is None:
            raise fail("journey_stages", item, valid + "; names lower-case, paths start with /")
        if any(s.name == name for s in stages):
            raise fail("journey_stages", item, "each stage name once")
        stages.append(path_rule(name, paths))
    return tuple(stages)


def _interests(value: Any, fail: Any) -> tuple[PathRule, ...]:
    valid = 'a table of category = ["/path/pattern*", ...]'
    if not isinstance(value, Mapping):
        raise fail("interests", value, valid)
    rules = []
    for name, paths in value.items():
        patterns = _patterns(paths)
        if not _NAME.fullmatch(str(name)):
            raise fail(f"interests.{name}", name, "a lower-case name of letters, digits, _ . -")
        if patterns is None:
            raise fail(f"interests.{name}", paths, "a list of path patterns starting with /")
        rules.append(path_rule(str(name), patterns))
    return tuple(rules)


def _zone(value: Any, fail: Any) -> str:
    from zoneinfo import ZoneInfo  # only at start-up

    if not isinstance(value, str):
        raise fail("default_timezone", value, 'an IANA time zone such as "Europe/Berlin"')
    if value:
        try:
            ZoneInfo(value)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            raise fail("default_timezone", value, 'an IANA time zone such as '
                       '"Europe/Berlin", or "" for the server\'s local zone') from None
    return value
