"""Thompson-sampling weights for ``allocation = "bandit"`` experiments (statistics.md,
"Continuous optimisation"). Pure: the caller reads the counts, calls
:func:`compute_weights` on its cadence, publishes the result and records it in a
:class:`~experiments.history.WeightHistory`.

- Posteriors: Beta(1 + conversions, 1 + n - conversions) for binary goals; for revenue
  N(m, s^2 / n) (flat prior, the Gaussian model of gbstats' bandits).
- Weights = P(arm is best) computed exactly by 1-D integration
  (:mod:`experiments.stats.best`), so the same counts give the same weights on every node;
  gbstats uses 10,000 seeded Monte Carlo draws instead. With ``top_two`` the weights are
  (P(best) + P(second best)) / 2, gbstats' top-two convention, which keeps exploring the
  runner-up instead of starving it.
- Floor: p_i = f + (1 - K f) w_i, so every arm keeps at least f and the weights still add
  up to 1 (no clipping and renormalising).
- Burn-in: the planned weights until every arm has >= min_units units and >=
  min_conversions conversions (for revenue, purchasers: the caller passes them).
- Segments: a segment's posterior starts from a prior centred on the arm's global posterior
  with ``segment_prior_strength`` pseudo-units, so a segment with few units follows the
  global weights and only a segment with much data can move away from them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from experiments.history import WeightHistory, WeightPeriod
from experiments.model import BanditSettings, check_floor
from experiments.stats.arm import ArmStats, MetricKind

__all__ = ["BanditPhase", "BanditWeights", "WeightHistory", "WeightPeriod", "apply_floor",
           "compute_weights", "segment_weights"]


class BanditPhase(StrEnum):
    BURN_IN = "burn_in"    # planned weights: not enough data yet
    THOMPSON = "thompson"  # weights from the posteriors


@dataclass(frozen=True, slots=True)
class BanditWeights:
    weights: tuple[float, ...]            # what to publish (floor applied)
    p_best: tuple[float, ...] | None      # P(arm is best); None during burn-in
    phase: BanditPhase
    detail: str                           # why, in words (for logs and /why)


def _best() -> Any:
    """scipy, loaded the first time weights are computed (not in every proxy worker)."""
    from experiments.stats import best
    return best


def apply_floor(weights: Sequence[float], floor: float) -> tuple[float, ...]:
    """p_i = f + (1 - K f) w_i."""
    check_floor(floor, len(weights), "bandit")
    scale = 1.0 - len(weights) * floor
    return tuple(floor + scale * w for w in weights)


def compute_weights(
    stats: Sequence[ArmStats], *, planned: Sequence[float], settings: BanditSettings,
    binary: bool, conversions: Sequence[int] | None = None,
) -> BanditWeights:
    """Weights for the next period from each arm's counts on the primary goal.

    ``conversions`` are required for revenue goals (units with a purchase) and must be
    omitted for binary goals, whose conversions are ``stats[k].sum``.
    """
    converted = _conversions(stats, binary, conversions)
    waiting = _burn_in(stats, converted, settings)
    if waiting is not None:
        return BanditWeights(tuple(planned), None, BanditPhase.BURN_IN, waiting)
    if binary:
        alphas = [1.0 + s.sum for s in stats]
        betas = [1.0 + s.n - s.sum for s in stats]
        return _thompson(_best().prob_best_beta(alphas, betas, settings.top_two), settings)
    means, sds = [], []
    for k, s in enumerate(stats):
        var = s.variance(MetricKind.MEAN)
        if var == 0.0:
            return BanditWeights(tuple(planned), None, BanditPhase.BURN_IN,
                                 f"arm {k}: every unit has the same value, no posterior yet")
        means.append(s.mean)
        sds.append(math.sqrt(var / s.n))
    return _thompson(_best().prob_best_normal(means, sds, settings.top_two), settings)


def segment_weights(
    segment: Sequence[ArmStats], overall: Sequence[ArmStats], *, planned: Sequence[float],
    settings: BanditSettings, binary: bool, conversions: Sequence[int] | None = None,
) -> BanditWeights:
    """Weights for one segment (device x referrer class x ...), shrunk toward the global
    posterior. Burn-in is judged on ``overall`` (all segments together), whose
    ``conversions`` are passed for revenue goals as in :func:`compute_weights`."""
    if len(segment) != len(overall):
        raise ValueError(f"segment_weights: {len(segment)} segment arms vs {len(overall)}")
    converted = _conversions(overall, binary, conversions)
    waiting = _burn_in(overall, converted, settings)
    if waiting is not None:
        return BanditWeights(tuple(planned), None, BanditPhase.BURN_IN, waiting)
    strength = settings.segment_prior_strength
    if binary:
        alphas, betas = [], []
        for seg, glob in zip(segment, overall, strict=True):
            rate = (1.0 + glob.sum) / (2.0 + glob.n)  # global posterior mean
            alphas.append(strength * rate + seg.sum)
            betas.append(strength * (1.0 - rate) + seg.n - seg.sum)
        return _thompson(_best().prob_best_beta(alphas, betas, settings.top_two), settings)
    means, sds = [], []
    for k, (seg, glob) in enumerate(zip(segment, overall, strict=True)):
        var = glob.variance(MetricKind.MEAN)
        if var == 0.0:
            return BanditWeights(tuple(planned), None, BanditPhase.BURN_IN,
                                 f"arm {k}: every unit has the same value, no posterior yet")
        precision, weighted = strength / var, strength / var * glob.mean
        if seg.n >= 2 and seg.variance(MetricKind.MEAN) > 0.0:
            data_precision = seg.n / seg.variance(MetricKind.MEAN)
            precision += data_precision
            weighted += data_precision * seg.mean
        means.append(weighted / precision)
        sds.append(math.sqrt(1.0 / precision))
    return _thompson(_best().prob_best_normal(means, sds, settings.top_two), settings)


def _thompson(probabilities: tuple[tuple[float, ...], tuple[float, ...]],
              settings: BanditSettings) -> BanditWeights:
    best, second = probabilities
    raw = [(b + s) / 2.0 for b, s in zip(best, second, strict=True)] if settings.top_two \
        else list(best)
    total = math.fsum(raw)  # 1 up to the quadrature's ~1e-13
    weights = apply_floor([w / total for w in raw], settings.floor)
    rule = "top-two Thompson sampling" if settings.top_two else "Thompson sampling"
    return BanditWeights(weights, best, BanditPhase.THOMPSON,
                         f"{rule}, floor {settings.floor:g}")


def _conversions(stats: Sequence[ArmStats], binary: bool,
                 conversions: Sequence[int] | None) -> list[float]:
    if binary:
        if conversions is not None:
            raise ValueError("bandit: conversions are stats[k].sum for a binary goal; "
                             "do not pass them separately")
        return [s.sum for s in stats]
    if conversions is None or len(conversions) != len(stats):
        raise ValueError("bandit: a revenue goal needs conversions (units with a purchase) "
                         f"for each of the {len(stats)} arms, got {conversions!r}")
    return [float(c) for c in conversions]


def _burn_in(stats: Sequence[ArmStats], conversions: list[float],
             settings: BanditSettings) -> str | None:
    for k, (s, c) in enumerate(zip(stats, conversions, strict=True)):
        if s.n < settings.min_units or c < settings.min_conversions:
            return (f"burn-in: arm {k} has {s.n} units and {c:g} conversions; every arm "
                    f"needs {settings.min_units} and {settings.min_conversions}")
    return None
