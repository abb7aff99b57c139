"""Experiment statistics on per-arm sufficient statistics (see statistics.md).

Pure functions and frozen dataclasses; numpy and scipy for distribution functions only.
Names are imported on first use (PEP 562): a proxy worker that only needs ``ArmStats`` does
not load scipy and numpy (about 70 MB of memory and a second of start-up per worker).
Whenever a number would be meaningless the functions return :class:`NotEnoughData` with a
named :class:`Insufficient` reason instead of NaN, 0 or an exception.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "Alternative": "frequentist",
    "ArmStats": "arm",
    "BayesResult": "bayesian",
    "Correction": "multiple",
    "CupedArm": "cuped",
    "DEFAULT_TUNING": "sequential",
    "Difference": "frequentist",
    "Estimate": "frequentist",
    "GaussianPrior": "bayesian",
    "Insufficient": "arm",
    "Interval": "arm",
    "MetricKind": "arm",
    "NotEnoughData": "arm",
    "PowerHint": "power",
    "SRM_THRESHOLD": "health",
    "SequentialResult": "sequential",
    "SrmResult": "health",
    "TestResult": "frequentist",
    "adjust": "multiple",
    "benjamini_hochberg": "multiple",
    "beta_b_beats_a": "best",
    "cs_halfwidth": "sequential",
    "cuped_estimate": "cuped",
    "cuped_theta": "cuped",
    "estimate": "frequentist",
    "expected_from_weights": "health",
    "gaussian_effect": "bayesian",
    "holm": "multiple",
    "interval_alpha": "multiple",
    "msprt_p": "sequential",
    "prob_best_beta": "best",
    "prob_best_normal": "best",
    "running_intersection": "sequential",
    "running_min_p": "sequential",
    "sequential_rho": "sequential",
    "sequential_test": "sequential",
    "srm_check": "health",
    "t_test": "frequentist",
    "visitors_needed": "power",
    "welch_df": "frequentist",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'experiments.stats' has no attribute {name!r}")
    value = getattr(import_module(f"experiments.stats.{module}"), name)
    globals()[name] = value
    return value

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
