"""Probability that each arm is best, against references computed here: Evan Miller's closed
form typed again with math.lgamma, scipy.integrate.quad over each arm's own support, and
the closed form for two normals."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import integrate, special
from scipy import stats as sps

from experiments.stats import beta_b_beats_a, prob_best_beta, prob_best_normal


class Beta:
    """Scalar Beta functions for the reference: scipy.special, not scipy.stats (100x faster
    per call, which adaptive quadrature needs)."""

    def __init__(self, a: float, b: float) -> None:
        self.a, self.b, self.log_norm = a, b, special.betaln(a, b)

    def pdf(self, x: float) -> float:
        if not 0 < x < 1:
            return 0.0
        return math.exp((self.a - 1) * math.log(x) + (self.b - 1) * math.log1p(-x)
                        - self.log_norm)

    def cdf(self, x: float) -> float:
        return float(special.betainc(self.a, self.b, min(max(x, 0.0), 1.0)))

    def sf(self, x: float) -> float:
        return float(special.betaincc(self.a, self.b, min(max(x, 0.0), 1.0)))

    def ppf(self, q: float) -> float:
        return float(special.betaincinv(self.a, self.b, q))


class Normal:
    def __init__(self, mean: float, sd: float) -> None:
        self.mean, self.sd = mean, sd

    def pdf(self, x: float) -> float:
        z = (x - self.mean) / self.sd
        return math.exp(-0.5 * z * z) / (self.sd * math.sqrt(2 * math.pi))

    def cdf(self, x: float) -> float:
        return 0.5 * math.erfc(-(x - self.mean) / (self.sd * math.sqrt(2)))

    def sf(self, x: float) -> float:
        return 0.5 * math.erfc((x - self.mean) / (self.sd * math.sqrt(2)))

    def ppf(self, q: float) -> float:
        return self.mean + self.sd * float(special.ndtri(q))


BREAKS = [1e-9, 1e-6, 1e-3, 0.05, 0.3, 0.5, 0.7, 0.95, 1 - 1e-3, 1 - 1e-6, 1 - 1e-9]


def quad_best(dists: list) -> tuple[list[float], list[float]]:
    """P(best) and P(second best) by adaptive quadrature over each arm's own support, with
    break points where the other arms' CDFs rise."""
    best, second = [], []
    for i, d in enumerate(dists):
        others = [x for j, x in enumerate(dists) if j != i]
        lo, hi = d.ppf(1e-15), d.ppf(1 - 1e-15)
        points = sorted({p for o in others for p in map(o.ppf, BREAKS) if lo < p < hi})
        opts = {"points": points or None, "limit": 1000, "epsabs": 1e-11, "epsrel": 1e-9}

        def first(x: float, others: list = others, d=d) -> float:
            return d.pdf(x) * math.prod(o.cdf(x) for o in others)

        def runner_up(x: float, others: list = others, d=d) -> float:
            return d.pdf(x) * sum(
                o.sf(x) * math.prod(r.cdf(x) for r in others if r is not o) for o in others)

        best.append(checked_quad(first, lo, hi, opts))
        second.append(checked_quad(runner_up, lo, hi, opts))
    return best, second


def checked_quad(f, lo: float, hi: float, opts: dict) -> float:
    """quad, with its own error estimate checked instead of its warnings (at a billion
    units the reference's log-space pdf carries ~1e-8 noise, so quad reports roundoff)."""
    value, error, *_ = integrate.quad(f, lo, hi, full_output=1, **opts)
    assert error < 1e-8
    return value


def miller(a_a: int, b_a: int, a_b: int, b_b: int) -> float:
    """Evan Miller (2014): P(p_B > p_A), summed term by term with math.lgamma."""
    def lbeta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)
    return math.fsum(math.exp(lbeta(a_a + i, b_a + b_b) - math.log(b_b + i)
                              - lbeta(1 + i, b_b) - lbeta(a_a, b_a)) for i in range(a_b))


def posterior(n: int, c: int) -> tuple[int, int]:
    return 1 + c, 1 + n - c


BETA_CASES = [  # (n, conversions) per arm
    [(1000, 40), (1000, 50)], [(0, 0), (0, 0)], [(0, 0), (100, 0)], [(100, 100), (100, 99)],
    [(1, 1), (1, 0)], [(3000, 1396), (3461, 2422)], [(50, 3), (200_000, 9_000)],
    [(10**9, 5 * 10**7), (10**9, 50_010_000)], [(1000, 40), (1000, 50), (1000, 60)],
    [(500, 20), (2000, 95), (40, 3), (10**7, 4 * 10**5), (0, 0)],
]


@pytest.mark.parametrize("arms", BETA_CASES)
def test_beta_prob_best_matches_quadrature(arms: list[tuple[int, int]]) -> None:
    params = [posterior(n, c) for n, c in arms]
    alphas, betas = [p[0] for p in params], [p[1] for p in params]
    best, second = prob_best_beta(alphas, betas, second=True)
    ref_best, ref_second = quad_best([Beta(a, b) for a, b in params])
    assert best == pytest.approx(ref_best, abs=1e-6)
    assert second == pytest.approx(ref_second, abs=1e-6)
    assert math.fsum(best) == pytest.approx(1.0, abs=1e-9)
    assert math.fsum(second) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("arms", [c for c in BETA_CASES if len(c) == 2])
def test_two_beta_arms_match_evan_millers_closed_form(arms: list[tuple[int, int]]) -> None:
    (a_a, b_a), (a_b, b_b) = (posterior(n, c) for n, c in arms)
    got = beta_b_beats_a(a_a, b_a, a_b, b_b)
    if a_b <= 10_000 and max(a_a, b_a, a_b, b_b) <= 10**6:
        assert got == pytest.approx(miller(a_a, b_a, a_b, b_b), abs=1e-9)
    assert got == pytest.approx(prob_best_beta([a_a, a_b], [b_a, b_b])[0][1], abs=1e-9)


def test_closed_form_uses_the_cheapest_symmetry() -> None:
    # a_B = 200,001 terms directly; b_A = 1 by symmetry.
    got = beta_b_beats_a(1, 1, 200_001, 1)
    assert got == pytest.approx(200_001 / 200_002, abs=1e-12)


@pytest.mark.parametrize(("means", "sds"), [
    ([1.0, 1.1], [0.1, 0.2]), ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),
    ([5.0, 5.2, 4.9], [0.3, 0.1, 1e-4]),
    ([10.0, 10.0005], [1e-3, 1e-6]), ([1e6, 1e6 + 1, 1e6 - 3, 1e6 + 2], [2.0, 0.5, 5.0, 1.0]),
])
def test_normal_prob_best_matches_references(means: list[float], sds: list[float]) -> None:
    best, second = prob_best_normal(means, sds, second=True)
    ref_best, ref_second = quad_best([Normal(m, s) for m, s in zip(means, sds, strict=True)])
    assert best == pytest.approx(ref_best, abs=1e-6)
    assert second == pytest.approx(ref_second, abs=1e-6)
    if len(means) == 2:
        exact = sps.norm.cdf((means[1] - means[0]) / math.hypot(*sds))
        assert best[1] == pytest.approx(exact, abs=1e-9)
        assert second[0] == pytest.approx(exact, abs=1e-9)


def test_bad_parameters_raise() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        prob_best_beta([0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="at least 2 arms"):
        prob_best_normal([1.0], [1.0])
    with pytest.raises(ValueError, match="2 vs 3"):
        prob_best_normal([1.0, 2.0], [1.0, 1.0, 1.0])


def test_prob_best_is_fast_enough_for_the_bandit_cadence() -> None:
    rng = np.random.default_rng(3)
    for k in (2, 5):
        n = rng.integers(1000, 10**6, size=k)
        c = (n * rng.uniform(0.02, 0.06, size=k)).astype(int)
        start = time.perf_counter()
        prob_best_beta(list(1 + c), list(1 + n - c), second=True)
        assert time.perf_counter() - start < 0.5
