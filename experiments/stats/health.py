"""Sample ratio mismatch: are the units where the weights say they should be?
(statistics.md, "Health checks"; gbstats ``compute_srm`` / ``check_srm``).

Pearson's chi-square of the observed units per arm against the expected ones, df = K - 1,
alarm at p < 0.001. Expected units are N w_k for fixed weights and, with changing bandit
weights, sum over periods of N_period w_period,k (:func:`experiments.history.expected_units`).

An arm expected to get nothing (weight 0 throughout) is left out of the statistic and of
the degrees of freedom while it indeed got nothing; if it got units anyway the mismatch is
certain: p = 0 and chi2 = inf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as sps

from experiments.stats.arm import Insufficient, NotEnoughData

SRM_THRESHOLD = 0.001


@dataclass(frozen=True, slots=True)
class SrmResult:
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    chi2: float
    df: int
    p: float
    threshold: float

    @property
    def alarm(self) -> bool:
        return self.p < self.threshold


def expected_from_weights(total: int, weights: Sequence[float]) -> tuple[float, ...]:
    """N w_k: the expected units per arm under fixed weights."""
    return tuple(total * w for w in weights)


def srm_check(observed: Sequence[int], expected: Sequence[float],
              threshold: float = SRM_THRESHOLD) -> SrmResult | NotEnoughData:
    """Chi-square goodness of fit of ``observed`` units to ``expected`` units."""
    if len(observed) != len(expected):
        raise ValueError(f"srm_check: {len(observed)} observed vs {len(expected)} expected")
    if any(o < 0 for o in observed) or any(e < 0 for e in expected):
        raise ValueError(f"srm_check: negative counts in {list(observed)}, {list(expected)}")
    total_o, total_e = sum(observed), math.fsum(expected)
    if total_o == 0:
        return NotEnoughData(Insufficient.EMPTY_ARM, "no units have been assigned yet")
    if abs(total_o - total_e) > 1e-6 * max(total_o, 1):
        raise ValueError(f"srm_check: expected units add up to {total_e:g}, observed to "
                         f"{total_o}; the expectation must be for the same units")
    result = (tuple(int(o) for o in observed), tuple(float(e) for e in expected))
    if any(e == 0 and o > 0 for o, e in zip(observed, expected, strict=True)):
        return SrmResult(*result, chi2=math.inf, df=len(observed) - 1, p=0.0,
                         threshold=threshold)
    pairs = [(o, e) for o, e in zip(observed, expected, strict=True) if e > 0]
    if len(pairs) < 2:
        return NotEnoughData(Insufficient.NOT_COMPUTED,
                             "only one arm can receive units, so there is no ratio to check")
    chi2 = math.fsum((o - e) ** 2 / e for o, e in pairs)
    df = len(pairs) - 1
    return SrmResult(*result, chi2=chi2, df=df, p=float(sps.chi2.sf(chi2, df)),
                     threshold=threshold)
