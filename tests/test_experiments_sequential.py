"""Sequential tests, SRM, multiple comparisons, CUPED and the power hint, each against an
independent reference: the statistics.md formulas typed again, gbstats' published numbers,
scipy.stats.chisquare, statsmodels.multipletests / power, and seeded simulations."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import zt_ind_solve_power

from experiments.history import WeightHistory, expected_units, period_weighted_means
from experiments.stats import (
    ArmStats,
    Correction,
    CupedArm,
    Difference,
    Estimate,
    Insufficient,
    Interval,
    MetricKind,
    NotEnoughData,
    PowerHint,
    SrmResult,
    adjust,
    cs_halfwidth,
    cuped_estimate,
    cuped_theta,
    estimate,
    expected_from_weights,
    interval_alpha,
    msprt_p,
    running_intersection,
    running_min_p,
    sequential_test,
    srm_check,
    visitors_needed,
)

M, B = MetricKind.MEAN, MetricKind.BINARY
REL, ABS = Difference.RELATIVE, Difference.ABSOLUTE


def close(got: float, want: float, tol: float = 1e-6) -> bool:
    return abs(got - want) <= tol * max(1.0, abs(want))


# --- sequential ------------------------------------------------------------------------

def reference_halfwidth(se: float, n: int, alpha: float, tuning: float) -> float:
    rho = np.sqrt((-2 * np.log(alpha) + np.log(-2 * np.log(alpha) + 1)) / tuning)
    return float(se * np.sqrt(n) * np.sqrt(
        2 * (n * rho**2 + 1) / (n**2 * rho**2) * np.log(np.sqrt(n * rho**2 + 1) / alpha)))


def reference_p(d: float, se: float, n: int, alpha: float, tuning: float) -> float:
    rho2 = (-2 * np.log(alpha) + np.log(-2 * np.log(alpha) + 1)) / tuning
    tau2, v = rho2 * n * se**2, se**2  # the mSPRT of statistics.md with V = se^2
    lam = np.sqrt(v / (v + tau2)) * np.exp(tau2 * d**2 / (2 * v * (v + tau2)))
    return float(min(1.0, 1.0 / lam))


@pytest.mark.parametrize(("d", "se", "n", "alpha", "tuning"), [
    (0.1, 0.05, 2000, 0.05, 5000), (0.02, 0.01, 100_000, 0.05, 5000), (-0.3, 0.1, 50, 0.1, 1000),
    (0.0, 1.0, 10, 0.05, 5000), (0.001, 2e-4, 10**9, 0.01, 1e6), (0.5, 0.2, 6461, 0.05, 6461),
])
def test_confidence_sequence_and_msprt_match_the_formulas(d: float, se: float, n: int,
                                                          alpha: float, tuning: float) -> None:
    assert close(cs_halfwidth(se, n, alpha, tuning), reference_halfwidth(se, n, alpha, tuning))
    assert close(msprt_p(d, se, n, alpha, tuning), reference_p(d, se, n, alpha, tuning))


def test_msprt_p_and_sequence_are_dual() -> None:
    for d in np.linspace(-0.5, 0.5, 41):
        for n in (20, 500, 20_000):
            p = msprt_p(float(d), 0.1, n, 0.05)
            width = cs_halfwidth(0.1, n, 0.05)
            if abs(abs(d) - width) > 1e-9:
                assert (p < 0.05) == (abs(d) > width)


def test_gbstats_published_sequential_examples() -> None:
    a = ArmStats(3000, 1396.87, 52377.9767)
    b = ArmStats(3461, 2422.7, 134698.29)
    est = estimate(a, b, M, REL)
    assert isinstance(est, Estimate)
    r = sequential_test(est, 0.05, 1000)
    assert [round(v, 5) for v in (est.point, est.se, r.ci.lo, r.ci.hi)] == [
        0.50336, 0.33341, -0.55844, 1.56516]
    prop = estimate(ArmStats.binary(3000, 1396), ArmStats.binary(3461, 2422), B, REL)
    assert isinstance(prop, Estimate)
    r = sequential_test(prop)
    assert [round(v, 5) for v in (prop.point, prop.se, r.ci.lo, r.ci.hi)] == [
        0.50386, 0.03386, 0.40098, 0.60675]


def test_sequence_is_narrowest_near_the_tuning_parameter() -> None:
    widths = {t: cs_halfwidth(1.0, 6461, 0.05, t) for t in (10, 6461, 10_000)}
    assert widths[6461] < widths[10_000] < widths[10]


def test_running_helpers() -> None:
    assert running_min_p([0.5, 0.2, 0.4, 0.01, 0.3]) == (0.5, 0.2, 0.2, 0.01, 0.01)
    got = running_intersection([Interval(-1, 2), Interval(0, 3), Interval(-2, 1),
                                Interval(1.5, 4)])
    assert got == (Interval(-1, 2), Interval(0, 2), Interval(0, 1), Interval(1.5, 1))
    assert got[-1].empty
    with pytest.raises(ValueError, match="is not a p-value"):
        running_min_p([0.5, 1.5])


def test_peeking_daily_keeps_false_positives_at_alpha() -> None:
    """A/A tests looked at 30 times: the fixed-horizon p-value 'finds' an effect far more
    often than alpha; the running minimum of the sequential p-value does not."""
    rng = np.random.default_rng(2024)
    sims, looks, per_look = 400, 30, 200
    y = rng.normal(0.0, 1.0, size=(sims, 2, looks, per_look))
    sums, squares = y.sum(axis=3).cumsum(axis=2), (y * y).sum(axis=3).cumsum(axis=2)
    fixed_hits = seq_hits = 0
    for s in range(sims):
        naive, always = False, False
        for look in range(looks):
            k = (look + 1) * per_look
            est = estimate(ArmStats(k, float(sums[s, 0, look]), float(squares[s, 0, look])),
                           ArmStats(k, float(sums[s, 1, look]), float(squares[s, 1, look])),
                           M, ABS)
            assert isinstance(est, Estimate)
            naive |= math.erfc(abs(est.point / est.se) / math.sqrt(2)) < 0.05
            always |= msprt_p(est.point, est.se, 2 * k, 0.05) < 0.05
        fixed_hits += naive
        seq_hits += always
    assert fixed_hits / sims > 0.15
    assert seq_hits / sims <= 0.06


# --- SRM ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("observed", "weights"), [
    ([5000, 5000], [0.5, 0.5]), ([5210, 4790], [0.5, 0.5]), ([100, 190, 310], [0.2, 0.3, 0.5]),
    ([1, 2], [0.5, 0.5]), ([10**9, 10**9 + 80_000], [0.5, 0.5]), ([3, 0, 9], [0.25, 0.25, 0.5]),
])
def test_srm_matches_scipy_chisquare(observed: list[int], weights: list[float]) -> None:
    expected = expected_from_weights(sum(observed), weights)
    result = srm_check(observed, expected)
    ref = sps.chisquare(observed, expected)
    assert isinstance(result, SrmResult)
    assert close(result.chi2, float(ref.statistic)) and close(result.p, float(ref.pvalue))
    assert result.df == len(observed) - 1
    assert result.alarm == (float(ref.pvalue) < 0.001)


def test_srm_with_bandit_weight_history() -> None:
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    history = (WeightHistory().record(t0, [1 / 3, 1 / 3, 1 / 3])
               .record(t0 + timedelta(minutes=15), [0.2, 0.3, 0.5])
               .record(t0 + timedelta(minutes=30), [0.05, 0.15, 0.8]))
    units = [3000, 2000, 5000]
    expected = expected_units(history, units)
    want = [sum(n * w[k] for n, w in zip(units, ([1 / 3] * 3, [0.2, 0.3, 0.5],
                                                   [0.05, 0.15, 0.8]), strict=True))
            for k in range(3)]
    assert all(close(e, w, 1e-12) for e, w in zip(expected, want, strict=True))
    observed = [1660, 2330, 6010]
    result = srm_check(observed, expected)
    ref = sps.chisquare(observed, want)
    assert isinstance(result, SrmResult) and close(result.p, float(ref.pvalue))
    # Against the final weights alone the same counts look badly mismatched.
    naive = srm_check(observed, expected_from_weights(10_000, [0.05, 0.15, 0.8]))
    assert isinstance(naive, SrmResult) and naive.alarm and not result.alarm
    assert history.weights_at(t0 + timedelta(minutes=20)) == (0.2, 0.3, 0.5)
    assert history.weights_at(t0 - timedelta(minutes=1)) is None


def test_srm_edge_cases() -> None:
    empty = srm_check([0, 0], [0.0, 0.0])
    assert isinstance(empty, NotEnoughData) and empty.reason is Insufficient.EMPTY_ARM
    impossible = srm_check([90, 10], expected_from_weights(100, [1.0, 0.0]))
    assert isinstance(impossible, SrmResult) and impossible.p == 0.0 and impossible.alarm
    lonely = srm_check([100, 0], expected_from_weights(100, [1.0, 0.0]))
    assert isinstance(lonely, NotEnoughData)
    dropped = srm_check([40, 0, 60], expected_from_weights(100, [0.5, 0.0, 0.5]))
    assert isinstance(dropped, SrmResult) and dropped.df == 1
    with pytest.raises(ValueError, match="must be for the same units"):
        srm_check([50, 50], [40.0, 40.0])


def test_weight_history_is_validated_and_immutable() -> None:
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    first = WeightHistory().record(t0, [0.5, 0.5])
    second = first.record(t0 + timedelta(hours=1), [0.4, 0.6])
    assert len(first.periods) == 1 and len(second.periods) == 2
    for at, weights, message in [(t0, [0.5, 0.5], "is not after"),
                                 (t0 + timedelta(hours=2), [0.5, 0.6], "sum to 1"),
                                 (t0 + timedelta(hours=2), [1.0], "1 weights, the history"),
                                 (datetime(2025, 4, 1), [0.5, 0.5], "no UTC offset")]:
        with pytest.raises(ValueError, match=message):
            first.record(at, weights)


def test_period_weighted_means() -> None:
    # Two periods, the rates drift; arm 1 got most units in the good period.
    periods = [[ArmStats.binary(900, 90), ArmStats.binary(100, 10)],
               [ArmStats.binary(100, 2), ArmStats.binary(900, 18)]]
    got = period_weighted_means(periods, B)
    for k in range(2):
        rates = [p[k].mean for p in periods]
        weights = [0.5, 0.5]
        want_mean = sum(w * r for w, r in zip(weights, rates, strict=True))
        want_var = sum(w * w * r * (1 - r) / p[k].n
                       for w, r, p in zip(weights, rates, periods, strict=True))
        assert close(got[k].mean, want_mean) and close(got[k].se, math.sqrt(want_var))
    pooled = [sum((p[k] for p in periods[1:]), periods[0][k]).mean for k in range(2)]
    assert pooled[0] > pooled[1] and close(got[0].mean, got[1].mean)  # Simpson undone
    short = period_weighted_means([[ArmStats(5, 5.0, 9.0), ArmStats(1, 1.0, 1.0)]], M)
    assert isinstance(short[1], NotEnoughData)


# --- multiple comparisons ----------------------------------------------------------------

P_TABLES = [[0.01, 0.04, 0.03, 0.005], [0.2], [0.001, 0.001, 0.5, 1.0, 0.0],
            [0.04, 0.04, 0.04], list(np.linspace(0.0001, 0.2, 17))]


@pytest.mark.parametrize("ps", P_TABLES)
@pytest.mark.parametrize(("method", "name"), [(Correction.HOLM, "holm"),
                                              (Correction.BH, "fdr_bh")])
def test_adjusted_p_values_match_statsmodels(ps: list[float], method: Correction,
                                             name: str) -> None:
    got = adjust(ps, method)
    want = multipletests(ps, alpha=0.05, method=name)[1]
    assert all(close(g, float(w), 1e-12) for g, w in zip(got, want, strict=True))
    assert adjust(ps, Correction.NONE) == tuple(ps)


def test_interval_alpha() -> None:
    holm = adjust([0.01, 0.2, 0.03, 0.5], Correction.HOLM)
    assert interval_alpha(Correction.HOLM, 0.05, holm) == 0.05 / 4
    bh = adjust([0.001, 0.002, 0.3, 0.5], Correction.BH)
    assert interval_alpha(Correction.BH, 0.05, bh) == 0.05 * 2 / 4
    assert interval_alpha(Correction.BH, 0.05, (0.9, 0.8)) == 0.05 / 2
    assert interval_alpha(Correction.NONE, 0.05, holm) == 0.05


# --- CUPED ------------------------------------------------------------------------------

def cuped_data(seed: int, n: int, lift: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 2.0, n)
    return x, 1.0 + 0.8 * x + lift + rng.normal(0, 1.0, n)


def cuped_arm(x: np.ndarray, y: np.ndarray) -> CupedArm:
    return CupedArm(ArmStats(len(y), float(y.sum()), float(y @ y)),
                    ArmStats(len(x), float(x.sum()), float(x @ x)), float(x @ y))


def test_cuped_matches_welch_on_adjusted_values() -> None:
    (xa, ya), (xb, yb) = cuped_data(1, 3000, 0.0), cuped_data(2, 3200, 0.1)
    a, b = cuped_arm(xa, ya), cuped_arm(xb, yb)
    theta = cuped_theta([a, b])
    x, y = np.concatenate([xa, xb]), np.concatenate([ya, yb])
    assert isinstance(theta, float) and close(theta, float(np.cov(x, y)[0, 1] / x.var(ddof=1)))
    est = cuped_estimate(a, b, theta, ABS)
    ref = sps.ttest_ind(yb - theta * xb, ya - theta * xa, equal_var=False)
    assert isinstance(est, Estimate)
    assert close(est.point / est.se, float(ref.statistic)) and close(est.df, float(ref.df))
    plain = estimate(a.y, b.y, M, ABS)
    assert isinstance(plain, Estimate) and est.se < 0.6 * plain.se


def test_cuped_relative_effect_uses_unadjusted_control_mean() -> None:
    (xa, ya), (xb, yb) = cuped_data(3, 2000, 0.0), cuped_data(4, 2100, 0.2)
    a, b = cuped_arm(xa, ya), cuped_arm(xb, yb)
    theta = cuped_theta([a, b])
    assert isinstance(theta, float)
    est = cuped_estimate(a, b, theta, REL)
    adj_a, adj_b, mu = (ya - theta * xa).mean(), (yb - theta * xb).mean(), ya.mean()
    # Delta method on (a_B, a_A, mu) with the covariance estimated from the raw values.
    cov_a = np.cov(np.vstack([ya - theta * xa, ya])) / len(ya)
    var_b = (yb - theta * xb).var(ddof=1) / len(yb)
    g_a, g_mu = -1 / mu, -(adj_b - adj_a) / mu**2
    var = var_b / mu**2 + g_a**2 * cov_a[0, 0] + g_mu**2 * cov_a[1, 1] \
        + 2 * g_a * g_mu * cov_a[0, 1]
    assert isinstance(est, Estimate)
    assert close(est.point, (adj_b - adj_a) / mu) and close(est.se, math.sqrt(var))
    zero = cuped_estimate(a, b, 0.0, REL)
    plain = estimate(a.y, b.y, M, REL)
    assert isinstance(zero, Estimate) and isinstance(plain, Estimate)
    assert close(zero.point, plain.point, 1e-12) and close(zero.se, plain.se, 1e-9)


def test_cuped_degenerate_covariate() -> None:
    flat = CupedArm(ArmStats(10, 30.0, 100.0), ArmStats(10, 10.0, 10.0), 30.0)
    theta = cuped_theta([flat, flat])
    assert isinstance(theta, NotEnoughData) and theta.reason is Insufficient.ZERO_VARIANCE
    with pytest.raises(ValueError, match="y has n = 10 but x has n = 9"):
        CupedArm(ArmStats(10, 30.0, 100.0), ArmStats(9, 9.0, 9.0), 30.0)


# --- power hint ---------------------------------------------------------------------------

def test_power_hint_matches_statsmodels_for_a_mean_metric() -> None:
    control = ArmStats(4000, 4000 * 2.0, 4000 * (2.0**2 + 9.0))  # mean 2, variance ~9
    hint = visitors_needed(control, M, current_total=8000, mde=0.05)
    sd = math.sqrt(control.variance(M))
    per_arm = zt_ind_solve_power(effect_size=0.05 * 2.0 / sd, alpha=0.05, power=0.8)
    assert isinstance(hint, PowerHint)
    assert hint.total_needed == pytest.approx(2 * per_arm, rel=1e-3)
    assert hint.still_needed == hint.total_needed - 8000


def test_power_hint_binary_formula_and_degenerate_cases() -> None:
    control = ArmStats.binary(10_000, 500)
    hint = visitors_needed(control, B, current_total=20_000, mde=0.1, shares=(0.25, 0.25))
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    want = z**2 * (0.05 * 0.95 / 0.25 + 0.055 * 0.945 / 0.25) / 0.005**2
    assert isinstance(hint, PowerHint) and hint.total_needed == math.ceil(want)
    none = visitors_needed(ArmStats.binary(1000, 0), B, 2000)
    assert isinstance(none, NotEnoughData) and none.reason is Insufficient.NO_CONVERSIONS
    too_big = visitors_needed(ArmStats.binary(100, 90), B, 200, mde=0.5)
    assert isinstance(too_big, NotEnoughData)
    done = visitors_needed(control, B, current_total=10**9, mde=0.1)
    assert isinstance(done, PowerHint) and done.still_needed == 0
