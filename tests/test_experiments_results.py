"""summarise(): decisions in words, the SRM and multiple-comparison wiring, JSON without NaN
for every degenerate case, CSV rows, and loud errors for counts that do not fit."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from experiments.history import WeightHistory
from experiments.model import parse_experiment
from experiments.report import CSV_HEADER, DecisionKind
from experiments.results import SummaryOptions, summarise
from experiments.stats import (
    ArmStats,
    Correction,
    Estimate,
    Insufficient,
    NotEnoughData,
    SrmResult,
    holm,
    sequential_test,
)

NONE = WeightHistory()


def make(arms: tuple[str, ...] = ("control", "B"), weights: tuple[float, ...] = (0.5, 0.5),
         revenue: bool = False, allocation: str = "fixed"):
    goals = [{"id": "checkout", "kind": "page", "url": "/checkout/done", "primary": True}]
    if revenue:
        goals.append({"id": "revenue", "kind": "revenue", "event": "purchase"})
    return parse_experiment({"id": "hero", "allocation": allocation, "goals": goals,
                             "arms": [{"id": a, "weight": w}
                                      for a, w in zip(arms, weights, strict=True)]}, "test")


def conv(n: int, c: int) -> dict[str, ArmStats]:
    return {"checkout": ArmStats.binary(n, c)}


def test_winner_sentence_matches_the_numbers() -> None:
    exp = make()
    result = summarise(exp, {"control": conv(20_000, 1000), "B": conv(20_000, 1250)}, NONE)
    assert result.decision.kind is DecisionKind.SHIP and result.decision.arm == "B"
    (comparison,) = result.comparisons
    assert isinstance(comparison.outcome, Estimate)
    seq = sequential_test(comparison.outcome)
    assert comparison.ci_adjusted == seq.ci and comparison.p_adjusted == seq.p
    want = (f"B beats control on checkout: {seq.estimate.point * 100:+.1f}% (95% CI "
            f"{seq.ci.lo * 100:+.1f}% to {seq.ci.hi * 100:+.1f}%), sequential p < 0.001")
    assert result.decision.text == want
    assert re.fullmatch(r"B beats control on checkout: \+25\.0% \(95% CI \+\d+\.\d% to "
                        r"\+\d+\.\d%\), sequential p < 0\.001", result.decision.text)


def test_fixed_horizon_option_and_p_formatting() -> None:
    options = SummaryOptions(sequential=False, correction=Correction.NONE)
    result = summarise(make(), {"control": conv(5000, 250), "B": conv(5000, 300)}, NONE, options)
    (c,) = result.comparisons
    assert c.sequential is None and c.fixed is not None and c.p == c.fixed.p
    assert result.decision.kind is DecisionKind.SHIP
    assert result.decision.text.endswith(f"p = {c.fixed.p:.3f}")
    assert "sequential" not in result.decision.text


def test_keep_collecting_with_power_hint() -> None:
    result = summarise(make(), {"control": conv(2000, 100), "B": conv(2000, 108)}, NONE)
    assert result.decision.kind is DecisionKind.KEEP_COLLECTING
    assert result.decision.text.startswith(
        "keep collecting: no arm differs from control on checkout yet (leader B +8.0%")
    assert f"about {result.power.still_needed:,} more visitors to detect +5%" \
        in result.decision.text


def test_worse_arm_is_reported() -> None:
    result = summarise(make(), {"control": conv(20_000, 1250), "B": conv(20_000, 1000)}, NONE)
    assert result.decision.kind is DecisionKind.WORSE
    assert result.decision.text.startswith("B is worse than control on checkout: -20.0%")


def test_sample_ratio_mismatch_overrides_everything() -> None:
    result = summarise(make(), {"control": conv(20_000, 1000), "B": conv(21_000, 1300)}, NONE)
    assert isinstance(result.srm, SrmResult) and result.srm.alarm
    assert result.decision.kind is DecisionKind.SAMPLE_RATIO_MISMATCH
    assert result.decision.text.startswith("sample ratio mismatch: do not trust")
    assert "units 20,000 / 21,000, expected 20,500 / 20,500" in result.decision.text


def test_holm_over_arms_and_goals() -> None:
    exp = make(("control", "B", "C"), (0.34, 0.33, 0.33), revenue=True)
    counts = {a: {"checkout": ArmStats.binary(6000, c),
                  "revenue": ArmStats(6000, 6000 * m, 6000 * (m * m + 400.0))}
              for a, c, m in (("control", 300, 2.0), ("B", 360, 2.3), ("C", 310, 2.1))}
    result = summarise(exp, counts, NONE)
    assert len(result.comparisons) == 4
    raw = [c.p for c in result.comparisons]
    assert [c.p_adjusted for c in result.comparisons] == list(holm(raw))
    assert all(c.ci_alpha == 0.05 / 4 for c in result.comparisons)
    assert len(result.arms) == 6 and all(a.p_best is not None for a in result.arms)


def test_bandit_srm_uses_the_weight_history() -> None:
    exp = make(allocation="bandit")
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    history = WeightHistory().record(t0, [0.5, 0.5]).record(t0 + timedelta(hours=1), [0.2, 0.8])
    counts = {"control": conv(1000 + 600, 80), "B": conv(1000 + 2400, 200)}
    unknown = summarise(exp, counts, history)
    assert isinstance(unknown.srm, NotEnoughData)
    assert unknown.srm.reason is Insufficient.NOT_COMPUTED
    known = summarise(exp, counts, history, units_by_period=[2000, 3000])
    assert isinstance(known.srm, SrmResult) and known.srm.expected == (1600.0, 3400.0)
    assert not known.srm.alarm
    planned = summarise(exp, counts, NONE)  # against 50/50 the same counts are a mismatch
    assert isinstance(planned.srm, SrmResult) and planned.srm.alarm


DEGENERATE = {
    "zero conversions": {"control": conv(500, 0), "B": conv(500, 0)},
    "control zero": {"control": conv(500, 0), "B": conv(500, 9)},
    "all converted": {"control": conv(80, 80), "B": conv(90, 90)},
    "one arm empty": {"control": conv(500, 20)},
    "nothing at all": {},
    "n = 1": {"control": conv(1, 1), "B": conv(1, 0)},
    "huge counts": {"control": conv(10**9, 5 * 10**7), "B": conv(10**9, 50_030_000)},
}


@pytest.mark.parametrize("name", DEGENERATE)
def test_degenerate_counts_give_named_results_and_clean_json(name: str) -> None:
    counts = {arm: dict(goals, revenue=ArmStats(goals["checkout"].n))
              for arm, goals in DEGENERATE[name].items()}
    result = summarise(make(revenue=True), counts, NONE)
    text = json.dumps(result.to_json_dict(), allow_nan=False)
    assert "NaN" not in text and "Infinity" not in text
    assert result.decision.text and result.decision.kind in DecisionKind
    primary = result.comparisons[0]
    if name in ("zero conversions", "all converted", "one arm empty", "nothing at all",
                "n = 1", "control zero"):
        assert isinstance(primary.outcome, NotEnoughData)
        assert result.decision.kind in (DecisionKind.NOT_ENOUGH_DATA,
                                        DecisionKind.SAMPLE_RATIO_MISMATCH)
    rows = result.csv_rows()
    assert rows[0] == CSV_HEADER and len(rows) == 1 + 2 * 2
    if name in ("one arm empty", "nothing at all"):
        assert all(a.p_best is None for a in result.arms)


def test_json_and_csv_shapes() -> None:
    result = summarise(make(revenue=True), {
        "control": {"checkout": ArmStats.binary(3000, 150), "revenue": ArmStats(3000, 7500.0,
                                                                                 250_000.0)},
        "B": {"checkout": ArmStats.binary(3000, 180), "revenue": ArmStats(3000, 8100.0,
                                                                           260_000.0)}}, NONE)
    data = json.loads(json.dumps(result.to_json_dict(), allow_nan=False))
    assert data["decision"]["kind"] in {k.value for k in DecisionKind}
    assert data["options"]["correction"] == "holm"
    first = data["comparisons"][0]
    assert first["outcome"]["difference"] == "relative" and "estimate" not in first["fixed"]
    assert first["p"] == first["sequential"]["p"] and data["srm"]["alarm"] is False
    out = io.StringIO()
    csv.writer(out).writerows(result.csv_rows())
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["arm"], r["goal"], r["status"]) for r in parsed] == [
        ("control", "checkout", "control"), ("B", "checkout", "ok"),
        ("control", "revenue", "control"), ("B", "revenue", "ok")]
    assert float(parsed[1]["effect"]) == pytest.approx(0.2)


def test_counts_that_do_not_fit_raise() -> None:
    exp = make()
    with pytest.raises(ValueError, match="counts for unknown arm 'C'; arms are B, control"):
        summarise(exp, {"C": conv(10, 1)}, NONE)
    with pytest.raises(ValueError, match="unknown goal 'signup' on arm 'B'"):
        summarise(exp, {"B": {"signup": ArmStats.binary(10, 1)}}, NONE)
    with pytest.raises(ValueError, match=r"different unit counts per goal \[10, 11\]"):
        summarise(make(revenue=True), {"B": {"checkout": ArmStats.binary(10, 1),
                                             "revenue": ArmStats(11)}}, NONE)
    history = WeightHistory().record(datetime(2025, 3, 1, tzinfo=UTC), [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="do not have 2 weights"):
        summarise(exp, {}, history)


def test_inputs_are_not_changed() -> None:
    counts = {"control": conv(100, 10)}
    summarise(make(), counts, NONE)
    assert counts == {"control": conv(100, 10)}
