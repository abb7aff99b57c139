"""The shipped rules/ folder: it loads without a single error, and each example changes the
demo shop's pages as rules/README.md says it does."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from selectolax.lexbor import LexborHTMLParser

from experiments.model import Allocation
from proxy.context.model import VisitorContext
from proxy.rules import matching
from proxy.rules.check import check_folder
from proxy.rules.engine import render
from proxy.rules.loader import RuleLibrary
from proxy.rules.plan import APPLIED, getter

from .test_rules_support import HOST, IPHONE, RULES, at, demo_html, load, page

AFTERNOON = "2025-10-14T14:00"  # an ordinary Tuesday afternoon, far from Christmas


@pytest.fixture(scope="module")
def library() -> RuleLibrary:
    return RuleLibrary.load(RULES, quiet=True)


def test_the_shipped_folder_loads_without_errors(library: RuleLibrary) -> None:
    assert library.errors == ()
    report = check_folder(RULES)
    assert report.ok and report.errors == ()
    assert "15 rules in 6 files, 7 segments, 0 errors" in report.text


def newcomer(**kw: object) -> Callable[[], VisitorContext]:
    return lambda: at(AFTERNOON, "Europe/London", **kw)  # type: ignore[arg-type]


# (rule, the visitor, page, selector, text the element then shows)
CASES = [
    ("welcome-back", newcomer(history=["/"]), "/", "#greeting",
     "Welcome back! This is visit number 2. Free shipping on orders over $75 still applies."),
    ("welcome-back", newcomer(history=["/", "/about"]), "/about", "#greeting",
     "Welcome back! This is visit number 3."),
    ("good-morning", lambda: at("2025-10-14T08:00", "Europe/Berlin"), "/products/",
     "#greeting", "Good morning! Coffee's on us"),
    ("good-evening", lambda: at("2025-10-14T19:00", "America/New_York"), "/", "#greeting",
     "Good evening! Plan tomorrow's trail tonight"),
    ("newsletter-landing", newcomer(query="utm_source=fieldnotes&utm_medium=email"), "/",
     "#hero-headline", "Welcome, Field Notes reader"),
    ("newsletter-landing", newcomer(query="utm_medium=email"), "/", "#promo-banner",
     "Subscribers save 10% this week with the code FIELDNOTES."),
    ("paid-landing-promise", newcomer(query="gclid=test"), "/", "#hero-headline",
     "Free 60-day returns on every pack, shell and tent"),
    ("paid-landing-promise", newcomer(query="gclid=test"), "/", "#cta",
     "See what 60 days of testing looks like"),
    ("search-term-headline", newcomer(query="utm_term=rain+jacket"), "/", "#hero-headline",
     "Looking for rain jacket? You have come to the right place"),
    ("search-term-headline", newcomer(referer="https://www.bing.com/search?q=winter+tent"), "/",
     "#hero-headline", "Looking for winter tent?"),
    ("trailmag-partner", newcomer(query="utm_source=trailmag"), "/", "#hero-teaser",
     "Hello, TrailMag reader!"),
    ("mobile-cta", newcomer(user_agent=IPHONE), "/", "#cta.button-wide", "Browse the gear"),
    ("mobile-products-intro", newcomer(user_agent=IPHONE), "/products/", "#products-intro",
     "Tap any product for sizes and stock."),
    ("teaser-german", newcomer(country="AT", accept_language="de-AT,de;q=0.9"), "/",
     "#hero-teaser", "Rucksäcke, Jacken und Zelte für echtes Wetter"),
    ("rainy-day-teaser", newcomer(country="DE", city="Berlin", signals={"weather.berlin": "rain"}),
     "/", "#hero-teaser", "Rain in Berlin today? Our Storm shell keeps you dry"),
    ("christmas-banner", lambda: at("2025-12-10T14:00", "Europe/Berlin"), "/", "#promo-banner",
     "Gifts for the long way round: order by 20 December"),
    ("christmas-greeting-2026", lambda: at("2026-12-25T14:00", "Asia/Tokyo"), "/cart",
     "#greeting", "Merry Christmas from everyone at Northwind Outfitters!"),
    ("abandoned-checkout", newcomer(history=["/products/", "/checkout"]), "/", "#promo-banner",
     "Still thinking it over? Your cart is saved: pick up where you left off."),
    ("order-thanks-returning", newcomer(history=["/"]), "/checkout/complete",
     "#order-message + p.order-note", "Thanks for coming back to us"),
]


@pytest.mark.parametrize(("rule_id", "who", "path", "selector", "text"), CASES,
                         ids=[f"{c[0]}:{c[2]}:{c[3]}" for c in CASES])
def test_each_example_changes_the_demo_page(library: RuleLibrary, rule_id: str,
                                            who: Callable[[], VisitorContext], path: str,
                                            selector: str, text: str) -> None:
    context = who()
    result = render(library.ruleset, demo_html(path), page(path, context))
    applied = [r.id for r in result.plan.applied]
    assert rule_id in applied, [(d.rule.id, d.verdict, d.reason) for d in result.plan.decisions]
    assert result.edit is not None and result.edit.personalised
    element = LexborHTMLParser(result.edit.html).css_first(selector)
    assert element is not None, selector
    assert text in " ".join(element.text().split())
    assert text not in demo_html(path)


def test_every_shipped_rule_has_an_example_and_a_description(library: RuleLibrary) -> None:
    shipped = {r.id for r in library.ruleset.rules}
    assert shipped == {c[0] for c in CASES}
    assert all(r.description for r in library.ruleset.rules)
    readme = (RULES / "README.md").read_text(encoding="utf-8")
    assert shipped <= set(re.findall(r'id = "([^"]+)"', readme)) | {
        "mobile-products-intro", "trailmag-partner", "christmas-greeting-2026",
        "order-thanks-returning"}


@pytest.mark.parametrize("path", ["/", "/products/", "/products/basecamp-2-tent", "/about"])
def test_an_ordinary_visitor_gets_the_origin_bytes(library: RuleLibrary, path: str) -> None:
    context = at(AFTERNOON, "Europe/London")
    result = render(library.ruleset, demo_html(path), page(path, context))
    assert result.edit is None and [r.id for r in result.plan.applied] == []
    assert {d.verdict for d in result.plan.decisions} <= {"out_of_audience", "out_of_schedule"}


def test_rules_compete_as_documented(library: RuleLibrary) -> None:
    """A returning newsletter reader who clicked an ad: the ad promise (priority 20) takes
    the headline, so the newsletter rule loses whole; welcome back takes the greeting."""
    context = at(AFTERNOON, "Europe/London", history=["/"],
                 query="utm_medium=email&gclid=abc")
    decided = {d.rule.id: d for d in render(library.ruleset, demo_html("/"),
                                            page("/", context)).plan.decisions}
    assert decided["paid-landing-promise"].verdict == APPLIED
    assert decided["newsletter-landing"].reason == (
        'slot "#hero-headline" is taken by rule "paid-landing-promise" (priority 20 > 10)')
    assert decided["welcome-back"].verdict == APPLIED


BASIC_SEGMENTS = '[segment.returning]\n"visitor.returning" = true\n[segment.mobile]\n' \
    '"device.kind" = "mobile"\n'


def _readme_blocks() -> list[str]:
    readme = (RULES / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```toml\n(.*?)```", readme, re.S)


def test_every_example_in_the_readme_loads() -> None:
    """Whole rules load as they are; one-line audiences and schedules inside a rule."""
    segments = (RULES / "segments.toml").read_text(encoding="utf-8")
    checked = 0
    for block in _readme_blocks():
        if "[[rule]]" in block or "[segment." in block:
            texts = [block]
        else:
            texts = ['[[rule]]\nid = "x"\npages = ["/"]\nslot = "#greeting"\nhtml = "x"\n'
                     + line for line in block.splitlines()
                     if line.startswith(("audience", "schedule"))]
        for text in texts:
            others = BASIC_SEGMENTS if "[segment." in text else segments
            _, errors = load(text, "example.toml", ("segments.toml", others))
            assert errors == (), (text, [str(e) for e in errors])
            checked += 1
    assert checked >= 25  # the format section and the ten editor scenarios


# --- experiments.toml ----------------------------------------------------------------------

# id -> (allocation, page, arm ids, goals as (id, kind, target, primary))
EXPERIMENTS = {
    "hero-headline": (Allocation.FIXED, "/", ["control", "adventure"], [
        ("checkout", "page", "/checkout/complete", True), ("cta-click", "click", "#cta", False),
        ("revenue", "revenue", "purchase", False)]),
    "products-intro": (Allocation.BANDIT, "/products/", ["control", "repairs", "staff-pick"], [
        ("cart", "page", "/cart", True), ("checkout", "page", "/checkout/complete", False)]),
}


def test_the_shipped_experiments_are_the_documented_ones(library: RuleLibrary) -> None:
    found = {d.id: d for d in library.ruleset.experiments}
    assert sorted(found) == sorted(EXPERIMENTS)
    for eid, (allocation, path, arms, goals) in EXPERIMENTS.items():
        definition = found[eid]
        experiment = definition.experiment
        assert definition.file.endswith("rules/experiments.toml") and definition.description
        assert experiment.allocation is allocation
        assert definition.pages.globs == (path,)
        assert [a.id for a in experiment.arms] == arms
        assert [(g.id, str(g.kind), g.target, g.primary) for g in experiment.goals] == goals
        assert definition.arm_rule("control") is None   # the control is the origin's page
        assert all(definition.arm_rule(arm) is not None for arm in arms[1:])
        assert experiment.start is None and experiment.end is None   # runs from the start
    assert found["hero-headline"].experiment.weights == (0.5, 0.5)
    bandit = found["products-intro"].experiment.bandit
    # A short burn-in and cadence: the weights move while a newcomer watches.
    assert bandit.cadence_seconds <= 60 and bandit.min_units <= 50 and bandit.floor > 0


ARMS = [  # (experiment, arm, page, selector, text the element then shows)
    ("hero-headline", "adventure", "/", "#hero-headline", "Your next adventure starts here"),
    ("products-intro", "repairs", "/products/", "#products-intro",
     "Everything here is repaired free for life, however far you take it."),
    ("products-intro", "staff-pick", "/products/",
     '#products-intro a[href="/products/basecamp-2-tent"]',
     "Not sure where to start? Our staff pick is the Basecamp 2 Tent"),
]


@pytest.mark.parametrize(("eid", "arm", "path", "selector", "text"), ARMS,
                         ids=[f"{c[0]}:{c[1]}" for c in ARMS])
def test_each_arm_changes_its_slot_on_the_demo_page(library: RuleLibrary, eid: str, arm: str,
                                                    path: str, selector: str, text: str) -> None:
    definition = library.ruleset.experiment(eid)
    assert definition is not None
    rule = definition.arm_rule(arm)
    assert rule is not None
    context = at(AFTERNOON, "Europe/London")
    result = render(library.ruleset, demo_html(path), page(path, context), arms=[rule])
    assert [r.id for r in result.plan.applied] == [f"{eid}:{arm}"]
    assert result.edit is not None
    tree = LexborHTMLParser(result.edit.html)
    assert tree.css_first(selector) is not None, selector
    element = tree.css_first(rule.slots[0])   # the slot itself
    assert text in " ".join(element.text().split())
    assert text not in demo_html(path)


# Visitors for the audiences: a newcomer, every visitor of the rule examples above.
VISITORS = [("newcomer:/", newcomer(), "/"), ("newcomer:/products/", newcomer(), "/products/"),
            *((f"{c[0]}:{c[2]}:{c[3]}", c[1], c[2]) for c in CASES)]


@pytest.mark.parametrize(("label", "who", "path"), VISITORS, ids=[v[0] for v in VISITORS])
def test_no_rule_for_a_visitor_in_an_experiment_touches_its_slots(
        library: RuleLibrary, label: str, who: Callable[[], VisitorContext], path: str) -> None:
    """Arms outrank rules, so an experiment leaves out whoever a rule already serves on its
    slots: campaign landings keep their headline, phones their product-list hint."""
    context = who()
    applied = render(library.ruleset, demo_html(path), page(path, context)).plan.applied
    taken = {slot for rule in applied for slot in rule.slots}
    for definition in library.ruleset.experiments_on(HOST, path):
        if definition.audience is not None and \
                matching.evaluate(definition.audience, getter(context)) is not None:
            continue   # not in this experiment's audience
        arm_slots = {slot for content in definition.arms for change in content.changes
                     for slot in [change.selector]}
        assert not taken & arm_slots, (definition.id, [r.id for r in applied])


@pytest.mark.parametrize(("eid", "who", "inside"), [
    ("hero-headline", newcomer(), True),
    ("hero-headline", newcomer(user_agent=IPHONE), True),
    ("hero-headline", newcomer(query="utm_medium=email"), False),
    ("hero-headline", newcomer(query="gclid=test"), False),
    ("hero-headline", newcomer(query="utm_term=rain+jacket"), False),
    ("products-intro", newcomer(), True),
    ("products-intro", newcomer(query="gclid=test"), True),
    ("products-intro", newcomer(user_agent=IPHONE), False),
])
def test_experiment_audiences(library: RuleLibrary, eid: str,
                              who: Callable[[], VisitorContext], inside: bool) -> None:
    definition = library.ruleset.experiment(eid)
    assert definition is not None and definition.audience is not None
    assert (matching.evaluate(definition.audience, getter(who())) is None) is inside
