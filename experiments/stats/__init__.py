"""Experiment statistics on per-arm sufficient statistics (see statistics.md).

Pure functions and frozen dataclasses; numpy and scipy for distribution functions only.
Whenever a number would be meaningless the functions return :class:`NotEnoughData` with a
named :class:`Insufficient` reason instead of NaN, 0 or an exception.
"""

from experiments.stats.arm import ArmStats, Insufficient, Interval, MetricKind, NotEnoughData
from experiments.stats.bayesian import BayesResult, GaussianPrior, gaussian_effect
from experiments.stats.best import beta_b_beats_a, prob_best_beta, prob_best_normal
from experiments.stats.cuped import CupedArm, cuped_estimate, cuped_theta
from experiments.stats.frequentist import (
    Alternative,
    Difference,
    Estimate,
    TestResult,
    estimate,
    t_test,
    welch_df,
)
from experiments.stats.health import SRM_THRESHOLD, SrmResult, expected_from_weights, srm_check
from experiments.stats.multiple import (
    Correction,
    adjust,
    benjamini_hochberg,
    holm,
    interval_alpha,
)
from experiments.stats.power import PowerHint, visitors_needed
from experiments.stats.sequential import (
    DEFAULT_TUNING,
    SequentialResult,
    cs_halfwidth,
    msprt_p,
    running_intersection,
    running_min_p,
    sequential_rho,
    sequential_test,
)

__all__ = [
    "DEFAULT_TUNING", "SRM_THRESHOLD", "Alternative", "ArmStats", "BayesResult", "Correction",
    "CupedArm", "Difference", "Estimate", "GaussianPrior", "Insufficient", "Interval",
    "MetricKind", "NotEnoughData", "PowerHint", "SequentialResult", "SrmResult", "TestResult",
    "adjust", "benjamini_hochberg", "beta_b_beats_a", "cs_halfwidth", "cuped_estimate",
    "cuped_theta", "estimate", "expected_from_weights", "gaussian_effect", "holm",
    "interval_alpha", "msprt_p", "prob_best_beta", "prob_best_normal", "running_intersection",
    "running_min_p", "sequential_rho", "sequential_test", "srm_check", "t_test",
    "visitors_needed", "welch_df",
]
