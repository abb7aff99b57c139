"""Statistics against INDEPENDENT references computed here, at test time: scipy.stats
(ttest_ind_from_stats / ttest_ind for Welch, chisquare for SRM, quad for integrals),
statsmodels (multipletests, power), the formulas of statistics.md written out again, and
gbstats' own published test numbers (packages/stats/tests/frequentist/test_tests.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from experiments.stats import (
    Alternative,
    ArmStats,
    Difference,
    Estimate,
    GaussianPrior,
    Insufficient,
    Interval,
    MetricKind,
    NotEnoughData,
    estimate,
    gaussian_effect,
    t_test,
)

TOL = 1e-6
B, M = MetricKind.BINARY, MetricKind.MEAN
ABS, REL = Difference.ABSOLUTE, Difference.RELATIVE


def close(got: float, want: float, tol: float = TOL) -> bool:
    if math.isinf(want):
        return got == want
    return abs(got - want) <= tol * max(1.0, abs(want))


def raw(mean: float, sd: float, n: int) -> np.ndarray:
    """n values with exactly this mean and sample (ddof=1) standard deviation."""
    u = np.arange(n, dtype=float)
    return mean + sd * (u - u.mean()) / u.std(ddof=1)


def moments(s: ArmStats, kind: MetricKind) -> tuple[float, float, int]:
    return s.mean, math.sqrt(s.variance(kind)), s.n


# --- sufficient statistics --------------------------------------------------------------

def test_arm_stats_add_up_and_match_numpy() -> None:
    rng = np.random.default_rng(7)
    y = rng.gamma(2.0, 3.0, 500)
    parts = [ArmStats(len(c), float(c.sum()), float((c * c).sum())) for c in (y[:123], y[123:])]
    whole = parts[0] + parts[1]
    assert whole.n == 500 and close(whole.sum, y.sum()) and close(whole.mean, y.mean())
    assert close(whole.variance(M), y.var(ddof=1), 1e-12)
    conv = ArmStats.binary(200, 30)
    assert conv.variance(B) == 0.15 * 0.85 and conv.sum_squares == 30


@pytest.mark.parametrize(("args", "message"), [
    ((-1, 0.0, 0.0), "n must be a whole number"), ((0, 1.0, 1.0), "n = 0 with non-zero"),
    ((10, 5.0, 2.0), "the counts are inconsistent"), ((5, math.nan, 1.0), "must be finite"),
    ((5, 1.0, -1.0), "is negative"),
])
def test_inconsistent_counts_fail_loudly(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ArmStats(*args)
    with pytest.raises(ValueError, match=r"outside 0\.\.n"):
        ArmStats.binary(10, 11)


# --- Welch, absolute, against scipy -----------------------------------------------------

BINARY_CASES = [  # (n_A, conversions_A, n_B, conversions_B)
    (1000, 50, 1000, 65), (28, 14, 30, 16), (3000, 1396, 3461, 2422), (2, 1, 2, 0),
    (1000, 0, 1000, 5), (100, 100, 100, 90), (50, 3, 70000, 3600),
    (10**9, 5 * 10**7, 10**9, 50_010_000),
]
MEAN_CASES = [  # (mean, sd, n) for A then B
    ((0.41, 3.9, 3407), (0.7, 6.2, 3461)), ((10.0, 1.0, 2), (10.5, 2.0, 3)),
    ((2.5, 15.0, 40_000), (2.6, 16.0, 39_000)), ((5.0, 1e-3, 100), (5.5, 1.0, 80)),
    ((-3.0, 2.0, 50), (-2.0, 2.5, 60)),
]


def mean_arm(mean: float, sd: float, n: int) -> ArmStats:
    x = raw(mean, sd, n)
    return ArmStats(n, float(x.sum()), float((x * x).sum()))


@pytest.mark.parametrize("case", BINARY_CASES)
def test_binary_absolute_matches_scipy(case: tuple[int, int, int, int]) -> None:
    a, b = ArmStats.binary(case[0], case[1]), ArmStats.binary(case[2], case[3])
    est = estimate(a, b, B, ABS)
    assert isinstance(est, Estimate)
    (ma, sa, na), (mb, sb, nb) = moments(a, B), moments(b, B)
    for alternative in Alternative:
        ref = sps.ttest_ind_from_stats(mb, sb, nb, ma, sa, na, equal_var=False,
                                       alternative=str(alternative))
        result = t_test(est, 0.05, alternative)
        assert close(result.p, float(ref.pvalue)), alternative
        assert close(est.point / est.se, float(ref.statistic))
    if max(na, nb) <= 100_000 and sa > 0 and sb > 0:  # scipy warns on constant raw data
        ref_raw = sps.ttest_ind(raw(mb, sb, nb), raw(ma, sa, na), equal_var=False)
        assert close(est.df, float(ref_raw.df), 1e-9)
        lo, hi = ref_raw.confidence_interval(0.95)
        ci = t_test(est).ci
        assert close(ci.lo, float(lo)) and close(ci.hi, float(hi))


@pytest.mark.parametrize("case", MEAN_CASES)
def test_mean_absolute_matches_scipy_on_raw_values(case: tuple) -> None:
    (ma, sa, na), (mb, sb, nb) = case
    xa, xb = raw(ma, sa, na), raw(mb, sb, nb)
    est = estimate(mean_arm(ma, sa, na), mean_arm(mb, sb, nb), M, ABS)
    assert isinstance(est, Estimate)
    for alternative in Alternative:
        ref = sps.ttest_ind(xb, xa, equal_var=False, alternative=str(alternative))
        result = t_test(est, 0.1, alternative)
        assert close(result.p, float(ref.pvalue))
        lo, hi = ref.confidence_interval(0.9)
        assert close(result.ci.lo, float(lo)) and close(result.ci.hi, float(hi))
        assert close(est.df, float(ref.df), 1e-9)


# --- relative effect: the delta method written out, and gbstats' numbers -----------------

def delta_relative(a: ArmStats, b: ArmStats, kind: MetricKind) -> tuple[float, float]:
    """Var of (m_B - m_A)/|m_A| by a numerical gradient and the diagonal covariance."""
    ma, mb = a.mean, b.mean
    f = lambda x, y: (y - x) / abs(x)  # noqa: E731
    h = 1e-6 * max(abs(ma), 1e-12)
    ga = (f(ma + h, mb) - f(ma - h, mb)) / (2 * h)
    gb = (f(ma, mb + h) - f(ma, mb - h)) / (2 * h)
    return f(ma, mb), math.sqrt(ga * ga * a.variance(kind) / a.n + gb * gb * b.variance(kind) / b.n)


@pytest.mark.parametrize("case", BINARY_CASES[:3] + BINARY_CASES[5:])
def test_relative_binary_matches_delta_method(case: tuple[int, int, int, int]) -> None:
    a, b = ArmStats.binary(case[0], case[1]), ArmStats.binary(case[2], case[3])
    est = estimate(a, b, B, REL)
    point, se = delta_relative(a, b, B)
    assert isinstance(est, Estimate)
    assert close(est.point, point, 1e-12) and close(est.se, se, 1e-6)
    ma, mb = a.mean, b.mean  # statistics.md formula, typed again
    var = b.variance(B) / (b.n * ma**2) + a.variance(B) * mb**2 / (a.n * ma**4)
    assert close(est.se, math.sqrt(var), 1e-12)


@pytest.mark.parametrize("case", MEAN_CASES)
def test_relative_mean_matches_delta_method(case: tuple) -> None:
    a, b = mean_arm(*case[0]), mean_arm(*case[1])
    est = estimate(a, b, M, REL)
    point, se = delta_relative(a, b, M)
    assert isinstance(est, Estimate)
    assert close(est.point, point, 1e-12) and close(est.se, se, 1e-6)


GB_A, GB_B = ArmStats(3407, 1396.87, 52377.9767), ArmStats(3461, 2422.7, 134698.29)


def rounded(*values: float) -> list[float]:
    return [round(v, 5) for v in values]


def test_gbstats_published_two_sided_examples() -> None:
    rel = estimate(GB_A, GB_B, M, REL)
    absolute = estimate(GB_A, GB_B, M, ABS)
    assert isinstance(rel, Estimate) and isinstance(absolute, Estimate)
    r, a = t_test(rel), t_test(absolute)
    assert rounded(rel.point, rel.se, r.ci.lo, r.ci.hi, r.p) == [
        0.70732, 0.37879, -0.03526, 1.44989, 0.06191]
    assert rounded(absolute.point, absolute.se, a.ci.lo, a.ci.hi, a.p) == [
        0.29, 0.12478, 0.04538, 0.53462, 0.02016]
    prop = estimate(ArmStats.binary(28, 14), ArmStats.binary(30, 16), B, REL)
    assert isinstance(prop, Estimate)
    p = t_test(prop)
    assert rounded(prop.point, prop.se, p.ci.lo, p.ci.hi, p.p) == [
        0.06667, 0.2717, -0.47767, 0.61101, 0.80707]


def test_gbstats_published_one_sided_examples() -> None:
    a = ArmStats(3000, 1396.87, 52377.9767)
    rel, absolute = estimate(a, GB_B, M, REL), estimate(a, GB_B, M, ABS)
    assert isinstance(rel, Estimate) and isinstance(absolute, Estimate)
    g_rel, g_abs = t_test(rel, 0.05, Alternative.GREATER), t_test(absolute, 0.05,
                                                                   Alternative.GREATER)
    assert close(rel.point, 0.5033610858562358, 1e-12) and close(rel.se, 0.3334122146400735)
    assert close(g_rel.p, 0.06558262868467746) and close(g_rel.ci.lo, -0.045136675850396046)
    assert g_rel.ci.hi == math.inf
    assert close(g_abs.p, 0.03554272489873023) and close(g_abs.ci.lo, 0.020791480063255735)


# --- degenerate inputs: named, never NaN ----------------------------------------------

@pytest.mark.parametrize(("a", "b", "kind", "difference", "reason"), [
    (ArmStats(0), ArmStats.binary(10, 1), B, REL, Insufficient.EMPTY_ARM),
    (ArmStats.binary(10, 1), ArmStats(0), B, ABS, Insufficient.EMPTY_ARM),
    (ArmStats.binary(1, 1), ArmStats.binary(10, 1), B, ABS, Insufficient.TOO_FEW_UNITS),
    (mean_arm(1, 1, 5), ArmStats(1, 2.0, 4.0), M, ABS, Insufficient.TOO_FEW_UNITS),
    (ArmStats.binary(500, 0), ArmStats.binary(500, 0), B, ABS, Insufficient.ZERO_VARIANCE),
    (ArmStats.binary(500, 500), ArmStats.binary(400, 400), B, REL, Insufficient.ZERO_VARIANCE),
    (ArmStats.binary(500, 0), ArmStats.binary(500, 7), B, REL, Insufficient.ZERO_CONTROL_MEAN),
    (ArmStats.binary(500, 9), ArmStats.binary(500, 0), B, REL, Insufficient.ZERO_VARIANCE),
    (ArmStats(50, 0.0, 50.0), mean_arm(1, 1, 50), M, REL, Insufficient.ZERO_CONTROL_MEAN),
    (mean_arm(0, 1, 50), mean_arm(1, 1, 50), M, REL, Insufficient.ZERO_CONTROL_MEAN),
])
def test_degenerate_inputs_say_not_enough_data(a: ArmStats, b: ArmStats, kind: MetricKind,
                                               difference: Difference,
                                               reason: Insufficient) -> None:
    result = estimate(a, b, kind, difference)
    assert isinstance(result, NotEnoughData) and result.reason is reason
    assert result.describe().startswith(f"not enough data ({reason})")


def test_huge_counts_stay_finite() -> None:
    a = ArmStats.binary(10**9, 5 * 10**7)
    b = ArmStats.binary(10**9, 5 * 10**7 + 30_000)
    est = estimate(a, b, B, REL)
    assert isinstance(est, Estimate)
    result = t_test(est)
    values = [est.point, est.se, est.df, result.p, result.ci.lo, result.ci.hi]
    assert all(math.isfinite(v) for v in values) and 0 < result.p < 0.01


# --- Bayesian: against numerical integration ----------------------------------------

@pytest.mark.parametrize(("d", "se", "prior"), [
    (0.05, 0.03, None), (-0.2, 0.1, None), (0.0, 1.0, None), (3.0, 0.5, None),
    (0.05, 0.03, GaussianPrior(0.0, 0.1**2)), (0.3, 0.2, GaussianPrior(0.1, 0.05)),
])
def test_gaussian_effect_matches_integrals(d: float, se: float,
                                           prior: GaussianPrior | None) -> None:
    est = Estimate(REL, d, se, 1000.0, 2000)
    result = gaussian_effect(est, 0.05, prior)

    def density(x: float, mean: float, sd: float) -> float:
        return math.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))

    def posterior_kernel(x: float) -> float:  # likelihood x prior, unnormalised
        lik = density(d, x, se)
        return lik * (density(x, prior.mean, math.sqrt(prior.variance)) if prior else 1)

    lo, hi = d - 40 * se, d + 40 * se
    opts = {"points": [d], "limit": 200, "epsabs": 1e-13}
    mass = integrate.quad(posterior_kernel, lo, hi, **opts)[0]
    mean = integrate.quad(lambda x: x * posterior_kernel(x), lo, hi, **opts)[0] / mass
    var = integrate.quad(lambda x: (x - mean) ** 2 * posterior_kernel(x), lo, hi,
                         **opts)[0] / mass
    above = integrate.quad(posterior_kernel, 0, hi, limit=200, epsabs=1e-13)[0] / mass
    gain = integrate.quad(lambda x: x * posterior_kernel(x), 0, hi, limit=200,
                          epsabs=1e-13)[0] / mass
    loss = -integrate.quad(lambda x: x * posterior_kernel(x), lo, 0, limit=200,
                           epsabs=1e-13)[0] / mass
    assert close(result.mean, mean) and close(result.sd, math.sqrt(var))
    assert close(result.chance_to_beat, above)
    assert close(result.risk_keep_control, gain) and close(result.risk_ship, loss)
    z = sps.norm.ppf(0.975)
    assert close(result.ci.lo, mean - z * math.sqrt(var))
    assert close(result.ci.hi, mean + z * math.sqrt(var))


def test_proper_prior_shrinks_toward_its_mean() -> None:
    est = Estimate(REL, 0.3, 0.2, 100.0, 200)
    flat = gaussian_effect(est)
    shrunk = gaussian_effect(est, prior=GaussianPrior(0.0, 0.01))
    assert 0 < shrunk.mean < flat.mean and shrunk.sd < flat.sd
    with pytest.raises(ValueError, match="variance"):
        GaussianPrior(0.0, 0.0)


def test_interval_helpers() -> None:
    assert Interval(1.0, 0.0).empty and not Interval(0.0, 1.0).empty
    assert Interval(0.1, 0.2).excludes(0.0) and not Interval(-0.1, 0.2).excludes(0.0)
