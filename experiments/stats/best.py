"""Probability that each arm is best (and second best), exactly, without Monte Carlo.

For independent posteriors with densities f_k and CDFs F_k (statistics.md, "Bayesian"):

    P(arm i best)   = integral f_i(x) prod_{j != i} F_j(x) dx
    P(arm i second) = integral f_i(x) sum_{j != i} (1 - F_j(x)) prod_{k != i, j} F_k(x) dx

Both are one-dimensional integrals, computed by composite Gauss-Legendre quadrature on a
mesh made of every arm's quantiles at Phi(z), z = -8.5, -8, ..., 8.5. Each arm's density is
therefore resolved at a scale of half its own standard deviation, however narrow it is next
to the others (1e9 units beside 100), and the mass outside the mesh is below 1e-16.

For two Beta posteriors with an integer parameter there is also Evan Miller's closed form
("Formulas for Bayesian A/B testing", 2014), summed in log space with betaln:

    P(p_B > p_A) = sum_{i=0}^{a_B - 1} exp(lnB(a_A + i, b_A + b_B) - ln(b_B + i)
                                            - lnB(1 + i, b_B) - lnB(a_A, b_A))

It needs a_B terms; by the symmetries P(B > A) = 1 - P(A > B) and p -> 1 - p we sum over
the smallest of the four parameters. Large counts: betaln(x, y) has magnitude ~ x ln y, so
the differences above lose ~1e-16 x ln y to cancellation (1e-9 at a million units, 1e-7 at
a billion). Past MAX_PARAM (or MAX_TERMS terms) the integral, accurate to ~1e-13 at any
size, is used instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.polynomial.legendre import leggauss
from scipy import special
from scipy import stats as sps

MAX_TERMS = 100_000
MAX_PARAM = 1_000_000.0
_Z_LEVELS = np.arange(-8.5, 8.75, 0.5)
_NODES, _WEIGHTS = leggauss(16)


def prob_best_beta(alphas: Sequence[float], betas: Sequence[float],
                   second: bool = False) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(P(best), P(second best)) for independent Beta(alpha_k, beta_k) posteriors.
    P(second best) is only computed when ``second`` is true (zeros otherwise)."""
    _check_lengths(alphas, betas, "prob_best_beta")
    if min(alphas) <= 0 or min(betas) <= 0:
        raise ValueError(f"prob_best_beta: Beta parameters must be > 0, got {alphas}, {betas}")
    dists = [sps.beta(a, b) for a, b in zip(alphas, betas, strict=True)]
    return _integrate(dists, second)


def prob_best_normal(means: Sequence[float], sds: Sequence[float],
                     second: bool = False) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(P(best), P(second best)) for independent N(mean_k, sd_k^2) posteriors."""
    _check_lengths(means, sds, "prob_best_normal")
    if min(sds) <= 0:
        raise ValueError(f"prob_best_normal: standard deviations must be > 0, got {sds}")
    dists = [sps.norm(m, s) for m, s in zip(means, sds, strict=True)]
    return _integrate(dists, second)


def beta_b_beats_a(a_a: float, b_a: float, a_b: float, b_b: float) -> float:
    """P(p_B > p_A) for p_A ~ Beta(a_a, b_a), p_B ~ Beta(a_b, b_b): Evan Miller's closed
    form when some parameter is a whole number of at most MAX_TERMS and none exceeds
    MAX_PARAM, else the integral."""
    # Each option: (terms, a_A, b_A, a_B, b_B of the sum, whether to take 1 - sum).
    options = [(a_b, a_a, b_a, a_b, b_b, False), (a_a, a_b, b_b, a_a, b_a, True),
               (b_a, b_b, a_b, b_a, a_a, False), (b_b, b_a, a_a, b_b, a_b, True)]
    usable = [o for o in options if float(o[0]).is_integer() and o[0] <= MAX_TERMS]
    if not usable or max(a_a, b_a, a_b, b_b) > MAX_PARAM:
        best, _ = prob_best_beta([a_a, a_b], [b_a, b_b])
        return best[1]
    _, aa, ba, ab, bb, complement = min(usable, key=lambda o: o[0])
    i = np.arange(int(ab), dtype=float)
    log_terms = (special.betaln(aa + i, ba + bb) - np.log(bb + i)
                 - special.betaln(1.0 + i, bb) - special.betaln(aa, ba))
    total = float(np.clip(np.exp(special.logsumexp(log_terms)), 0.0, 1.0))
    return 1.0 - total if complement else total


def _integrate(dists: list, second: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    k = len(dists)
    if k < 2:
        raise ValueError(f"probability of best needs at least 2 arms, got {k}")
    levels = sps.norm.cdf(_Z_LEVELS)
    edges = np.unique(np.concatenate([d.ppf(levels) for d in dists]))
    edges = edges[np.isfinite(edges)]
    half = np.diff(edges) / 2.0
    mid = (edges[:-1] + edges[1:]) / 2.0
    x = (mid[:, None] + half[:, None] * _NODES[None, :]).ravel()
    w = (half[:, None] * _WEIGHTS[None, :]).ravel()
    pdf = np.array([d.pdf(x) for d in dists])
    cdf = np.array([d.cdf(x) for d in dists])
    best = np.empty(k)
    runner = np.zeros(k)
    for i in range(k):
        others = [j for j in range(k) if j != i]
        best[i] = np.sum(w * pdf[i] * np.prod(cdf[others], axis=0))
        if second:
            total = np.zeros_like(x)
            for j in others:
                rest = [m for m in others if m != j]
                total += (1.0 - cdf[j]) * np.prod(cdf[rest], axis=0)
            runner[i] = np.sum(w * pdf[i] * total)
    return _tidy(best), _tidy(runner)


def _tidy(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in np.clip(values, 0.0, 1.0))


def _check_lengths(first: Sequence[float], second: Sequence[float], name: str) -> None:
    if len(first) != len(second):
        raise ValueError(f"{name}: {len(first)} vs {len(second)} parameters")
