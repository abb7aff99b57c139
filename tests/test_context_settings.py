"""[context] settings: a full valid table, defaults, and messages for bad values."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from proxy.context.journey import count_interests, furthest, interests_for, stage_for
from proxy.context.settings import ContextSettings, parse_settings

FULL = """
[context]
visit_timeout_minutes = 45
interest_slots = 4
trust_cdn_headers = true
honour_dnt = true
consent_cookie = "cookie_consent"
consent_value = "all"
default_timezone = "Europe/Berlin"
part_of_day = { morning = 6, afternoon = 12, evening = 18, night = 23 }
journey_stages = [
  { name = "browse", paths = ["/", "/blog/*"] },
  { name = "compare", paths = ["/products/*", "/compare*"] },
  { name = "buy", paths = ["/cart*", "/checkout*"] },
  { name = "done", paths = ["/checkout/thanks"] },
]

[context.date_ranges]
christmas-season = ["12-01", "12-26"]
black-friday-2025 = ["2025-11-28", "2025-12-01"]

[context.interests]
running = ["/products/running/*", "/blog/running*"]
hiking = "/products/hiking/*"

[context.sources.hosts]
"search.example.net" = { class = "search", name = "examplesearch", params = ["s"] }
"""


def test_full_table() -> None:
    table = tomllib.loads(FULL)["context"]
    settings = parse_settings(table, "config.toml")
    assert settings.visit_timeout_minutes == 45 and settings.interest_slots == 4
    assert settings.trust_cdn_headers and settings.honour_dnt
    assert (settings.consent_cookie, settings.consent_value) == ("cookie_consent", "all")
    assert settings.default_timezone == "Europe/Berlin"
    assert settings.part_of_day.name(22) == "evening"
    assert [s.name for s in settings.journey_stages] == ["browse", "compare", "buy", "done"]
    assert [r.name for r in settings.date_ranges] == ["christmas-season", "black-friday-2025"]
    assert stage_for("/checkout/thanks", settings) == "done"
    assert stage_for("/checkout/pay", settings) == "buy"
    assert stage_for("/blog/x", settings) == "browse"
    assert stage_for("/about", settings) == ""
    assert interests_for("/blog/running-shoes", settings) == ("running",)
    assert interests_for("/products/hiking/boots", settings) == ("hiking",)
    assert settings.sources.hosts["search.example.net"].name == "examplesearch"
    assert "bing.com" in settings.sources.hosts


def test_defaults() -> None:
    settings = parse_settings({})
    assert settings == ContextSettings()
    assert settings.visit_timeout_minutes == 30
    assert [s.name for s in settings.journey_stages] == [
        "awareness", "consideration", "purchase", "customer"]
    assert not settings.trust_cdn_headers and not settings.honour_dnt
    assert settings.consent_cookie == ""


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"visit_timeout_minutes": -3},
         "config.toml: context.visit_timeout_minutes = -3 is not valid: expected minutes from 1 "
         "to 1440"),
        ({"visit_timeout_minutes": 2000}, "visit_timeout_minutes = 2000 is not valid"),
        ({"visit_timeout_minutes": "30"}, "visit_timeout_minutes = '30' is not valid"),
        ({"visit_timeout_minutes": True}, "visit_timeout_minutes = True is not valid"),
        ({"interest_slots": 0}, "interest_slots = 0 is not valid: expected a number from 1 to 16"),
        ({"part_of_day": {"morning": 12, "afternoon": 5}}, "context.part_of_day = "),
        ({"part_of_day": {"morning": 25}}, "distinct hours 0-23"),
        ({"part_of_day": {"breakfast": 7}}, "context.part_of_day = {'breakfast': 7}"),
        ({"date_ranges": {"xmas": ["12-01"]}}, "context.date_ranges.xmas = ['12-01']"),
        ({"date_ranges": {"xmas": ["12-01", "13-01"]}}, "'13-01'"),
        ({"date_ranges": {"xmas": ["02-30", "03-01"]}}, "'02-30'"),
        ({"date_ranges": {"x": ["2025-12-01", "12-05"]}}, "context.date_ranges.x"),
        ({"date_ranges": {"x": ["2025-12-05", "2025-12-01"]}}, "a start on or before the end"),
        ({"date_ranges": {"Bad Name": ["12-01", "12-02"]}}, "date_ranges.Bad Name = 'Bad Name'"),
        ({"journey_stages": [{"name": "a", "paths": ["no-slash"]}]}, "context.journey_stages"),
        ({"journey_stages": [{"name": "a", "paths": ["/"]}, {"name": "a", "paths": ["/x"]}]},
         "each stage name once"),
        ({"journey_stages": "awareness"}, "context.journey_stages = 'awareness'"),
        ({"interests": {"shoes": []}}, "context.interests.shoes = []"),
        ({"interests": {"shoes": ["shoes"]}}, "context.interests.shoes = ['shoes']"),
        ({"geo_database": "/nonexistent/GeoIP2-City.mmdb"},
         "context.geo_database = '/nonexistent/GeoIP2-City.mmdb' is not valid"),
        ({"trust_cdn_headers": "yes"}, "context.trust_cdn_headers = 'yes' is not valid: "
                                       "expected true or false"),
        ({"honour_dnt": 1}, "context.honour_dnt = 1"),
        ({"consent_cookie": "a b"}, "context.consent_cookie = 'a b'"),
        ({"consent_value": ""}, "context.consent_value = ''"),
        ({"default_timezone": "Mars/Base"}, "context.default_timezone = 'Mars/Base' is not valid"),
        ({"sources": {"hosts": {"x.example": {"class": "tv", "name": "x"}}}},
         "config.toml: context.sources.hosts.'x.example'.class = 'tv' is not valid"),
        ({"visit_timeout": 30}, "context.visit_timeout is not a known key; valid keys: "
                                "visit_timeout_minutes"),
    ],
)
def test_bad_values_name_key_value_and_what_is_valid(table: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_settings(table, "config.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("config.toml: ")


def test_geo_database_that_exists(tmp_path: Path) -> None:
    path = tmp_path / "city.mmdb"
    path.write_bytes(b"x")
    assert parse_settings({"geo_database": str(path)}).geo_database == str(path)


def test_furthest_stage_order() -> None:
    settings = ContextSettings()
    assert furthest("", "awareness", settings) == "awareness"
    assert furthest("purchase", "awareness", settings) == "purchase"
    assert furthest("purchase", "customer", settings) == "customer"
    assert furthest("purchase", "", settings) == "purchase"
    assert furthest("retired-stage", "awareness", settings) == "awareness"


def test_count_interests_space_saving() -> None:
    counts = count_interests((), ("a", "b"), 2)
    assert counts == (("a", 1), ("b", 1))
    counts = count_interests(counts, ("a",), 2)
    assert counts == (("a", 2), ("b", 1))
    counts = count_interests(counts, ("c",), 2)  # replaces b, inherits its count + 1
    assert counts == (("a", 2), ("c", 2))
    assert count_interests(counts, (), 2) is counts
