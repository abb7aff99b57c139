"""How many more visitors until a chosen relative effect would be detected (fixed horizon).

Two-sample z approximation at the current control rate (statistics.md: "power/duration
hint"): with control share w_A and treatment share w_B of all N visitors,

    N = (z_{1-alpha/2} + z_{power})^2 (s_A^2 / w_A + s_B^2 / w_B) / (mde m_A)^2

where s_B^2 = p_B (1 - p_B), p_B = p_A (1 + mde) for binary goals and s_B^2 = s_A^2 for
mean goals. It is a fixed-horizon count: the always-valid (sequential) p-values need more,
so read it as a lower bound when deciding on sequential results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as sps

from experiments.stats.arm import ArmStats, Insufficient, MetricKind, NotEnoughData


@dataclass(frozen=True, slots=True)
class PowerHint:
    mde: float            # relative effect to detect, e.g. 0.05 for +5%
    power: float
    alpha: float
    total_needed: int     # all visitors of the experiment, every arm included
    still_needed: int     # total_needed minus the visitors so far, at least 0


def visitors_needed(
    control: ArmStats, kind: MetricKind, current_total: int, *, mde: float = 0.05,
    shares: tuple[float, float] = (0.5, 0.5), alpha: float = 0.05, power: float = 0.8,
) -> PowerHint | NotEnoughData:
    """Visitors still needed to detect ``mde`` between the control and one treatment whose
    traffic shares are ``shares`` = (w_A, w_B) of the experiment's visitors."""
    if not (0 < alpha < 1 and 0 < power < 1 and mde != 0 and math.isfinite(mde)):
        raise ValueError(f"visitors_needed: alpha {alpha!r} and power {power!r} must be in "
                         f"(0, 1) and mde {mde!r} finite and non-zero")
    w_a, w_b = shares
    if not (w_a > 0 and w_b > 0):
        raise ValueError(f"visitors_needed: shares {shares!r} must both be > 0")
    if control.n < 2:
        return NotEnoughData(Insufficient.TOO_FEW_UNITS, f"the control has n = {control.n}")
    m_a = control.mean
    v_a = control.variance(kind)
    if control.mean_is_zero or v_a == 0.0:
        return NotEnoughData(Insufficient.NO_CONVERSIONS, "the control has no variation yet "
                             f"(mean {m_a:g}), so the effect size is unknown")
    if kind is MetricKind.BINARY:
        p_b = m_a * (1.0 + mde)
        if not 0.0 < p_b < 1.0:
            return NotEnoughData(Insufficient.NOT_COMPUTED, f"a {mde:+.1%} change of the "
                                 f"control rate {m_a:.2%} is not a rate")
        v_b = p_b * (1.0 - p_b)
    else:
        v_b = v_a
    z = float(sps.norm.isf(alpha / 2) + sps.norm.ppf(power))
    total = math.ceil(z * z * (v_a / w_a + v_b / w_b) / (mde * m_a) ** 2)
    return PowerHint(mde, power, alpha, total, max(0, total - current_total))
