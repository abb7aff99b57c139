"""Bandit weights: floor, burn-in, P(best), top-two, revenue, segments, and a seeded
simulation of 50,000 visitors (no wall clock, no global random state)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.bandit import BanditPhase, apply_floor, compute_weights, segment_weights
from experiments.model import BanditSettings
from experiments.stats import ArmStats, MetricKind, prob_best_beta, prob_best_normal

EQUAL = (1 / 3, 1 / 3, 1 / 3)
SETTINGS = BanditSettings()


def binary(*arms: tuple[int, int]) -> list[ArmStats]:
    return [ArmStats.binary(n, c) for n, c in arms]


def test_floor_formula() -> None:
    assert apply_floor([1.0, 0.0, 0.0], 0.01) == pytest.approx((0.98, 0.01, 0.01))
    floored = apply_floor([0.7, 0.2, 0.1], 0.05)
    assert floored == pytest.approx((0.05 + 0.85 * 0.7, 0.05 + 0.85 * 0.2, 0.05 + 0.85 * 0.1))
    assert math.fsum(floored) == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ValueError, match=r"give a floor of at most 0\.25"):
        apply_floor([0.25] * 4, 0.3)


def test_burn_in_keeps_planned_weights_until_every_arm_has_enough() -> None:
    planned = (0.2, 0.3, 0.5)
    cases = [((99, 60), (500, 60), (500, 60)), ((500, 39), (500, 60), (500, 60)),
             ((500, 60), (500, 60), (0, 0))]
    for arms in cases:
        result = compute_weights(binary(*arms), planned=planned, settings=SETTINGS, binary=True)
        assert result.phase is BanditPhase.BURN_IN and result.weights == planned
        assert result.p_best is None and "burn-in: arm" in result.detail
    ready = compute_weights(binary((100, 40), (100, 40), (100, 40)), planned=planned,
                            settings=SETTINGS, binary=True)
    assert ready.phase is BanditPhase.THOMPSON
    custom = BanditSettings(min_units=10, min_conversions=1)
    early = compute_weights(binary((20, 2), (20, 5), (20, 1)), planned=planned,
                            settings=custom, binary=True)
    assert early.phase is BanditPhase.THOMPSON


def test_weights_are_floored_probability_of_best() -> None:
    arms = binary((4000, 160), (4000, 200), (4000, 240))
    result = compute_weights(arms, planned=EQUAL, settings=SETTINGS, binary=True)
    best, _ = prob_best_beta([161, 201, 241], [3841, 3801, 3761])
    assert result.p_best == pytest.approx(best, abs=1e-12)
    total = math.fsum(best)
    assert result.weights == pytest.approx(apply_floor([b / total for b in best], 0.01),
                                           abs=1e-12)
    again = compute_weights(arms, planned=EQUAL, settings=SETTINGS, binary=True)
    assert again == result  # deterministic: no sampling


def test_top_two_averages_best_and_second_best() -> None:
    arms = binary((4000, 160), (4000, 200), (4000, 240))
    settings = BanditSettings(top_two=True, floor=0.02)
    result = compute_weights(arms, planned=EQUAL, settings=settings, binary=True)
    best, second = prob_best_beta([161, 201, 241], [3841, 3801, 3761], second=True)
    raw = [(b + s) / 2 for b, s in zip(best, second, strict=True)]
    assert result.weights == pytest.approx(apply_floor(raw, 0.02), abs=1e-9)
    plain = compute_weights(arms, planned=EQUAL, settings=SETTINGS, binary=True)
    assert result.weights[1] > plain.weights[1]  # the runner-up keeps more traffic


def test_revenue_goal_uses_gaussian_posteriors_and_needs_purchasers() -> None:
    rng = np.random.default_rng(11)
    values = [rng.exponential(scale, 3000) * (rng.random(3000) < 0.1)
              for scale in (40.0, 45.0)]
    arms = [ArmStats(len(v), float(v.sum()), float(v @ v)) for v in values]
    purchasers = [int((v > 0).sum()) for v in values]
    result = compute_weights(arms, planned=(0.5, 0.5), settings=SETTINGS, binary=False,
                             conversions=purchasers)
    sds = [math.sqrt(a.variance(MetricKind.MEAN) / a.n) for a in arms]
    best, _ = prob_best_normal([a.mean for a in arms], sds)
    assert result.p_best == pytest.approx(best, abs=1e-12)
    with pytest.raises(ValueError, match="needs conversions"):
        compute_weights(arms, planned=(0.5, 0.5), settings=SETTINGS, binary=False)
    with pytest.raises(ValueError, match="do not pass them separately"):
        compute_weights(binary((100, 50), (100, 50)), planned=(0.5, 0.5), settings=SETTINGS,
                        binary=True, conversions=[50, 50])
    flat = [ArmStats(200, 2000.0, 20000.0), arms[1]]  # every unit spent exactly 10
    held = compute_weights(flat, planned=(0.5, 0.5), settings=SETTINGS, binary=False,
                           conversions=[200, purchasers[1]])
    assert held.phase is BanditPhase.BURN_IN and "same value" in held.detail


def test_small_segments_follow_the_global_weights() -> None:
    overall = binary((20_000, 800), (20_000, 1000), (20_000, 1200))
    global_w = compute_weights(overall, planned=EQUAL, settings=SETTINGS, binary=True)
    noisy = binary((30, 3), (30, 1), (30, 0))  # arm 0 "wins" 3/30 by chance
    small = segment_weights(noisy, overall, planned=EQUAL, settings=SETTINGS, binary=True)
    unshrunk = compute_weights(noisy, planned=EQUAL,
                               settings=BanditSettings(min_units=0, min_conversions=0),
                               binary=True)
    assert unshrunk.weights[0] > 0.6  # what chasing the noise would do
    assert small.weights[2] > small.weights[0]
    assert abs(small.weights[2] - global_w.weights[2]) < abs(unshrunk.weights[2]
                                                             - global_w.weights[2])
    # A segment with lots of data where arm 0 really is better moves away from the global.
    strong = binary((20_000, 1600), (20_000, 1000), (20_000, 1000))
    big = segment_weights(strong, overall, planned=EQUAL, settings=SETTINGS, binary=True)
    assert big.weights[0] > 0.95
    # An empty segment gets exactly the prior: Beta(m p_g, m (1 - p_g)).
    empty = segment_weights(binary((0, 0), (0, 0), (0, 0)), overall, planned=EQUAL,
                            settings=SETTINGS, binary=True)
    rates = [(1 + a.sum) / (2 + a.n) for a in overall]
    m = SETTINGS.segment_prior_strength
    best, _ = prob_best_beta([m * r for r in rates], [m * (1 - r) for r in rates])
    assert empty.p_best == pytest.approx(best, abs=1e-12)


def test_segment_burn_in_is_judged_on_the_overall_counts() -> None:
    result = segment_weights(binary((5000, 500), (5000, 100)), binary((90, 40), (5000, 100)),
                             planned=(0.5, 0.5), settings=SETTINGS, binary=True)
    assert result.phase is BanditPhase.BURN_IN


def simulate(rng: np.random.Generator, rates: np.ndarray, visitors: int, batch: int,
             bandit: bool) -> tuple[float, np.ndarray, float]:
    """Returns (expected regret, final weights, smallest weight ever published)."""
    k = len(rates)
    planned = tuple([1.0 / k] * k)
    weights = np.array(planned)
    arms = [ArmStats(0)] * k
    regret, smallest = 0.0, 1.0
    for _ in range(visitors // batch):
        shown = rng.multinomial(batch, weights)
        converted = rng.binomial(shown, rates)
        arms = [a + ArmStats.binary(int(n), int(c))
                for a, n, c in zip(arms, shown, converted, strict=True)]
        regret += float(shown @ (rates.max() - rates))
        if bandit:
            result = compute_weights(arms, planned=planned, settings=SETTINGS, binary=True)
            weights = np.array(result.weights)
            if result.phase is BanditPhase.THOMPSON:
                smallest = min(smallest, float(weights.min()))
    return regret, weights, smallest


def test_simulation_finds_the_best_arm_and_cuts_regret() -> None:
    rates = np.array([0.04, 0.05, 0.06])
    regret, final, smallest = simulate(np.random.default_rng(20250301), rates, 50_000, 1000,
                                       bandit=True)
    equal_regret, _, _ = simulate(np.random.default_rng(20250301), rates, 50_000, 1000,
                                  bandit=False)
    assert final[2] >= 0.8
    assert smallest >= SETTINGS.floor - 1e-12
    assert regret < 0.5 * equal_regret
    assert equal_regret == pytest.approx(500, rel=0.1)  # 50,000 x (0.02 + 0.01) / 3
