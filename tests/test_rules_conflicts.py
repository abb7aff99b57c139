"""Several rules on one slot: priority, then audience specificity, then file order; the
losers are reported with the reason; a rule applies whole or not at all."""

from __future__ import annotations

import pytest
from selectolax.lexbor import LexborHTMLParser

from proxy.rules.engine import RulesTransform, render
from proxy.rules.plan import APPLIED, LOST, OUT_OF_AUDIENCE, OUT_OF_SCHEDULE, plan

from .test_rules_support import IPHONE, demo_html, load, page, visitor


def rule(rid: str, slot: str = "#greeting", priority: int = 0, audience: str = "",
         extra: str = "") -> str:
    text = f'[[rule]]\nid = "{rid}"\npages = ["/"]\npriority = {priority}\n'
    if audience:
        text += f"audience = {{ {audience} }}\n"
    text += extra
    return text + f"slot = '{slot}'\nhtml = \"{rid}\"\n"


MOBILE = visitor(user_agent=IPHONE, country="DE", history=["/"])


@pytest.mark.parametrize(("files", "winner", "loser", "reason"), [
    ([("a.toml", rule("low", priority=1) + rule("high", priority=5))], "high", "low",
     'slot "#greeting" is taken by rule "high" (priority 5 > 1)'),
    ([("a.toml", rule("broad", audience='"device.kind" = "mobile"')
       + rule("narrow", audience='"device.kind" = "mobile", "geo.country" = "DE"'))],
     "narrow", "broad", 'slot "#greeting" is taken by rule "narrow" (same priority, more '
     "specific audience: 2 > 1 conditions)"),
    ([("a.toml", rule("everyone") + rule("targeted", audience='"visitor.returning" = true'))],
     "targeted", "everyone", "more specific audience: 1 > 0 conditions"),
    ([("a.toml", rule("first") + rule("second"))], "first", "second",
     'slot "#greeting" is taken by rule "first" (same priority and specificity, earlier in '
     "file order: rules/a.toml:2)"),
    ([("b.toml", rule("in-b")), ("a.toml", rule("in-a"))], "in-a", "in-b",
     "earlier in file order: rules/a.toml:2"),
    ([("a.toml", rule("spaced", slot="body  #greeting") + rule("tight", slot="body #greeting",
                                                               priority=1))],
     "tight", "spaced", 'slot "body #greeting" is taken by rule "tight"'),
    # priority beats specificity, specificity beats file order
    ([("a.toml", rule("specific", audience='"device.kind" = "mobile", "geo.country" = "DE"'))
      , ("b.toml", rule("urgent", priority=1))], "urgent", "specific", "priority 1 > 0"),
])
def test_the_best_ranked_rule_wins_the_slot(files: list[tuple[str, str]], winner: str,
                                            loser: str, reason: str) -> None:
    ruleset, errors = load(files[0][1], files[0][0], *files[1:])
    assert errors == ()
    decided = plan(ruleset, MOBILE, page("/", MOBILE))
    verdicts = {d.rule.id: d for d in decided.decisions}
    assert verdicts[winner].verdict == APPLIED
    assert verdicts[loser].verdict == LOST and verdicts[loser].winner == winner
    assert reason in verdicts[loser].reason
    edit = RulesTransform(ruleset).apply(demo_html("/"), page("/", MOBILE))
    assert edit is not None
    assert LexborHTMLParser(edit.html).css_first("#greeting").text() == winner


def test_a_rule_out_of_audience_or_schedule_blocks_nothing() -> None:
    ruleset, _ = load(rule("phones", priority=9, audience='"device.kind" = "mobile"')
                      + rule("later", priority=8, extra='schedule = { start = 2099-01-01 }\n')
                      + rule("default"))
    ctx = visitor()
    decided = plan(ruleset, ctx, page("/", ctx))
    assert [(d.rule.id, d.verdict) for d in decided.decisions] == [
        ("default", APPLIED), ("phones", OUT_OF_AUDIENCE), ("later", OUT_OF_SCHEDULE)]
    assert decided.by_verdict(OUT_OF_SCHEDULE)[0].reason.startswith("starts 2099-01-01 00:00")


def test_a_rule_that_loses_one_slot_loses_all_of_them() -> None:
    both = ('[[rule]]\nid = "both"\npages = ["/"]\n[[rule.change]]\nslot = "#greeting"\n'
            'html = "both"\n[[rule.change]]\nslot = "#cta"\nhtml = "both"\n')
    ruleset, _ = load(both + rule("greeting-only", priority=3))
    ctx = visitor()
    decided = plan(ruleset, ctx, page("/", ctx))
    assert [(d.rule.id, d.verdict) for d in decided.decisions] == [
        ("greeting-only", APPLIED), ("both", LOST)]
    tree = LexborHTMLParser(RulesTransform(ruleset).apply(demo_html("/"), page("/", ctx)).html)  # type: ignore[union-attr]
    assert tree.css_first("#cta").text() == "Shop the collection"  # untouched


def test_different_selectors_for_one_element_do_not_overlap_on_the_page() -> None:
    ruleset, _ = load(rule("by-id", priority=2)
                      + rule("by-attribute", slot='[data-slot="greeting"]', priority=1)
                      + rule("by-id-again", slot="#cta")
                      + rule("inside", slot="#greeting", priority=0))
    result = render(ruleset, demo_html("/"), page("/"))
    assert [r.id for r in result.plan.applied] == ["by-id", "by-attribute", "by-id-again"]
    slots = {s.key: s for s in result.slots}
    assert slots["by-id"].changed == 1 and slots["by-id-again"].changed == 1
    assert slots["by-attribute"].changed == 0
    assert slots["by-attribute"].problems == ("<p> overlaps a change made by an earlier rule",)
    assert result.edit is not None and result.edit.variant == "by-id,by-id-again"


@pytest.mark.parametrize(("rules", "context", "variant", "personalised"), [
    (rule("plain"), None, "plain", False),
    (rule("for-phones", audience='"device.kind" = "mobile"'), MOBILE, "for-phones", True),
    (rule("timed", extra='schedule = { hours = ["0-23"] }\n'), MOBILE, "timed", True),
])
def test_variant_and_personalisation(rules: str, context: object, variant: str,
                                     personalised: bool) -> None:
    ruleset, _ = load(rules)
    edit = RulesTransform(ruleset).apply(demo_html("/"), page("/", context))  # type: ignore[arg-type]
    assert edit is not None and (edit.variant, edit.personalised) == (variant, personalised)


def test_placeholder_values_change_the_variant() -> None:
    ruleset, _ = load('[[rule]]\nid = "city"\npages = ["/"]\nslot = "#greeting"\n'
                      'html = "Hello {geo.city|there}"\n')
    edits = [RulesTransform(ruleset).apply(demo_html("/"), page("/", visitor(city=c)))
             for c in ("Berlin", "Paris", "Berlin")]
    variants = [e.variant for e in edits if e is not None]
    assert variants[0] == variants[2] != variants[1] and variants[0].startswith("city;")
    assert all(e is not None and e.personalised for e in edits)
