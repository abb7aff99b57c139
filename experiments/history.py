"""The record of weight changes, and the estimates that stay valid when weights change
(statistics.md, "Continuous optimisation").

A bandit changes the weights while the experiment runs. If conversion rates also drift
(weekday vs weekend), pooling all units of an arm over-represents the periods in which that
arm had a high weight (Simpson's paradox), and the SRM check must expect what the weights
were when the units came. Hence each change is recorded as (time, weights) and:

- expected units of arm k = sum over periods p of N_p w_{p,k}  (:func:`expected_units`);
- period-weighted arm mean = sum_p (N_p / N) m_{k,p}, with variance
  sum_p (N_p / N)^2 s_{k,p}^2 / n_{k,p}  (:func:`period_weighted_means`),

where N_p is the number of units (all arms) that entered during period p.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from experiments.model import WEIGHT_TOLERANCE
from experiments.stats.arm import ArmStats, Insufficient, MetricKind, NotEnoughData


@dataclass(frozen=True, slots=True)
class WeightPeriod:
    start: datetime
    weights: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class WeightHistory:
    """Weight changes in time order; period i runs from its start to the next one's."""

    periods: tuple[WeightPeriod, ...] = ()

    def record(self, at: datetime, weights: Sequence[float]) -> WeightHistory:
        """A new history with ``weights`` in force from ``at`` (the input is not changed)."""
        if at.tzinfo is None:
            raise ValueError(f"WeightHistory.record: {at.isoformat()} has no UTC offset")
        if self.periods and at <= self.periods[-1].start:
            raise ValueError(f"WeightHistory.record: {at.isoformat()} is not after the last "
                             f"change at {self.periods[-1].start.isoformat()}")
        if self.periods and len(weights) != len(self.periods[0].weights):
            raise ValueError(f"WeightHistory.record: {len(weights)} weights, the history "
                             f"has {len(self.periods[0].weights)} arms")
        total = math.fsum(weights)
        if any(not 0.0 <= w <= 1.0 for w in weights) or abs(total - 1.0) > WEIGHT_TOLERANCE:
            raise ValueError(f"WeightHistory.record: weights {list(weights)} must be in 0..1 "
                             "and sum to 1")
        period = WeightPeriod(at, tuple(float(w) for w in weights))
        return WeightHistory((*self.periods, period))

    def weights_at(self, at: datetime) -> tuple[float, ...] | None:
        """The weights in force at ``at``; None before the first record."""
        current = None
        for period in self.periods:
            if period.start > at:
                break
            current = period.weights
        return current


def expected_units(history: WeightHistory, units_by_period: Sequence[int]) -> tuple[float, ...]:
    """Expected units per arm: sum_p N_p w_p (the SRM expectation under changing weights)."""
    if len(units_by_period) != len(history.periods):
        raise ValueError(f"expected_units: {len(units_by_period)} unit counts for "
                         f"{len(history.periods)} weight periods")
    if not history.periods:
        raise ValueError("expected_units: the weight history is empty")
    arms = len(history.periods[0].weights)
    return tuple(
        math.fsum(n * period.weights[k]
                  for n, period in zip(units_by_period, history.periods, strict=True))
        for k in range(arms))


@dataclass(frozen=True, slots=True)
class WeightedMean:
    mean: float
    se: float


def period_weighted_means(
    by_period: Sequence[Sequence[ArmStats]], kind: MetricKind,
) -> tuple[WeightedMean | NotEnoughData, ...]:
    """Per arm, sum_p (N_p/N) m_{k,p} and its standard error; ``by_period[p][k]`` holds
    arm k's statistics for the units that entered in period p."""
    if not by_period:
        raise ValueError("period_weighted_means: no periods")
    arms = len(by_period[0])
    sizes = [sum(arm.n for arm in period) for period in by_period]
    total = sum(sizes)
    out: list[WeightedMean | NotEnoughData] = []
    for k in range(arms):
        out.append(_weighted(k, by_period, sizes, total, kind))
    return tuple(out)


def _weighted(k: int, by_period: Sequence[Sequence[ArmStats]], sizes: list[int], total: int,
              kind: MetricKind) -> WeightedMean | NotEnoughData:
    mean = var = 0.0
    minimum = 1 if kind is MetricKind.BINARY else 2
    for p, period in enumerate(by_period):
        if sizes[p] == 0:
            continue
        arm = period[k]
        if arm.n < minimum:
            return NotEnoughData(Insufficient.TOO_FEW_UNITS,
                                 f"arm {k} has n = {arm.n} in period {p}; merge short periods")
        share = sizes[p] / total
        mean += share * arm.mean
        var += share * share * arm.variance(kind) / arm.n
    if total == 0:
        return NotEnoughData(Insufficient.EMPTY_ARM, "no units in any period")
    return WeightedMean(mean, math.sqrt(var))
