"""summarise(): decisions in words, the SRM and multiple-comparison wiring, JSON without NaN
for every degenerate case, CSV rows, and loud errors for counts that do not fit."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as scipy_stats

from experiments.history import WeightHistory
from experiments.model import parse_experiment
from experiments.report import CSV_CUPED_HEADER, CSV_HEADER, DecisionKind
from experiments.results import Covariate, SummaryOptions, summarise
from experiments.stats import (
    ArmStats,
    Correction,
    Difference,
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


# -- CUPED -------------------------------------------------------------------------------------

def units(seed: int = 7, arms: tuple[tuple[str, int, float], ...] = (
        ("control", 4000, 0.0), ("B", 4100, 0.08), ("C", 3900, 0.02))
          ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per-visitor data: x previous visits, a conversion and a revenue that grow with x."""
    rng = np.random.default_rng(seed)
    out = {}
    for arm, n, lift in arms:
        x = np.where(rng.random(n) < 0.45, rng.geometric(0.3, n), 0).astype(float)
        propensity = 0.25 + np.minimum(x, 6.0)
        converted = (rng.random(n) < 0.05 * propensity * (1 + lift)).astype(float)
        revenue = converted * rng.lognormal(3.6, 0.5, n) * (1 + 0.1 * x)
        out[arm] = (x, converted, revenue)
    return out


def sums(data: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
         ) -> tuple[dict[str, dict[str, ArmStats]], dict[str, Covariate]]:
    counts, covariates = {}, {}
    for arm, (x, conv_y, rev_y) in data.items():
        counts[arm] = {"checkout": ArmStats(len(x), float(conv_y.sum()), float(conv_y.sum())),
                       "revenue": ArmStats(len(x), float(rev_y.sum()),
                                           float((rev_y**2).sum()))}
        covariates[arm] = Covariate(ArmStats(len(x), float(x.sum()), float((x * x).sum())),
                                    {"checkout": float((x * conv_y).sum()),
                                     "revenue": float((x * rev_y).sum())})
    return counts, covariates


def ols_theta(data: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], goal: int) -> float:
    """theta as the slope of the OLS regression of y on x (with an intercept), all arms."""
    x = np.concatenate([d[0] for d in data.values()])
    y = np.concatenate([d[goal] for d in data.values()])
    return float(sm.OLS(y, sm.add_constant(x)).fit().params[1])


def delta_relative(z_b: np.ndarray, z_a: np.ndarray, y_a: np.ndarray) -> tuple[float, float]:
    """(z̄_B - z̄_A) / ȳ_A and its delta-method standard error, from per-unit values: the
    gradient (1/mu, -1/mu, -d/mu^2) through the covariance of (z̄_B, z̄_A, ȳ_A)."""
    mu, d = y_a.mean(), z_b.mean() - z_a.mean()
    sigma = np.zeros((3, 3))
    sigma[0, 0] = z_b.var(ddof=1) / len(z_b)
    sigma[1:, 1:] = np.cov(np.vstack([z_a, y_a]), ddof=1) / len(z_a)
    grad = np.array([1 / mu, -1 / mu, -d / mu**2])
    return d / mu, float(np.sqrt(grad @ sigma @ grad))


@pytest.mark.parametrize("difference", [Difference.RELATIVE, Difference.ABSOLUTE])
def test_cuped_agrees_with_an_independent_computation_on_unit_data(
        difference: Difference) -> None:
    data = units()
    counts, covariates = sums(data)
    exp = make(("control", "B", "C"), (0.34, 0.33, 0.33), revenue=True)
    options = SummaryOptions(difference=difference)
    result = summarise(exp, counts, NONE, options, covariates=covariates)
    plain = summarise(exp, counts, NONE, options)
    for c, p in zip(result.comparisons, plain.comparisons, strict=True):
        goal = 1 if c.goal == "checkout" else 2
        theta = ols_theta(data, goal)
        assert c.cuped is not None and c.cuped.theta == pytest.approx(theta, rel=1e-6)
        assert c.cuped.unadjusted == p.outcome and c.cuped.coverage == 1.0
        (x_a, *ys_a), (x_b, *ys_b) = data["control"], data[c.arm]
        y_a, y_b = ys_a[goal - 1], ys_b[goal - 1]
        z_a, z_b = y_a - theta * x_a, y_b - theta * x_b
        assert isinstance(c.outcome, Estimate)
        if difference is Difference.ABSOLUTE:
            point = z_b.mean() - z_a.mean()
            se = np.sqrt(z_b.var(ddof=1) / len(z_b) + z_a.var(ddof=1) / len(z_a))
            baseline = np.sqrt(y_b.var(ddof=1) / len(y_b) + y_a.var(ddof=1) / len(y_a))
            # Welch's t-test on the adjusted values (theta taken as known) is the fixed test
            welch = scipy_stats.ttest_ind(z_b, z_a, equal_var=False)
            assert c.fixed is not None and c.fixed.p == pytest.approx(welch.pvalue, abs=1e-9)
        else:
            point, se = delta_relative(z_b, z_a, y_a)
            _, baseline = delta_relative(y_b, y_a, y_a)
        assert c.outcome.point == pytest.approx(point, rel=1e-6, abs=1e-9)
        assert c.outcome.se == pytest.approx(se, rel=1e-6)
        assert c.cuped.variance_reduction == pytest.approx(1 - se**2 / baseline**2, abs=1e-6)
        assert c.cuped.variance_reduction > 0.02   # x is informative in this data
        assert c.outcome.se < p.outcome.se * 1.0001  # type: ignore[union-attr]
        # the tests, the intervals and the decision all read the adjusted estimate
        assert c.sequential is not None and c.sequential.estimate == c.outcome


def test_without_covariates_or_with_cuped_off_the_results_are_unchanged() -> None:
    data = units(seed=3)
    counts, covariates = sums(data)
    exp = make(("control", "B", "C"), (0.34, 0.33, 0.33), revenue=True)
    plain = summarise(exp, counts, NONE)
    assert all(c.cuped is None for c in plain.comparisons)
    off = summarise(exp, counts, NONE, SummaryOptions(cuped=False), covariates=covariates)
    assert off.comparisons == plain.comparisons and off.decision == plain.decision
    # x the same for every unit: nothing to adjust with
    flat = {arm: Covariate(ArmStats(c.x.n, 2.0 * c.x.n, 4.0 * c.x.n),
                           {g: 2.0 * counts[arm][g].sum for g in c.sum_xy})
            for arm, c in covariates.items()}
    assert summarise(exp, counts, NONE, covariates=flat).comparisons == plain.comparisons
    # an arm without any recorded covariate (old data): no CUPED for any comparison
    partial = dict(covariates, C=Covariate(ArmStats(covariates["C"].x.n), {}, known=0))
    assert summarise(exp, counts, NONE, covariates=partial).comparisons == plain.comparisons
    rows = plain.csv_rows()
    assert rows[0] == CSV_HEADER
    assert all(c["cuped"] is None for c in plain.to_json_dict()["comparisons"])


def test_cuped_is_labelled_in_the_decision_json_and_csv() -> None:
    data = units(seed=11, arms=(("control", 20_000, 0.0), ("B", 20_000, 0.25)))
    counts, covariates = sums(data)
    result = summarise(make(revenue=True), counts, NONE, covariates=covariates)
    primary = result.comparisons[0]
    assert primary.cuped is not None and result.decision.kind is DecisionKind.SHIP
    assert re.fullmatch(
        r"B beats control on checkout: \+\d+\.\d% \(97\.5% CI \+\d+\.\d% to \+\d+\.\d%\), "
        r"sequential p [<=] 0\.\d+ \(holm over 2 comparisons\); CUPED: variance -\d+%, "
        r"unadjusted \+\d+\.\d%", result.decision.text), result.decision.text
    assert f"variance {-primary.cuped.variance_reduction * 100:+.0f}%" in result.decision.text
    data_json = json.loads(json.dumps(result.to_json_dict(), allow_nan=False))
    cuped = data_json["comparisons"][0]["cuped"]
    assert set(cuped) == {"theta", "variance_reduction", "unadjusted", "coverage"}
    assert cuped["unadjusted"]["point"] == primary.cuped.unadjusted.point
    assert data_json["options"]["cuped"] is True
    rows = result.csv_rows()
    assert rows[0] == CSV_HEADER + CSV_CUPED_HEADER
    b = dict(zip(rows[0], rows[2], strict=True))
    assert float(b["cuped_variance_reduction"]) == pytest.approx(
        primary.cuped.variance_reduction)
    assert float(b["effect_unadjusted"]) == pytest.approx(primary.cuped.unadjusted.point)
    assert dict(zip(rows[0], rows[1], strict=True))["cuped_theta"] == ""   # the control


def test_covariates_that_do_not_fit_raise() -> None:
    counts, covariates = sums(units(seed=5, arms=(("control", 50, 0.0), ("B", 60, 0.0))))
    exp = make(revenue=True)
    wrong_n = dict(covariates, B=Covariate(ArmStats(59, 1.0, 1.0), {}))
    with pytest.raises(ValueError, match="arm 'B' has 60 units but its covariate has n = 59"):
        summarise(exp, counts, NONE, covariates=wrong_n)
    with pytest.raises(ValueError, match="covariate for unknown arm 'C'"):
        summarise(exp, counts, NONE, covariates=dict(covariates, C=covariates["B"]))
    with pytest.raises(ValueError, match="unknown goal 'signup'"):
        summarise(exp, counts, NONE, covariates=dict(covariates, B=Covariate(
            covariates["B"].x, {"signup": 1.0})))
