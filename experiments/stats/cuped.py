"""CUPED variance reduction with a pre-exposure covariate x (Deng et al. 2013; statistics.md,
"Health checks"; gbstats' ``RegressionAdjustedStatistic``).

theta = Cov(Y, X) / Var(X) over the units of all arms together (gbstats' ``compute_theta``);
the adjusted arm mean is m_Y - theta m_X with per-unit variance
s_Y^2 + theta^2 s_X^2 - 2 theta s_XY (theta treated as known). The relative effect divides
by the UNADJUSTED control mean mu = m_Y,A:

    r = (a_B - a_A) / |mu|,
    Var(r) = v_B/(n_B mu^2) + v_A/(n_A mu^2) + D^2 s_YA^2/(n_A mu^4) + 2 D c_A/(n_A mu^3)

with D = a_B - a_A and c_A = s_YA^2 - theta s_XYA = n_A Cov(a_A, mu) (the delta method on
(a_B, a_A, mu)). With theta = 0 this is exactly the plain delta-method variance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from experiments.stats.arm import ArmStats, Insufficient, MetricKind, NotEnoughData, check_arms
from experiments.stats.frequentist import Difference, Estimate, welch_df


@dataclass(frozen=True, slots=True)
class CupedArm:
    """Sufficient statistics of the metric y, the covariate x and sum(x y) over one arm."""

    y: ArmStats
    x: ArmStats
    sum_xy: float

    def __post_init__(self) -> None:
        if self.y.n != self.x.n:
            raise ValueError(f"CupedArm: y has n = {self.y.n} but x has n = {self.x.n}")

    def __add__(self, other: CupedArm) -> CupedArm:
        return CupedArm(self.y + other.y, self.x + other.x, self.sum_xy + other.sum_xy)

    def covariance(self) -> float:
        n = self.y.n
        return (self.sum_xy - self.x.sum * self.y.sum / n) / (n - 1)


def cuped_theta(arms: Sequence[CupedArm]) -> float | NotEnoughData:
    """theta over all units of all arms; NotEnoughData when x does not vary."""
    pooled = arms[0]
    for arm in arms[1:]:
        pooled = pooled + arm
    if pooled.y.n < 2:
        return NotEnoughData(Insufficient.TOO_FEW_UNITS, "CUPED needs at least 2 units")
    var_x = pooled.x.variance(MetricKind.MEAN)
    if var_x == 0.0:
        return NotEnoughData(Insufficient.ZERO_VARIANCE, "the covariate has the same value "
                             "for every unit, so it cannot reduce variance")
    return pooled.covariance() / var_x


def cuped_estimate(a: CupedArm, b: CupedArm, theta: float,
                   difference: Difference = Difference.RELATIVE) -> Estimate | NotEnoughData:
    """The CUPED-adjusted effect of B over the control A (mean metrics)."""
    short = check_arms(a.y, b.y)
    if short is not None:
        return short
    adj_a, v_a = _adjusted(a, theta)
    adj_b, v_b = _adjusted(b, theta)
    if v_a == 0.0 and v_b == 0.0:
        return NotEnoughData(Insufficient.ZERO_VARIANCE, "the adjusted values do not vary")
    df = welch_df(v_a, a.y.n, v_b, b.y.n)
    n_total = a.y.n + b.y.n
    if difference is Difference.ABSOLUTE:
        return Estimate(difference, adj_b - adj_a, math.sqrt(v_b / b.y.n + v_a / a.y.n),
                        df, n_total)
    mu = a.y.mean
    if a.y.mean_is_zero:
        return NotEnoughData(Insufficient.ZERO_CONTROL_MEAN,
                             "the control mean is 0, so a relative effect is undefined")
    d = adj_b - adj_a
    c_a = a.y.variance(MetricKind.MEAN) - theta * a.covariance()
    var = (v_b / (b.y.n * mu**2) + v_a / (a.y.n * mu**2)
           + d * d * a.y.variance(MetricKind.MEAN) / (a.y.n * mu**4)
           + 2.0 * d * c_a / (a.y.n * mu**3))
    if var <= 0.0:
        return NotEnoughData(Insufficient.ZERO_VARIANCE,
                             "the delta-method variance of the relative effect is not positive")
    return Estimate(difference, d / abs(mu), math.sqrt(var), df, n_total)


def _adjusted(arm: CupedArm, theta: float) -> tuple[float, float]:
    v_y, v_x = arm.y.variance(MetricKind.MEAN), arm.x.variance(MetricKind.MEAN)
    var = v_y + theta * theta * v_x - 2.0 * theta * arm.covariance()
    return arm.y.mean - theta * arm.x.mean, max(0.0, var)
