"""Multiple comparisons across arms x goals (statistics.md, "Health checks").

- Holm (1979), family-wise error: sort p ascending, adj_(i) = max_{j<=i} min(1, (m-j+1) p_(j)).
- Benjamini-Hochberg (1995), false discovery rate:
  adj_(i) = min_{j>=i} min(1, m p_(j) / j).

Adjusted intervals: Holm has no matching intervals, so, as gbstats does, Holm's intervals
use the Bonferroni level alpha / m. They are conservative: an interval that excludes 0 is
always a Holm rejection, but Holm may reject a comparison whose interval still touches 0
(the report then shows the adjusted p-value next to the interval). BH's intervals use the
false-coverage-rate level of Benjamini & Yekutieli (2005), alpha R / m with R the number of
BH rejections (alpha / m when there are none).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum


class Correction(StrEnum):
    NONE = "none"
    HOLM = "holm"
    BH = "benjamini-hochberg"


def holm(ps: Sequence[float]) -> tuple[float, ...]:
    """Holm step-down adjusted p-values, in the input order."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * _p(ps[i])))
        adjusted[i] = running
    return tuple(adjusted)


def benjamini_hochberg(ps: Sequence[float]) -> tuple[float, ...]:
    """Benjamini-Hochberg step-up adjusted p-values, in the input order."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i], reverse=True)
    adjusted = [0.0] * m
    running = 1.0
    for back, i in enumerate(order):
        running = min(running, m * _p(ps[i]) / (m - back))
        adjusted[i] = running
    return tuple(adjusted)


def adjust(ps: Sequence[float], method: Correction) -> tuple[float, ...]:
    if method is Correction.HOLM:
        return holm(ps)
    if method is Correction.BH:
        return benjamini_hochberg(ps)
    return tuple(_p(p) for p in ps)


def interval_alpha(method: Correction, alpha: float, adjusted: Sequence[float]) -> float:
    """The alpha at which to build intervals that go with the adjusted p-values."""
    m = len(adjusted)
    if method is Correction.NONE or m <= 1:
        return alpha
    if method is Correction.HOLM:
        return alpha / m
    rejections = sum(1 for p in adjusted if p < alpha)
    return alpha * max(rejections, 1) / m


def _p(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"multiple comparisons: {p!r} is not a p-value")
    return p
