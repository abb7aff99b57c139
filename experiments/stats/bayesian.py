"""Bayesian reading of an effect estimate: a Gaussian model on the effect (gbstats'
``EffectBayesianABTest``; statistics.md, "Bayesian").

Likelihood d ~ N(delta, se^2); prior flat (the default) or proper N(mu0, v0):

    precision = 1/se^2 + 1/v0,  mean = (d/se^2 + mu0/v0) / precision.

Chance to beat control = Phi(mu / sigma); credible interval mu +/- z_{1-alpha/2} sigma;
risk (expected loss) of keeping the control and of shipping B, in closed form for a normal:

    keep control: E[max(delta, 0)]  = mu Phi(mu/sigma) + sigma phi(mu/sigma)
    ship B:       E[max(-delta, 0)] = sigma phi(mu/sigma) - mu Phi(-mu/sigma)

(equal to [P(delta>0) E(delta | delta>0), -P(delta<0) E(delta | delta<0)]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as sps

from experiments.stats.arm import Interval
from experiments.stats.frequentist import Estimate


@dataclass(frozen=True, slots=True)
class GaussianPrior:
    """A proper prior on the effect, in the units of the estimate (relative or absolute)."""

    mean: float
    variance: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and self.variance > 0 and math.isfinite(self.variance)):
            raise ValueError(f"GaussianPrior: mean {self.mean!r} must be finite and variance "
                             f"{self.variance!r} finite and > 0")


@dataclass(frozen=True, slots=True)
class BayesResult:
    estimate: Estimate
    mean: float              # posterior mean of the effect
    sd: float                # posterior standard deviation
    chance_to_beat: float    # P(delta > 0)
    ci: Interval             # equal-tailed credible interval
    risk_keep_control: float
    risk_ship: float


def gaussian_effect(est: Estimate, alpha: float = 0.05,
                    prior: GaussianPrior | None = None) -> BayesResult:
    """Posterior of the effect under a flat (``prior=None``) or proper Gaussian prior."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha {alpha!r} must be strictly between 0 and 1")
    precision = 1.0 / est.se**2
    weighted = est.point * precision
    if prior is not None:
        precision += 1.0 / prior.variance
        weighted += prior.mean / prior.variance
    mu, sigma = weighted / precision, math.sqrt(1.0 / precision)
    z = mu / sigma
    density = float(sps.norm.pdf(z))
    above, below = float(sps.norm.cdf(z)), float(sps.norm.sf(z))
    half = float(sps.norm.isf(alpha / 2)) * sigma
    return BayesResult(
        estimate=est, mean=mu, sd=sigma, chance_to_beat=above,
        ci=Interval(mu - half, mu + half),
        risk_keep_control=max(0.0, mu * above + sigma * density),
        risk_ship=max(0.0, sigma * density - mu * below),
    )
