"""Remembered plans (proxy.rules.plan): a plan taken from the rule set's memory must be the
very plan the visitor would get from scratch, verdicts and reasons alike."""

from __future__ import annotations

import itertools
from typing import Any

from proxy.rules.plan import RECENT_PLANS, _plan, plan

from .test_rules_support import DESKTOP, IPHONE, at, load, page, visitor

RULES = """
[[rule]]
id = "everyone"
pages = ["/*"]
slot = "#greeting"
html = "Hello"

[[rule]]
id = "phones"
pages = ["/*"]
priority = 10
audience = { "device.kind" = ["mobile", "tablet"] }
slot = "#greeting"
html = "Hi phone"

[[rule]]
id = "germans-from-search"
pages = ["/*"]
priority = 5
audience = { "geo.country" = "DE", any = [{ "source.class" = "search" },
                                          { "visitor.returning" = true }] }
slot = "#greeting"
html = "Hallo"

[[rule]]
id = "mornings"
pages = ["/products/*"]
schedule = { hours = ["6-11"] }
slot = "#hero"
html = "Good morning"

[[rule]]
id = "segment-rule"
pages = ["/*"]
audience = { segment = "mobile-de" }
slot = "#hero"
html = "Segment"

[segment.mobile-de]
"device.kind" = "mobile"
"geo.country" = "DE"
"""


def decisions(made: Any) -> list[tuple[str, str, str, str | None]]:
    return [(d.rule.id, d.verdict, d.reason, d.winner) for d in made.decisions]


def visitors() -> list[Any]:
    out = []
    for agent, country, referer, history in itertools.product(
            (DESKTOP, IPHONE), ("", "DE", "FR"), ("", "https://www.google.com/"),
            ((), ("/",))):
        out.append(visitor("/products/x", user_agent=agent, country=country, referer=referer,
                           history=history))
    out += [at("2025-10-14T07:15", "Europe/Berlin", country="DE"),
            at("2025-10-14T19:45", "Europe/Berlin", country="DE", user_agent=IPHONE)]
    return out


def test_a_remembered_plan_is_the_plan_made_from_scratch() -> None:
    ruleset, errors = load(RULES)
    assert errors == ()
    first_round = []
    for round_ in (1, 2):   # the second round comes from memory
        for i, context in enumerate(visitors()):
            request = page("/products/x", context)
            fresh = _plan(request.host, request.path,
                          ruleset.candidates(request.host, request.path), context.get, ())
            made = plan(ruleset, context, request)
            assert decisions(made) == decisions(fresh)
            if round_ == 1:
                first_round.append(made)
            else:
                assert made is first_round[i]
    verdicts = {d.verdict for made in first_round for d in made.decisions}
    assert verdicts == {"applied", "lost", "out_of_audience", "out_of_schedule"}


def test_situations_that_differ_only_in_what_no_rule_reads_share_a_plan() -> None:
    ruleset, _ = load(RULES)
    a = visitor("/products/x", city="Berlin", country="DE")
    b = visitor("/products/x", city="Hamburg", country="DE",
                accept_language="de-DE")
    assert plan(ruleset, a, page("/products/x", a)) is plan(ruleset, b, page("/products/x", b))


class Context:
    """Just enough of a context for plan(): attribute values by name."""

    def __init__(self, name: str, value: Any) -> None:
        self.values = {name: value}

    def get(self, name: str) -> Any:
        return self.values.get(name)


def test_true_and_one_are_different_situations() -> None:
    ruleset, _ = load('[[rule]]\nid = "r"\npages = ["/*"]\nslot = "#s"\nhtml = "x"\n'
                      'audience = { "visitor.returning" = true }\n')
    yes = plan(ruleset, Context("visitor.returning", True), page("/"))
    one = plan(ruleset, Context("visitor.returning", 1), page("/"))
    assert [d.verdict for d in yes.decisions] == ["applied"]
    assert [d.verdict for d in one.decisions] == ["out_of_audience"]


def test_an_unhashable_value_is_planned_without_memory() -> None:
    ruleset, _ = load('[[rule]]\nid = "r"\npages = ["/*"]\nslot = "#s"\nhtml = "x"\n'
                      'audience = { "signals.tags" = "a" }\n')
    made = plan(ruleset, Context("signals.tags", ["a", "b"]), page("/"))
    assert [d.verdict for d in made.decisions] == ["applied"]
    assert ruleset.recent_plans.plans == {}


def test_the_memory_is_bounded_and_forgets_the_oldest_first() -> None:
    ruleset, _ = load('[[rule]]\nid = "r"\npages = ["/*"]\nslot = "#s"\nhtml = "x"\n'
                      'audience = { "visitor.visit_number" = { gt = 3 } }\n')
    for n in range(RECENT_PLANS + 10):
        plan(ruleset, Context("visitor.visit_number", n), page("/"))
    remembered = ruleset.recent_plans.plans
    assert len(remembered) == RECENT_PLANS
    assert min(key[3][0] for key in remembered) == 10


def test_a_reloaded_rule_set_starts_with_no_plans() -> None:
    first, _ = load(RULES)
    context = visitor("/products/x")
    plan(first, context, page("/products/x", context))
    second, _ = load(RULES)
    assert first.recent_plans.plans and not second.recent_plans.plans
