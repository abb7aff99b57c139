"""Per-arm sufficient statistics and the named "not enough data" outcome.

Everything in :mod:`experiments.stats` works from ``ArmStats(n, sum, sum_squares)`` only,
which is all the proxy stores; two ArmStats add up (counts from two nodes, two days, two
segments) exactly like gbstats' ``SampleMeanStatistic``. Binary metrics store conversions
as ``sum`` (and, since y is 0 or 1, ``sum_squares == sum``).

Variances follow statistics.md ("Variances"): Bessel-corrected for mean metrics,
s^2 = (Q - S^2/n) / (n - 1); p(1 - p) without Bessel for binary metrics (gbstats'
ProportionStatistic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class MetricKind(StrEnum):
    BINARY = "binary"  # converted or not: y in {0, 1}
    MEAN = "mean"      # a per-visitor total, e.g. revenue per visitor


class Insufficient(StrEnum):
    """Why a number would be meaningless. Shown to analysts instead of NaN or 0."""

    EMPTY_ARM = "empty_arm"                  # an arm has no units
    TOO_FEW_UNITS = "too_few_units"          # n < 2: no variance, no degrees of freedom
    ZERO_VARIANCE = "zero_variance"          # all values equal in both arms: se = 0
    ZERO_CONTROL_MEAN = "zero_control_mean"  # relative effect divides by the control mean
    NO_CONVERSIONS = "no_conversions"        # bandit/power: nothing to learn from yet
    NOT_COMPUTED = "not_computed"            # an input the check needs was not given


@dataclass(frozen=True, slots=True)
class NotEnoughData:
    reason: Insufficient
    detail: str

    def describe(self) -> str:
        return f"not enough data ({self.reason}): {self.detail}"


@dataclass(frozen=True, slots=True)
class Interval:
    """[lo, hi]; one-sided intervals have an infinite end. ``lo > hi`` only for the running
    intersection of confidence sequences that disagree (see experiments.stats.sequential)."""

    lo: float
    hi: float

    @property
    def empty(self) -> bool:
        return self.lo > self.hi

    def excludes(self, value: float) -> bool:
        return value < self.lo or value > self.hi


@dataclass(frozen=True, slots=True)
class ArmStats:
    """n units, the sum of their values and the sum of their squared values.

    Invariants (checked here so that a corrupted counter fails loudly, not as NaN later):
    n >= 0, finite sums, sum_squares >= 0, and n * sum_squares >= sum^2 (Cauchy-Schwarz)
    up to rounding.
    """

    n: int
    sum: float = 0.0
    sum_squares: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"ArmStats: n must be a whole number >= 0, got {self.n!r}")
        if not (math.isfinite(self.sum) and math.isfinite(self.sum_squares)):
            raise ValueError(f"ArmStats: sums must be finite, got {self.sum!r}, "
                             f"{self.sum_squares!r}")
        if self.sum_squares < 0:
            raise ValueError(f"ArmStats: sum_squares {self.sum_squares!r} is negative")
        if self.n == 0 and (self.sum != 0 or self.sum_squares != 0):
            raise ValueError(f"ArmStats: n = 0 with non-zero sums ({self.sum!r}, "
                             f"{self.sum_squares!r})")
        slack = 1e-9 * max(self.n * self.sum_squares, 1.0)
        if self.sum * self.sum > self.n * self.sum_squares + slack:
            raise ValueError(f"ArmStats: sum^2 = {self.sum**2!r} exceeds n * sum_squares = "
                             f"{self.n * self.sum_squares!r}; the counts are inconsistent")

    @classmethod
    def binary(cls, n: int, conversions: int) -> ArmStats:
        if isinstance(conversions, bool) or not isinstance(conversions, int):
            raise ValueError(f"ArmStats.binary: conversions must be a whole number, "
                             f"got {conversions!r}")
        if not 0 <= conversions <= n:
            raise ValueError(f"ArmStats.binary: conversions {conversions} outside 0..n={n}")
        return cls(n, float(conversions), float(conversions))

    def __add__(self, other: ArmStats) -> ArmStats:
        return ArmStats(self.n + other.n, self.sum + other.sum,
                        self.sum_squares + other.sum_squares)

    @property
    def mean(self) -> float:
        """S / n; callers check ``n > 0`` first (an empty arm has no mean)."""
        if self.n == 0:
            raise ValueError("ArmStats.mean: the arm is empty (n = 0)")
        return self.sum / self.n

    @property
    def mean_is_zero(self) -> bool:
        """True when the mean is 0 up to rounding: |S| <= 1e-12 sqrt(n Q), e.g. +1 and -1
        values that cancel. Dividing by such a mean would give a meaningless 1e16."""
        return abs(self.sum) <= 1e-12 * math.sqrt(self.n * self.sum_squares)

    def variance(self, kind: MetricKind) -> float:
        """Per-unit variance under the convention of ``kind`` (see the module docstring)."""
        if kind is MetricKind.BINARY:
            if not 0 <= self.sum <= self.n:
                raise ValueError(f"ArmStats: {self.sum!r} conversions out of n = {self.n}")
            p = self.mean
            return p * (1.0 - p)
        if self.n < 2:
            raise ValueError(f"ArmStats.variance: n = {self.n} < 2 for a mean metric")
        return max(0.0, (self.sum_squares - self.sum * self.sum / self.n) / (self.n - 1))


def check_arms(a: ArmStats, b: ArmStats) -> NotEnoughData | None:
    """The shared guard of every two-arm comparison: both arms need n >= 2."""
    for name, arm in (("control", a), ("treatment", b)):
        if arm.n == 0:
            return NotEnoughData(Insufficient.EMPTY_ARM, f"the {name} arm has no units")
        if arm.n < 2:
            return NotEnoughData(Insufficient.TOO_FEW_UNITS,
                                 f"the {name} arm has n = {arm.n}; at least 2 are needed")
    return None
