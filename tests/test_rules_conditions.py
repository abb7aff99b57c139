"""Audiences: every operator and combinator against real visitor contexts, and segments."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from proxy.context.model import VisitorContext
from proxy.rules.conditions import count, parse_audience
from proxy.rules.matching import admits, describe, evaluate
from proxy.rules.plan import OUT_OF_AUDIENCE, plan

from .test_rules_support import IPHONE, at, load, page, visitor


def audience(toml: str) -> Any:
    return parse_audience(tomllib.loads(toml))


PLAIN = visitor()  # desktop, en-US, no geo, first visit, 10:30 UTC on a Tuesday
MOBILE_DE = visitor(user_agent=IPHONE, country="DE", city="München", time_zone="Europe/Berlin",
                    accept_language="de-DE,de;q=0.9,en;q=0.5", history=["/"],
                    query="utm_source=Newsletter&utm_medium=email&utm_campaign=Spring-Sale"
                          "&utm_term=trail%20boots")
SIGNALS = visitor(signals={"weather.berlin": "rain", "temperature.berlin": "21.5",
                           "sale.active": "true"})
GPC = visitor(history=["/"], gpc=True)

# (audience, context, in the audience?)
CASES: list[tuple[str, VisitorContext, bool]] = [
    ('"geo.country" = "DE"', MOBILE_DE, True),
    ('"geo.country" = "de"', MOBILE_DE, True),  # text ignores case
    ('"geo.country" = "AT"', MOBILE_DE, False),
    ('"geo.country" = "DE"', PLAIN, False),  # unknown country: missing
    ('"geo.city" = "MÜNCHEN"', MOBILE_DE, True),
    ('"visitor.returning" = true', MOBILE_DE, True),
    ('"visitor.returning" = true', PLAIN, False),
    ('"visitor.new" = true', PLAIN, True),
    ('"visitor.visit_number" = 2', MOBILE_DE, True),
    ('"visitor.visit_number" = 2.0', MOBILE_DE, True),
    ('"device.kind" = ["mobile", "tablet"]', MOBILE_DE, True),
    ('"device.kind" = ["mobile", "tablet"]', PLAIN, False),
    ('"device.kind" = { in = ["desktop"] }', PLAIN, True),
    ('"device.kind" = { not = "mobile" }', PLAIN, True),
    ('"device.kind" = { not = ["mobile", "desktop"] }', PLAIN, False),
    ('"geo.country" = { not = "DE" }', PLAIN, True),  # not: true on a missing value
    ('"visitor.visit_number" = { gt = 1 }', MOBILE_DE, True),
    ('"visitor.visit_number" = { gt = 2 }', MOBILE_DE, False),
    ('"visitor.visit_number" = { gte = 2 }', MOBILE_DE, True),
    ('"visitor.visit_number" = { lt = 2 }', MOBILE_DE, False),
    ('"visitor.visit_number" = { lte = 2 }', MOBILE_DE, True),
    ('"time.hour" = { gte = 10, lt = 11 }', PLAIN, True),
    ('"time.hour" = { gte = 11, lt = 12 }', PLAIN, False),
    ('"time.date" = { gte = "2025-10-14", lt = "2025-10-15" }', PLAIN, True),
    ('"time.date" = { gt = "2025-10-14" }', PLAIN, False),
    ('"source.campaign" = { prefix = "spring-" }', MOBILE_DE, True),  # ignores case
    ('"source.campaign" = { prefix = ["autumn-", "winter-"] }', MOBILE_DE, False),
    ('"source.campaign" = { prefix = "spring-" }', PLAIN, False),
    ('"utm.term" = { regex = "boots?$" }', MOBILE_DE, True),
    ('"utm.term" = { regex = "^boots" }', MOBILE_DE, False),
    ('"utm.source" = { regex = "(?-i:newsletter)" }', MOBILE_DE, False),
    ('"source.term" = { exists = true }', MOBILE_DE, True),
    ('"source.term" = { exists = true }', PLAIN, False),  # "" counts as missing
    ('"source.term" = { exists = false }', PLAIN, True),
    ('"visitor.days_since_last_visit" = { exists = true }', MOBILE_DE, True),
    ('"language.all" = "en"', MOBILE_DE, True),  # list attributes: any element
    ('"language.primaries" = ["fr", "de"]', MOBILE_DE, True),
    ('"language.all" = { not = "fr" }', MOBILE_DE, True),
    ('"language.all" = { not = "en" }', MOBILE_DE, False),
    ('"language.all" = { prefix = "de-" }', MOBILE_DE, True),
    ('"time.ranges" = "christmas-season"', PLAIN, False),
    ('"time.ranges" = "christmas-season"', at("2025-12-24T20:00", "Europe/Berlin"), True),
    ('"interest.counts" = { exists = false }', PLAIN, True),
    ('"signals.weather.berlin" = "rain"', SIGNALS, True),
    ('signals.weather.berlin = "RAIN"', SIGNALS, True),  # unquoted: nested TOML tables
    ('"signals.temperature.berlin" = { gt = 20 }', SIGNALS, True),
    ('"signals.temperature.berlin" = { gt = "20" }', SIGNALS, False),  # text vs number
    ('"signals.sale.active" = true', SIGNALS, True),
    ('"signals.weather.hamburg" = "rain"', SIGNALS, False),  # missing signal
    ('"signals.weather.hamburg" = { exists = false }', SIGNALS, True),
    # combinators
    ('any = [{ "device.kind" = "tablet" }, { "geo.country" = "DE" }]', MOBILE_DE, True),
    ('any = [{ "device.kind" = "tablet" }, { "geo.country" = "AT" }]', MOBILE_DE, False),
    ('all = [{ "device.kind" = "mobile" }, { "geo.country" = "DE" }]', MOBILE_DE, True),
    ('all = [{ "device.kind" = "mobile" }, { "geo.country" = "AT" }]', MOBILE_DE, False),
    ('none = [{ "device.kind" = "bot" }, { "geo.country" = "FR" }]', MOBILE_DE, True),
    ('none = [{ "device.kind" = "bot" }, { "geo.country" = "DE" }]', MOBILE_DE, False),
    ('"device.kind" = "mobile"\nany = [{ none = [{ "geo.country" = "DE" }] },'
     ' { all = [{ "visitor.returning" = true }, { "utm.medium" = "email" }] }]', MOBILE_DE, True),
    ('"device.kind" = "mobile"\nany = [{ none = [{ "geo.country" = "DE" }] },'
     ' { all = [{ "visitor.returning" = true }, { "utm.medium" = "cpc" }] }]', MOBILE_DE, False),
    # profiling off: every visitor.* attribute is missing
    ('"visitor.returning" = true', GPC, False),
    ('"visitor.returning" = { not = true }', GPC, True),
    ('"privacy.reason" = "gpc"', GPC, True),
]


@pytest.mark.parametrize(("toml", "context", "expected"), CASES,
                         ids=[f"{i}:{c[0][:40]}" for i, c in enumerate(CASES)])
def test_each_operator_and_combinator(toml: str, context: VisitorContext, expected: bool
                                      ) -> None:
    node = audience(toml)
    assert (evaluate(node, context.get) is None) is expected
    assert admits(node, context.get) is expected   # the request path's quick answer


@pytest.mark.parametrize(("toml", "context", "reason"), [
    ('"device.kind" = "mobile"', PLAIN, 'device.kind is "desktop", expected = "mobile"'),
    ('"geo.country" = ["DE", "AT"]', PLAIN, 'geo.country is empty, expected one of "DE", "AT"'),
    ('"time.hour" = { gte = 6, lt = 9 }', PLAIN, "time.hour is 10, expected < 9"),
    ('any = [{ "device.kind" = "mobile" }, { "visitor.returning" = true }]', PLAIN,
     'none of these held: device.kind is "desktop", expected = "mobile"; visitor.returning '
     "is false, expected = true"),
    ('none = [{ "device.kind" = "mobile" }]', MOBILE_DE, 'excluded by device.kind = "mobile"'),
    ('"utm.term" = { regex = "^tent" }', MOBILE_DE,
     'utm.term is "trail boots", expected to match /^tent/'),
])
def test_a_miss_names_the_condition_that_failed(toml: str, context: VisitorContext,
                                                reason: str) -> None:
    assert evaluate(audience(toml), context.get) == reason


SEGMENTS = """
[segment.returning]
"visitor.returning" = true
[segment.mobile]
"device.kind" = "mobile"
[segment.returning-mobile-de]
segment = ["returning", "mobile"]
"geo.country" = "DE"
"""


def rule_with(audience_toml: str, rid: str = "r") -> str:
    return (f'[[rule]]\nid = "{rid}"\npages = ["/"]\nslot = "#greeting"\nhtml = "x"\n'
            f"[rule.audience]\n{audience_toml}\n")


@pytest.mark.parametrize(("toml", "context", "applies", "specificity"), [
    ('segment = "returning"', MOBILE_DE, True, 1),
    ('segment = "returning"', PLAIN, False, 1),
    ('segment = "returning-mobile-de"', MOBILE_DE, True, 3),
    ('segment = "returning-mobile-de"', visitor(user_agent=IPHONE, history=["/"]), False, 3),
    ('segment = ["returning", "mobile"]', MOBILE_DE, True, 2),
    ('any = [{ segment = "mobile" }, { "geo.country" = "FR" }]', PLAIN, False, 2),
    ('none = [{ segment = "returning-mobile-de" }]', PLAIN, True, 3),
])
def test_segments_are_audiences_used_by_name(toml: str, context: VisitorContext, applies: bool,
                                             specificity: int) -> None:
    ruleset, errors = load(rule_with(toml), "a.toml", ("segments.toml", SEGMENTS))
    assert errors == ()
    (rule,) = ruleset.rules
    assert rule.specificity == count(rule.audience) == specificity
    decided = plan(ruleset, context, page("/", context))
    assert (decided.applied == (rule,)) is applies


def test_a_segment_miss_says_which_segment() -> None:
    ruleset, _ = load(rule_with('segment = "returning-mobile-de"'), "a.toml",
                      ("segments.toml", SEGMENTS))
    ctx = visitor(user_agent=IPHONE, history=["/"], country="AT")
    (decision,) = plan(ruleset, ctx, page("/", ctx)).decisions
    assert decision.verdict == OUT_OF_AUDIENCE
    assert decision.reason == ('not in segment "returning-mobile-de": geo.country is "AT", '
                               'expected = "DE"')


def test_no_context_means_only_rules_without_audience() -> None:
    ruleset, _ = load(rule_with('"device.kind" = "desktop"', "targeted")
                      + '[[rule]]\nid = "everyone"\npages = ["/"]\nslot = "#cta"\nhtml = "y"\n')
    decided = plan(ruleset, None, page("/"))
    assert [r.id for r in decided.applied] == ["everyone"]
    assert decided.by_verdict(OUT_OF_AUDIENCE)[0].reason == (
        'device.kind is missing, expected = "desktop"')


def test_describe_reads_like_the_file() -> None:
    node = audience('"geo.country" = ["DE", "AT"]\nany = [{ "time.hour" = { gte = 6, lt = 9 } },'
                    ' { segment = "mobile" }]\n"source.term" = { exists = true }')
    assert describe(node) == ('all of (geo.country one of "DE", "AT"; any of (time.hour >= 6 '
                              'and < 9; segment "mobile"); source.term has a value)')
