"""Assignment: the checked-in vectors, uniformity, stickiness, layers, holdout, order of
checks. The vectors file is read on its own terms (this test does not import the script
that wrote it), so another implementation can be checked against it the same way."""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from scipy import stats

import experiments.assignment as assignment_module
import experiments.model as model_module
from experiments.assignment import (
    Assignment,
    NotAssigned,
    NotAssignedReason,
    StoredAssignment,
    VisitorFacts,
    assign,
    bucket,
    choose_arm,
    plan_layers,
)
from experiments.model import parse_experiment

VECTORS = json.loads(Path(__file__).with_name("data").joinpath(
    "assignment_vectors.json").read_text(encoding="utf-8"))
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HUMAN = VisitorFacts(in_audience=True, is_bot=False, opted_out=False, consented=True)


def table(exp_id: str, weights: list[float], **extra: object) -> dict:
    return {"id": exp_id, "arms": [{"id": f"arm{k}", "weight": w} for k, w in enumerate(weights)],
            "goals": [{"id": "buy", "kind": "page", "url": "/thanks", "primary": True}],
            **extra}


def experiment(exp_id: str = "hero", weights: tuple[float, ...] = (0.5, 0.5), **extra: object):
    return parse_experiment(table(exp_id, list(weights), **extra), "test")


def ids(count: int, prefix: str = "visitor") -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


# --- the vectors ------------------------------------------------------------------------

def test_vector_file_is_big_enough() -> None:
    assert len(VECTORS["bucket"]) >= 200 and len(VECTORS["assign"]) >= 500
    visitors = {case["visitor"] for case in VECTORS["assign"]}
    assert any(not v.isascii() for v in visitors)
    reasons = {case["expected"].get("reason") for case in VECTORS["assign"]}
    assert set(NotAssignedReason) - {"not_in_audience"} <= reasons | {"not_in_audience"}
    assert len(reasons - {None}) >= 8


def test_bucket_vectors_match_the_documented_formula_and_the_code() -> None:
    for case in VECTORS["bucket"]:
        data = f"{case['namespace']}:{case['visitor']}".encode()
        spec = (int.from_bytes(hashlib.sha256(data).digest()[:8], "big") >> 11) / 2**53
        assert spec == case["bucket"], case
        assert bucket(case["namespace"], case["visitor"]) == case["bucket"], case


def test_choose_arm_vectors() -> None:
    for case in VECTORS["choose_arm"]:
        assert choose_arm(case["weights"], case["position"]) == case["arm"], case


def test_assign_vectors() -> None:
    facts = {name: VisitorFacts(**f) for name, f in VECTORS["facts"].items()}
    scenarios = VECTORS["scenarios"]
    parsed = {name: (parse_experiment(s["table"], name),
                     plan_layers(parse_experiment(t, name) for t in s.get("layer_peers", [])))
              for name, s in scenarios.items()}
    for case in VECTORS["assign"]:
        s = scenarios[case["scenario"]]
        exp, slots = parsed[case["scenario"]]
        result = assign(exp, case["visitor"], facts=facts[s["facts"]],
                        now=datetime.fromisoformat(s["now"]),
                        stored=StoredAssignment(**s["stored"]) if s.get("stored") else None,
                        weights=s.get("weights"), slot=slots.get(exp.id), holdout=s["holdout"])
        if "reason" in case["expected"]:
            assert result == NotAssigned(exp.id, NotAssignedReason(case["expected"]["reason"]))
        else:
            assert isinstance(result, Assignment), case
            got = {"arm": result.arm, "probability": result.probability,
                   "sticky": result.sticky}
            assert got == case["expected"], case


# --- the hash ---------------------------------------------------------------------------

def uniformity_p(positions: list[float], bins: int = 100) -> float:
    counts = Counter(min(int(p * bins), bins - 1) for p in positions)
    return float(stats.chisquare([counts[b] for b in range(bins)]).pvalue)


def test_buckets_are_uniform_on_100k_ids() -> None:
    visitors = ids(100_000)
    positions = [bucket("arm/hero", v) for v in visitors]
    assert all(0.0 <= p < 1.0 for p in positions)
    assert uniformity_p(positions) > 0.001
    # The check has teeth: a slightly skewed hash fails it.
    assert uniformity_p([p ** 1.05 for p in positions]) < 1e-6


def test_namespaces_are_independent() -> None:
    visitors = ids(20_000)
    arm = [bucket("arm/hero", v) < 0.5 for v in visitors]
    traffic = [bucket("traffic/hero", v) < 0.5 for v in visitors]
    table2 = Counter(zip(arm, traffic, strict=True))
    chi2 = stats.chi2_contingency([[table2[(True, True)], table2[(True, False)]],
                                   [table2[(False, True)], table2[(False, False)]]])
    assert chi2.pvalue > 0.001


def test_assignment_path_has_no_randomness_and_no_proxy() -> None:
    for module in (assignment_module, model_module):
        tree = ast.parse(inspect.getsource(module))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.Import | ast.ImportFrom)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & {"random", "numpy", "scipy", "proxy", "secrets", "time"}


# --- stickiness, traffic, salt ----------------------------------------------------------

def arms_of(exp, visitors, **kwargs) -> dict[str, str | NotAssignedReason]:
    out = {}
    for v in visitors:
        r = assign(exp, v, facts=HUMAN, now=NOW, **kwargs)
        out[v] = r.arm if isinstance(r, Assignment) else r.reason
    return out


def test_raising_traffic_keeps_everyone_in_on_the_same_arm() -> None:
    visitors = ids(4000)
    low = arms_of(experiment(traffic=0.2), visitors)
    high = arms_of(experiment(traffic=0.8), visitors)
    inside = [v for v in visitors if not isinstance(low[v], NotAssignedReason)]
    assert 600 < len(inside) < 1000
    assert all(high[v] == low[v] for v in inside)
    assert 2900 < sum(not isinstance(a, NotAssignedReason) for a in high.values()) < 3500


def test_stored_arm_wins_over_changed_weights() -> None:
    visitors = ids(2000)
    before = experiment(weights=(0.5, 0.5))
    after = experiment(weights=(0.9, 0.1))
    first = {v: assign(before, v, facts=HUMAN, now=NOW) for v in visitors}
    moved_without = sum(assign(after, v, facts=HUMAN, now=NOW).arm != first[v].arm
                        for v in visitors)
    assert moved_without > 500  # the hash alone would move ~40% of visitors
    for v in visitors:
        again = assign(after, v, facts=HUMAN, now=NOW, stored=first[v].stored())
        assert isinstance(again, Assignment) and again.sticky
        assert (again.arm, again.probability) == (first[v].arm, 0.5)


def test_salt_change_reshuffles_on_purpose() -> None:
    visitors = ids(2000)
    old = experiment(salt="hero.v1")
    new = experiment(salt="hero.v2")
    first = {v: assign(old, v, facts=HUMAN, now=NOW) for v in visitors}
    second = {v: assign(new, v, facts=HUMAN, now=NOW, stored=first[v].stored())
              for v in visitors}
    assert not any(r.sticky for r in second.values())
    changed = sum(second[v].arm != first[v].arm for v in visitors)
    assert 850 < changed < 1150  # independent hashes: about half change


def test_stored_arm_that_no_longer_exists_is_replaced() -> None:
    exp = experiment()
    result = assign(exp, "v1", facts=HUMAN, now=NOW, stored=StoredAssignment("gone", "hero", 1))
    assert isinstance(result, Assignment) and not result.sticky and result.arm != "gone"


def test_bandit_weights_in_force_are_used_and_logged() -> None:
    exp = experiment(allocation="bandit")
    counts = Counter(assign(exp, v, facts=HUMAN, now=NOW, weights=(0.1, 0.9)).arm
                     for v in ids(5000))
    assert 350 < counts["arm0"] < 650
    result = assign(exp, "v1", facts=HUMAN, now=NOW, weights=(0.1, 0.9))
    assert result.probability == (0.1 if result.arm == "arm0" else 0.9)


@pytest.mark.parametrize(("weights", "message"), [
    ((0.5, 0.4), "sum to 0.9"), ((0.5,), "1 weights for 2 arms"), ((1.5, -0.5), "outside 0..1"),
])
def test_bad_weights_in_force_raise(weights: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        assign(experiment(), "v1", facts=HUMAN, now=NOW, weights=weights)


# --- layers and holdout -----------------------------------------------------------------

def test_layer_experiments_are_mutually_exclusive_and_split_by_traffic() -> None:
    start = NOW - timedelta(days=3)
    layer = [experiment("la", traffic=0.2, layer="hp", start=start.isoformat()),
             experiment("lb", traffic=0.3, layer="hp"),
             experiment("lc", traffic=0.4, layer="hp", start=NOW.isoformat())]
    slots = plan_layers(layer)
    bounds = [bound for e in layer for bound in (slots[e.id].start, slots[e.id].end)]
    assert bounds == pytest.approx([0.3, 0.5, 0.0, 0.3, 0.5, 0.9])
    visitors = ids(20_000)
    entered: Counter[str] = Counter()
    for v in visitors:
        results = [assign(e, v, facts=HUMAN, now=NOW, slot=slots[e.id]) for e in layer]
        inside = [r.experiment for r in results if isinstance(r, Assignment)]
        assert len(inside) <= 1
        entered.update(inside)
        if not inside:
            assert all(r.reason is NotAssignedReason.OUTSIDE_TRAFFIC for r in results)
        else:
            assert all(r.reason is NotAssignedReason.OTHER_EXPERIMENT_IN_LAYER
                       for r in results if isinstance(r, NotAssigned))
    for e in layer:
        assert entered[e.id] / len(visitors) == pytest.approx(e.traffic, abs=0.015)


def test_layer_over_full_and_missing_slot_raise() -> None:
    with pytest.raises(ValueError, match=r"layer 'hp': traffic shares add up to 1.2 \(a=0.6"):
        plan_layers([experiment("a", traffic=0.6, layer="hp"),
                     experiment("b", traffic=0.6, layer="hp")])
    with pytest.raises(ValueError, match="pass its slot from plan_layers"):
        assign(experiment("a", layer="hp"), "v1", facts=HUMAN, now=NOW)


def test_holdout_is_the_same_slice_for_every_experiment() -> None:
    visitors = ids(10_000)
    held = {exp.id: {v for v in visitors
                     if assign(exp, v, facts=HUMAN, now=NOW, holdout=0.05)
                     == NotAssigned(exp.id, NotAssignedReason.HOLDOUT)}
            for exp in (experiment("a"), experiment("b", salt="other"))}
    assert held["a"] == held["b"]
    assert 400 < len(held["a"]) < 600


# --- order of checks --------------------------------------------------------------------

@pytest.mark.parametrize(("facts", "when", "holdout", "expected"), [
    (VisitorFacts(False, True, True, False), NOW - timedelta(days=1), 1.0, "not_started"),
    (VisitorFacts(False, True, True, False), NOW + timedelta(days=40), 1.0, "ended"),
    (VisitorFacts(False, True, True, False), NOW, 1.0, "opted_out"),
    (VisitorFacts(False, True, False, False), NOW, 1.0, "no_consent"),
    (VisitorFacts(False, True, False, True), NOW, 1.0, "bot"),
    (VisitorFacts(False, False, False, True), NOW, 1.0, "holdout"),
    (VisitorFacts(False, False, False, True), NOW, 0.0, "not_in_audience"),
])
def test_order_of_checks(facts: VisitorFacts, when: datetime, holdout: float,
                         expected: str) -> None:
    exp = experiment(start=NOW.isoformat(), end=(NOW + timedelta(days=30)).isoformat(),
                     traffic=0.0)
    result = assign(exp, "v1", facts=facts, now=when, holdout=holdout)
    assert result == NotAssigned("hero", NotAssignedReason(expected))


def test_start_is_inclusive_and_end_exclusive() -> None:
    exp = experiment(start=NOW.isoformat(), end=(NOW + timedelta(hours=1)).isoformat())
    assert isinstance(assign(exp, "v1", facts=HUMAN, now=NOW), Assignment)
    ended = assign(exp, "v1", facts=HUMAN, now=NOW + timedelta(hours=1))
    assert ended == NotAssigned("hero", NotAssignedReason.ENDED)


def test_bad_call_arguments_raise() -> None:
    with pytest.raises(ValueError, match="visitor id is empty"):
        assign(experiment(), "", facts=HUMAN, now=NOW)
    with pytest.raises(ValueError, match="has no UTC offset"):
        assign(experiment(), "v1", facts=HUMAN, now=datetime(2025, 3, 1))
    with pytest.raises(ValueError, match=r"holdout 1.5 is outside 0\.\.1"):
        assign(experiment(), "v1", facts=HUMAN, now=NOW, holdout=1.5)
    with pytest.raises(ValueError, match="every weight is 0"):
        choose_arm([0.0, 0.0], 0.3)
