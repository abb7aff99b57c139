"""parse_experiment: a full valid table, and a message naming field, value and what is valid
for each kind of bad input."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone

import pytest

from experiments.model import (
    Allocation,
    BanditSettings,
    Experiment,
    GoalKind,
    parse_experiment,
)

VALID = {
    "id": "hero",
    "salt": "hero.v2",
    "layer": "homepage",
    "traffic": 0.5,
    "allocation": "bandit",
    "start": "2025-03-01T09:00:00+01:00",
    "end": datetime(2025, 4, 1, tzinfo=UTC),
    "arms": [{"id": "control", "weight": 0.25}, {"id": "big-photo", "weight": 0.75}],
    "goals": [
        {"id": "checkout", "kind": "page", "url": "/checkout/done*", "primary": True},
        {"id": "cta", "kind": "click", "selector": "#buy"},
        {"id": "signup", "kind": "custom", "event": "signup"},
        {"id": "revenue", "kind": "revenue", "event": "purchase"},
    ],
    "bandit": {"floor": 0.05, "min_units": 200, "top_two": True},
}


def with_changes(**changes: object) -> dict:
    table = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


def test_full_table() -> None:
    exp = parse_experiment(VALID, "rules/hero.toml")
    assert exp.id == "hero" and exp.salt == "hero.v2" and exp.layer == "homepage"
    assert exp.traffic == 0.5 and exp.allocation is Allocation.BANDIT
    assert exp.start == datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    assert exp.end == datetime(2025, 4, 1, tzinfo=UTC)
    assert exp.weights == (0.25, 0.75) and exp.control.id == "control"
    assert [g.kind for g in exp.goals] == [GoalKind.PAGE, GoalKind.CLICK, GoalKind.CUSTOM,
                                            GoalKind.REVENUE]
    assert exp.primary_goal.id == "checkout" and exp.primary_goal.target == "/checkout/done*"
    assert [g.binary for g in exp.goals] == [True, True, True, False]
    assert exp.bandit == BanditSettings(floor=0.05, min_units=200, top_two=True)
    with pytest.raises(AttributeError):
        exp.traffic = 1.0  # type: ignore[misc]


def test_defaults() -> None:
    exp = parse_experiment(with_changes(salt=None, layer=None, traffic=None, allocation=None,
                                        start=None, end=None, bandit=None), "x")
    assert exp.salt == "hero" and exp.layer is None and exp.traffic == 1.0
    assert exp.allocation is Allocation.FIXED and exp.start is None and exp.end is None
    assert exp.bandit == BanditSettings()
    assert Experiment("a", exp.arms, exp.goals).salt == "a"


@pytest.mark.parametrize(("changes", "message"), [
    ({"arms": [{"id": "a", "weight": 0.5}, {"id": "b", "weight": 0.4}]},
     "arm weights sum to 0.9 (a=0.5, b=0.4), expected 1"),
    ({"arms": [{"id": "a", "weight": 0.6}, {"id": "b", "weight": 0.6}]}, "sum to 1.2"),
    ({"arms": [{"id": "a", "weight": -0.5}, {"id": "b", "weight": 1.5}]},
     "arms[0] ('a'): weight: -0.5 is outside 0..1"),
    ({"arms": [{"id": "a", "weight": 1.0}]}, "arms must be a list of at least 2"),
    ({"arms": [{"id": "a", "weight": 0.5}, {"id": "a", "weight": 0.5}]},
     "id 'a' appears more than once"),
    ({"arms": [{"id": "a"}, {"id": "b", "weight": 1.0}]}, "weight is missing"),
    ({"arms": [{"id": "a", "weight": "half"}, {"id": "b", "weight": 0.5}]},
     "expected a finite number, got 'half'"),
    ({"arms": [{"id": "a", "weight": True}, {"id": "b", "weight": 0.0}]},
     "expected a finite number, got True"),
    ({"arms": [{"id": "a b", "weight": 0.5}, {"id": "b", "weight": 0.5}]},
     "'a b' is not a valid name"),
    ({"traffic": 1.5}, "traffic: 1.5 is outside 0..1"),
    ({"traffic": float("nan")}, "traffic: expected a finite number"),
    ({"trafic": 0.5}, "unknown key 'trafic'; valid keys are"),
    ({"allocation": "greedy"}, "allocation: 'greedy' is not one of 'fixed', 'bandit'"),
    ({"salt": "a:b"}, "salt: 'a:b' is not a valid name"),
    ({"id": ""}, "id: '' is not a valid name"),
    ({"start": "2025-03-01T09:00:00"}, "has no UTC offset"),
    ({"start": "tomorrow"}, "'tomorrow' is not an ISO 8601 date-time"),
    ({"end": "2025-02-01T00:00:00Z"}, "is not after start"),
    ({"goals": []}, "goals must be a non-empty list"),
    ({"goals": [{"id": "g", "kind": "page", "url": "/x"}]},
     "exactly one goal must have primary = true, found 0 (none)"),
    ({"goals": [{"id": "g", "kind": "page", "url": "/x", "primary": True},
                {"id": "h", "kind": "page", "url": "/y", "primary": True}]},
     "found 2 (g, h)"),
    ({"goals": [{"id": "g", "kind": "page", "selector": "#x", "primary": True}]},
     "a page goal takes url, not selector"),
    ({"goals": [{"id": "g", "kind": "click", "selector": " ", "primary": True}]},
     "selector must be a non-empty string for a click goal"),
    ({"goals": [{"id": "g", "kind": "scroll", "url": "/x", "primary": True}]},
     "kind: 'scroll' is not one of 'page', 'click', 'custom', 'revenue'"),
    ({"goals": [{"id": "g", "kind": "page", "url": "/x", "primary": "yes"}]},
     "primary must be true or false"),
    ({"bandit": {"floor": 0.6}}, "floor 0.6 x 2 arms = 1.2 > 1; give a floor of at most 0.5"),
    ({"bandit": {"min_units": -1}}, "min_units: expected a whole number >= 0, got -1"),
    ({"bandit": {"cadence": 60}}, "bandit: unknown key 'cadence'"),
    ({"bandit": {"segment_prior_strength": 0}}, "segment_prior_strength must be > 0"),
])
def test_bad_values_are_named(changes: dict, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_experiment(with_changes(**changes), "rules/hero.toml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("rules/hero.toml")


def test_weights_within_tolerance_are_kept_not_rescaled() -> None:
    arms = [{"id": "a", "weight": 1 / 3}, {"id": "b", "weight": 1 / 3},
            {"id": "c", "weight": 1 / 3 - 5e-10}]
    exp = parse_experiment(with_changes(arms=arms, bandit=None), "x")
    assert exp.weights[2] == 1 / 3 - 5e-10
    arms[2]["weight"] = 1 / 3 - 2e-9
    with pytest.raises(ValueError, match="never rescaled"):
        parse_experiment(with_changes(arms=arms, bandit=None), "x")


def test_edge_weights_zero_and_one() -> None:
    exp = parse_experiment(with_changes(arms=[{"id": "a", "weight": 0},
                                              {"id": "b", "weight": 1}]), "x")
    assert exp.weights == (0.0, 1.0)


def test_aware_datetimes_of_any_offset() -> None:
    tz = timezone(timedelta(hours=-5))
    exp = parse_experiment(with_changes(start=datetime(2025, 3, 1, tzinfo=tz), end=None), "x")
    assert exp.start == datetime(2025, 3, 1, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="has no UTC offset"):
        parse_experiment(with_changes(start=datetime(2025, 3, 1)), "x")
