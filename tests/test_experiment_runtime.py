"""Request-time experiment decisions: assignment, stickiness, counting once, conversions."""

from __future__ import annotations

import fnmatch
from datetime import UTC, datetime

import pytest

from experiments.assignment import plan_layers
from experiments.model import GoalKind, parse_experiment
from proxy.context.build import build_context
from proxy.context.model import RequestFacts
from proxy.context.settings import ContextSettings
from proxy.experiment_runtime import GoalHit, Situation, convert, decide
from proxy.store.events import Conversion, Exposure

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
HERO = parse_experiment({
    "id": "hero", "arms": [{"id": "control", "weight": 0.5}, {"id": "b", "weight": 0.5}],
    "goals": [{"id": "checkout", "kind": "page", "url": "/checkout/complete", "primary": True},
              {"id": "revenue", "kind": "revenue", "event": "purchase"}],
}, "test")
SITUATION = Situation(now=NOW, weights={}, periods={}, slots={})


def context(state=None, ua: str = CHROME, **facts: str):  # type: ignore[no-untyped-def]
    request = RequestFacts(client_ip="203.0.113.9", peer_trusted=False, method="GET",
                           scheme="https", host="shop.test", path="/", user_agent=ua, **facts)
    return build_context(request, state, ContextSettings(), NOW.timestamp(), None)


def always(_: object) -> bool:
    return True


def test_first_exposure_is_counted_once_and_the_arm_sticks() -> None:
    first = decide([HERO], context(), SITUATION, in_audience=always)
    [outcome] = first.outcomes
    assert outcome.arm in ("control", "b") and outcome.counted and outcome.reason == ""
    assert first.events == (Exposure("hero", outcome.arm, "2026-11-22", 0.5),)
    again = decide([HERO], context(first.state), SITUATION, in_audience=always)
    assert again.outcomes[0].arm == outcome.arm
    assert again.outcomes[0].sticky and not again.outcomes[0].counted
    assert again.events == ()


def test_weight_changes_do_not_move_assigned_visitors_but_a_new_salt_does() -> None:
    states = [decide([HERO], context(), SITUATION, in_audience=always) for _ in range(200)]
    skewed = Situation(now=NOW, weights={"hero": (0.01, 0.99)}, periods={}, slots={})
    for first in states:
        later = decide([HERO], context(first.state), skewed, in_audience=always)
        assert later.arm_of("hero") == first.arm_of("hero")
    resalted = parse_experiment({"id": "hero", "salt": "hero-v2", "arms": [
        {"id": "control", "weight": 0.5}, {"id": "b", "weight": 0.5}], "goals": [
        {"id": "checkout", "kind": "page", "url": "/x", "primary": True}]}, "test")
    moved = sum(decide([resalted], context(f.state), SITUATION, in_audience=always)
                .arm_of("hero") != f.arm_of("hero") for f in states)
    assert 60 < moved < 140        # reshuffled: about half change arm


@pytest.mark.parametrize("kwargs,reason", [
    ({"ua": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}, "bot"),
    ({"sec_gpc": "1"}, "opted_out"),
])
def test_bots_and_objecting_visitors_are_never_counted(kwargs: dict, reason: str) -> None:
    decisions = decide([HERO], context(**kwargs), SITUATION, in_audience=always)
    assert decisions.outcomes[0].arm is None
    assert decisions.outcomes[0].reason == reason
    assert decisions.events == ()


def test_audience_and_preview() -> None:
    outside = decide([HERO], context(), SITUATION, in_audience=lambda e: False)
    assert outside.outcomes[0].reason == "not_in_audience"
    preview = decide([HERO], context(), SITUATION, in_audience=always, preview={"hero": "b"})
    assert preview.outcomes[0].arm == "b" and preview.outcomes[0].reason == "preview"
    assert preview.events == ()
    assert preview.state is not None and preview.state.membership("hero") is None


def test_layers_are_exclusive() -> None:
    def in_layer(exp_id: str) -> object:
        return parse_experiment({"id": exp_id, "layer": "hero-layer", "traffic": 0.5, "arms": [
            {"id": "a", "weight": 0.5}, {"id": "b", "weight": 0.5}], "goals": [
            {"id": "g", "kind": "page", "url": "/x", "primary": True}]}, "test")

    one, two = in_layer("one"), in_layer("two")
    situation = Situation(now=NOW, weights={}, periods={}, slots=plan_layers([one, two]))
    both = 0
    for _ in range(300):
        d = decide([one, two], context(), situation, in_audience=always)  # type: ignore[list-item]
        assigned = [o for o in d.outcomes if o.arm is not None]
        both += len(assigned) == 2
        assert len(assigned) == 1
        assert {o.reason for o in d.outcomes if o.arm is None} == {"other_experiment_in_layer"}
    assert both == 0


def matches(pattern: str, target: str) -> bool:
    return fnmatch.fnmatchcase(target, pattern)


def test_conversions_count_once_and_revenue_sums_per_visitor() -> None:
    exposed = decide([HERO], context(), SITUATION, in_audience=always)
    arm = exposed.arm_of("hero")
    state, events = convert(exposed.state, {"hero": HERO},
                            [GoalHit(GoalKind.PAGE, "/checkout/complete")], "2026-11-22", matches)
    assert events == (Conversion.binary("hero", "checkout", arm, "2026-11-22"),)  # type: ignore[arg-type]
    state, again = convert(state, {"hero": HERO},
                           [GoalHit(GoalKind.PAGE, "/checkout/complete")], "2026-11-22", matches)
    assert again == ()                                       # the same visitor twice
    state, first = convert(state, {"hero": HERO},
                           [GoalHit(GoalKind.CUSTOM, "purchase", 30.0)], "2026-11-22", matches)
    state, second = convert(state, {"hero": HERO},
                            [GoalHit(GoalKind.CUSTOM, "purchase", 20.0)], "2026-11-22", matches)
    revenue = [e for e in (*first, *second) if e.goal == "revenue"]
    assert [e.value for e in revenue] == [30.0, 20.0]
    # Q over visitor totals: the deltas telescope to (30 + 20)^2.
    assert sum(e.value_sq_delta for e in revenue) == pytest.approx(50.0 ** 2)


def test_no_conversion_without_a_counted_exposure() -> None:
    fresh = context().cookie_state
    _, events = convert(fresh, {"hero": HERO},
                        [GoalHit(GoalKind.PAGE, "/checkout/complete")], "2026-11-22", matches)
    assert events == ()
