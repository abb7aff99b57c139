"""Request-time experiment decisions: assignment, stickiness, counting once, conversions."""

from __future__ import annotations

import fnmatch
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from experiments.assignment import VisitorFacts, plan_layers
from experiments.model import GoalKind, parse_experiment
from proxy.context.build import build_context
from proxy.context.identity import (
    MAX_GOALS,
    Membership,
    VisitorState,
    decode,
    encode,
    with_membership,
)
from proxy.context.model import RequestFacts
from proxy.context.settings import ContextSettings
from proxy.experiment_runtime import (
    COVARIATE_CAP,
    COVARIATE_GOAL,
    GoalHit,
    Situation,
    convert,
    covariate_of,
    decide,
    visitor_facts,
    with_covariate,
)
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
    # a first visit: no previous visits, the CUPED covariate is 0
    assert first.events == (Exposure("hero", outcome.arm, "2026-11-22", 0.5, covariate=0.0),)
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
    assert events == (Conversion.binary("hero", "checkout", arm, "2026-11-22",  # type: ignore[arg-type]
                                        covariate=0.0),)
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


# -- CUPED: the pre-exposure covariate -------------------------------------------------------

SECRET = "test-secret"


def returning(visit_number: int) -> VisitorState:
    """A visitor on visit ``visit_number``, one minute into it (so no new visit starts)."""
    t = int(NOW.timestamp())
    return VisitorState(visitor_id="ab" * 16, first_seen=t - 90 * 86_400, visit_start=t - 60,
                        last_seen=t - 60, previous_visit_end=t - 86_400,
                        visit_number=visit_number)


def round_trip(state: VisitorState | None) -> VisitorState:
    assert state is not None
    decoded = decode(encode(state, SECRET), (SECRET,), NOW.timestamp())
    assert decoded == state
    return decoded


def test_the_exposure_carries_previous_visits_and_the_cookie_remembers_them() -> None:
    decided = decide([HERO], context(returning(4)), SITUATION, in_audience=always)
    (exposure,) = decided.events
    assert isinstance(exposure, Exposure) and exposure.covariate == 3.0  # 3 visits before
    state = round_trip(decided.state)   # the signed cookie, binary format unchanged
    member = state.membership("hero")
    assert member is not None and covariate_of(member) == 3.0
    assert member.goals == ((COVARIATE_GOAL, 3.0),)
    assert member.total("checkout") is None and member.total("revenue") is None
    # a later page view: not counted again, and x stays as it was at the exposure
    later = decide([HERO], context(state), SITUATION, in_audience=always)
    assert later.events == () and later.state is not None
    assert covariate_of(later.state.membership("hero")) == 3.0  # type: ignore[arg-type]


def test_conversions_carry_the_covariate_and_xy_telescopes_to_x_times_the_total() -> None:
    decided = decide([HERO], context(returning(6)), SITUATION, in_audience=always)
    arm = decided.arm_of("hero")
    state = round_trip(decided.state)
    events: list[Conversion] = []
    for hit in (GoalHit(GoalKind.PAGE, "/checkout/complete"),
                GoalHit(GoalKind.CUSTOM, "purchase", 30.0),
                GoalHit(GoalKind.PAGE, "/checkout/complete"),   # binary: counted once
                GoalHit(GoalKind.CUSTOM, "purchase", 12.5)):
        changed, converted = convert(state, {"hero": HERO}, [hit], "2026-11-22", matches)
        state = round_trip(changed)
        events += converted
    assert [(e.goal, e.value, e.covariate) for e in events] == [
        ("checkout", 1.0, 5.0), ("revenue", 30.0, 5.0), ("revenue", 12.5, 5.0)]
    assert all(e.arm == arm for e in events)
    revenue = [e for e in events if e.goal == "revenue"]
    # what the store adds to "<arm>:xy": x * value per conversion, x * total per visitor
    assert sum(e.covariate * e.value for e in revenue) == 5.0 * 42.5  # type: ignore[operator]
    member = state.membership("hero")
    assert member is not None
    assert member.goals == ((COVARIATE_GOAL, 5.0), ("checkout", 1.0), ("revenue", 42.5))


def test_the_covariate_is_capped_and_never_counts_as_a_goal() -> None:
    decided = decide([HERO], context(returning(5000)), SITUATION, in_audience=always)
    assert decided.events[0].covariate == COVARIATE_CAP  # type: ignore[union-attr]
    member = decided.state.membership("hero")  # type: ignore[union-attr]
    assert member is not None and member.total(COVARIATE_GOAL) == COVARIATE_CAP
    # a goal can never be named like the covariate entry
    with pytest.raises(ValueError, match="id"):
        parse_experiment({"id": "x", "arms": [{"id": "a", "weight": 1.0}], "goals": [
            {"id": COVARIATE_GOAL, "kind": "page", "url": "/x", "primary": True}]}, "test")
    # every goal converts although the membership already has an entry (the covariate's)
    _, events = convert(decided.state, {"hero": HERO},
                        [GoalHit(GoalKind.PAGE, "/checkout/complete")], "2026-11-22", matches)
    assert [e.goal for e in events] == ["checkout"]


def test_memberships_without_a_covariate_convert_without_one() -> None:
    """A visitor exposed before covariates were recorded: the conversion carries none, so
    the store adds nothing to xy (and the exposure added nothing to x)."""
    decided = decide([HERO], context(returning(3)), SITUATION, in_audience=always)
    member = decided.state.membership("hero")  # type: ignore[union-attr]
    assert member is not None
    old = with_membership(decided.state, Membership(  # type: ignore[arg-type]
        "hero", member.arm, member.salt_tag, True, with_covariate(member.goals, None)))
    _, events = convert(round_trip(old), {"hero": HERO},
                        [GoalHit(GoalKind.CUSTOM, "purchase", 9.0)], "2026-11-22", matches)
    assert [(e.goal, e.covariate) for e in events] == [("revenue", None)]


def test_an_experiment_with_max_goals_goals_records_no_covariate() -> None:
    many = parse_experiment({
        "id": "many", "arms": [{"id": "a", "weight": 0.5}, {"id": "b", "weight": 0.5}],
        "goals": [{"id": f"g{i}", "kind": "page", "url": f"/g{i}", "primary": i == 0}
                  for i in range(MAX_GOALS)]}, "test")
    decided = decide([many], context(returning(4)), SITUATION, in_audience=always)
    assert decided.events[0].covariate is None  # type: ignore[union-attr]
    state = decided.state
    for i in range(MAX_GOALS):
        state, events = convert(state, {"many": many}, [GoalHit(GoalKind.PAGE, f"/g{i}")],
                                "2026-11-22", matches)
        assert len(events) == 1 and events[0].covariate is None
    state = round_trip(state)   # all MAX_GOALS totals fit: no goal converts twice
    _, again = convert(state, {"many": many}, [GoalHit(GoalKind.PAGE, f"/g{MAX_GOALS - 1}")],
                       "2026-11-22", matches)
    assert again == ()


# -- the shared values and shortcuts of decide() against what they stand for ---------------

HERO_TWIN = replace(HERO, id="twin")


@pytest.mark.parametrize("reason", ["", "opted_out", "gpc", "dnt", "no_consent"])
@pytest.mark.parametrize("kind", ["desktop", "mobile", "bot"])
@pytest.mark.parametrize("in_audience", [True, False, 1, 0])
def test_the_shared_visitor_facts_are_the_ones_the_rule_gives(
        reason: str, kind: str, in_audience: object) -> None:
    context = SimpleNamespace(privacy_reason=reason, device=SimpleNamespace(kind=kind))
    facts = visitor_facts(context, in_audience)  # type: ignore[arg-type]
    assert facts == VisitorFacts(in_audience, kind == "bot",  # type: ignore[arg-type]
                                 reason in ("opted_out", "gpc", "dnt"), reason != "no_consent")
    assert facts.in_audience is in_audience     # a truthy value is kept as given


@pytest.mark.parametrize(("privacy", "ua", "reason"), [
    ("", CHROME, "opted_out"),          # profiling off for a reason the facts do not name
    ("no_consent", CHROME, "no_consent"),
    ("", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot"),
])
def test_a_visitor_without_a_cookie_identity_is_never_hashed(privacy: str, ua: str,
                                                             reason: str) -> None:
    anonymous = replace(context(ua=ua), cookie_state=None, privacy_reason=privacy)
    decided = decide([HERO, HERO_TWIN], anonymous, SITUATION, in_audience=always)
    assert [(o.arm, o.reason) for o in decided.outcomes] == [(None, reason)] * 2
    assert decided.state is None and decided.events == ()


@pytest.mark.parametrize("goals", [(), (("checkout", 1.0),), ((COVARIATE_GOAL, 2.0),),
                                   (("a", 1.0), (COVARIATE_GOAL, 2.0), ("b", 3.0))])
@pytest.mark.parametrize("x", [None, 0.0, 4.0])
def test_with_covariate_puts_x_first_and_keeps_the_goals(
        goals: tuple[tuple[str, float], ...], x: float | None) -> None:
    rest = tuple(entry for entry in goals if entry[0] != COVARIATE_GOAL)
    assert with_covariate(goals, x) == (rest if x is None else ((COVARIATE_GOAL, x), *rest))


def test_two_experiments_on_one_page_both_count_and_share_the_day() -> None:
    decided = decide([HERO, HERO_TWIN], context(), SITUATION, in_audience=always)
    assert [e.experiment for e in decided.events] == ["hero", "twin"]
    assert {e.day for e in decided.events} == {"2026-11-22"}
    assert decided.state is not None
    assert [m.experiment for m in decided.state.experiments] == ["hero", "twin"]


def test_an_experiment_given_twice_is_counted_once() -> None:
    decided = decide([HERO, HERO_TWIN, HERO], context(), SITUATION, in_audience=always)
    first, _, again = decided.outcomes
    assert first.counted and not first.sticky
    assert again.arm == first.arm and again.sticky and not again.counted
    assert [e.experiment for e in decided.events] == ["hero", "twin"]
    assert decided.state is not None
    assert [m.experiment for m in decided.state.experiments] == ["hero", "twin"]
