"""Always-valid inference, so that analysts may look every day (statistics.md, "Sequential").

The asymptotic confidence sequence of Waudby-Smith et al. (2023, arXiv:2103.06476, eq. 9 with
the rho of eq. 161), which is what gbstats ships, with tuning parameter N* (default 5000,
ideally the expected total sample size) and N = n_A + n_B:

    rho = sqrt((-2 ln alpha + ln(-2 ln alpha + 1)) / N*)
    half-width = se sqrt(N) sqrt(2 (N rho^2 + 1) / (N^2 rho^2) ln(sqrt(N rho^2 + 1) / alpha))

and its dual, the normal-mixture mSPRT p-value (Johari et al., Optimizely's Stats Engine)
with V = se^2 and mixing variance tau^2 = rho^2 N se^2:

    Lambda = exp(rho^2 N d^2 / se^2 / (2 (N rho^2 + 1))) / sqrt(N rho^2 + 1),
    p = min(1, 1 / Lambda).

p < alpha exactly when 0 lies outside the sequence. Beyond gbstats, :func:`running_min_p`
and :func:`running_intersection` turn a series of looks into a true always-valid p-value
and interval (each look alone is valid at its time; the running versions are valid for the
whole series at once).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from experiments.stats.arm import Interval
from experiments.stats.frequentist import Estimate

DEFAULT_TUNING = 5000.0


@dataclass(frozen=True, slots=True)
class SequentialResult:
    estimate: Estimate
    alpha: float
    tuning: float
    p: float
    ci: Interval


def sequential_rho(alpha: float, tuning: float = DEFAULT_TUNING) -> float:
    """rho of Waudby-Smith et al. eq. 161 for the tuning parameter N*."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha {alpha!r} must be strictly between 0 and 1")
    if not tuning > 0:
        raise ValueError(f"sequential tuning N* {tuning!r} must be > 0")
    two_log = -2.0 * math.log(alpha)
    return math.sqrt((two_log + math.log(two_log + 1.0)) / tuning)


def cs_halfwidth(se: float, n_total: int, alpha: float, tuning: float = DEFAULT_TUNING) -> float:
    """Half-width of the two-sided asymptotic confidence sequence at N = n_total."""
    if n_total < 1:
        raise ValueError(f"cs_halfwidth: N = {n_total} must be >= 1")
    rho2n = sequential_rho(alpha, tuning) ** 2 * n_total
    return se * math.sqrt(n_total) * math.sqrt(
        2.0 * (rho2n + 1.0) / (n_total * rho2n) * math.log(math.sqrt(rho2n + 1.0) / alpha))


def msprt_p(d: float, se: float, n_total: int, alpha: float,
            tuning: float = DEFAULT_TUNING) -> float:
    """The mixture-SPRT p-value min(1, 1/Lambda), computed in log space (no overflow)."""
    if not se > 0:
        raise ValueError(f"msprt_p: se {se!r} must be > 0")
    rho2n = sequential_rho(alpha, tuning) ** 2 * n_total
    log_lambda = rho2n * (d / se) ** 2 / (2.0 * (rho2n + 1.0)) - 0.5 * math.log(rho2n + 1.0)
    return 1.0 if log_lambda <= 0 else math.exp(-log_lambda)


def sequential_test(est: Estimate, alpha: float = 0.05,
                    tuning: float = DEFAULT_TUNING) -> SequentialResult:
    """The confidence sequence and mSPRT p-value for one look at ``est``."""
    width = cs_halfwidth(est.se, est.n_total, alpha, tuning)
    return SequentialResult(est, alpha, tuning,
                            msprt_p(est.point, est.se, est.n_total, alpha, tuning),
                            Interval(est.point - width, est.point + width))


def running_min_p(ps: Iterable[float]) -> tuple[float, ...]:
    """p_t = min over looks s <= t: the always-valid p-value of a series of looks."""
    out: list[float] = []
    low = 1.0
    for p in ps:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"running_min_p: {p!r} is not a p-value")
        low = min(low, p)
        out.append(low)
    return tuple(out)


def running_intersection(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    """The intersection of the intervals of looks 1..t, for each t. An empty result
    (lo > hi) is kept as such: it means the looks contradict each other, which happens
    with probability at most alpha, or that the model's assumptions fail."""
    out: list[Interval] = []
    lo, hi = -math.inf, math.inf
    for interval in intervals:
        lo, hi = max(lo, interval.lo), min(hi, interval.hi)
        out.append(Interval(lo, hi))
    return tuple(out)
