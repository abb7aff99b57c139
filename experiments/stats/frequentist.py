"""Fixed-horizon frequentist comparison of a treatment B with the control A (gbstats'
``TwoSidedTTest`` / ``OneSidedTreatment*TTest`` conventions; statistics.md, "Frequentist").

- absolute: d = m_B - m_A, Var = s_B^2/n_B + s_A^2/n_A;
- relative (the default shown): d = (m_B - m_A) / |m_A|, delta method
  Var = s_B^2 / (n_B m_A^2) + s_A^2 m_B^2 / (n_A m_A^4);
- Welch-Satterthwaite degrees of freedom from the raw arm variances (for both);
- p = 2 T_df(-|d/se|) two-sided, CI = d +/- t_{1-alpha/2, df} se; one-sided versions too.

Degenerate inputs give :class:`NotEnoughData`, never NaN: an empty arm, n < 2, a zero
control mean (relative), a zero standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from scipy import stats as sps

from experiments.stats.arm import (
    ArmStats,
    Insufficient,
    Interval,
    MetricKind,
    NotEnoughData,
    check_arms,
)


class Difference(StrEnum):
    ABSOLUTE = "absolute"
    RELATIVE = "relative"


class Alternative(StrEnum):
    TWO_SIDED = "two-sided"
    GREATER = "greater"  # H1: the treatment is higher than the control
    LESS = "less"        # H1: the treatment is lower than the control


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate of the effect with its standard error and Welch df."""

    difference: Difference
    point: float
    se: float
    df: float
    n_total: int  # n_A + n_B, the N of the sequential formulas


@dataclass(frozen=True, slots=True)
class TestResult:
    estimate: Estimate
    alternative: Alternative
    alpha: float
    p: float
    ci: Interval


def welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """df = (s_B^2/n_B + s_A^2/n_A)^2 / (s_B^4/(n_B^2 (n_B-1)) + s_A^4/(n_A^2 (n_A-1)))."""
    u_a, u_b = var_a / n_a, var_b / n_b
    return (u_a + u_b) ** 2 / (u_b * u_b / (n_b - 1) + u_a * u_a / (n_a - 1))


def estimate(
    a: ArmStats, b: ArmStats, kind: MetricKind, difference: Difference = Difference.RELATIVE,
) -> Estimate | NotEnoughData:
    """The effect of B over the control A with its delta-method standard error."""
    short = check_arms(a, b)
    if short is not None:
        return short
    m_a, m_b = a.mean, b.mean
    v_a, v_b = a.variance(kind), b.variance(kind)
    if v_a == 0.0 and v_b == 0.0:
        return NotEnoughData(Insufficient.ZERO_VARIANCE, _no_variation(m_a, m_b, kind))
    df = welch_df(v_a, a.n, v_b, b.n)
    if difference is Difference.ABSOLUTE:
        return Estimate(difference, m_b - m_a, math.sqrt(v_b / b.n + v_a / a.n), df, a.n + b.n)
    if a.mean_is_zero:
        return NotEnoughData(Insufficient.ZERO_CONTROL_MEAN,
                             "the control mean is 0, so a relative effect is undefined")
    var = v_b / (b.n * m_a**2) + v_a * m_b**2 / (a.n * m_a**4)
    if var == 0.0:
        return NotEnoughData(Insufficient.ZERO_VARIANCE,
                             "the delta-method standard error of the relative effect is 0")
    return Estimate(difference, (m_b - m_a) / abs(m_a), math.sqrt(var), df, a.n + b.n)


def _no_variation(m_a: float, m_b: float, kind: MetricKind) -> str:
    if kind is MetricKind.BINARY and m_a == m_b == 0.0:
        return "no conversions in either arm yet"
    if kind is MetricKind.BINARY and m_a == m_b == 1.0:
        return "every unit converted in both arms"
    return f"every unit has the same value in each arm ({m_a:g} vs {m_b:g})"


def t_test(
    est: Estimate, alpha: float = 0.05, alternative: Alternative = Alternative.TWO_SIDED,
) -> TestResult:
    """Welch t-test of H0: effect = 0, and the matching (1 - alpha) interval."""
    _check_alpha(alpha)
    t = est.point / est.se
    dist = sps.t(est.df)
    if alternative is Alternative.TWO_SIDED:
        p = 2.0 * float(dist.sf(abs(t)))
        width = float(dist.isf(alpha / 2)) * est.se
        ci = Interval(est.point - width, est.point + width)
    elif alternative is Alternative.GREATER:
        p = float(dist.sf(t))
        ci = Interval(est.point - float(dist.isf(alpha)) * est.se, math.inf)
    else:
        p = float(dist.cdf(t))
        ci = Interval(-math.inf, est.point + float(dist.isf(alpha)) * est.se)
    return TestResult(est, alternative, alpha, min(1.0, p), ci)


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha {alpha!r} must be strictly between 0 and 1")
