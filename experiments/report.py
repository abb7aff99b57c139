"""Words, JSON and CSV for an :class:`~experiments.results.ExperimentResult`.

The decision reads the primary goal only, in this order:

1. ``sample_ratio_mismatch`` when the SRM check alarms: nothing else can be trusted;
2. ``ship`` when a treatment is significantly better than the control (adjusted p below
   alpha; the best such treatment is named), e.g.
   ``B beats control on checkout: +12.3% (95% CI +4.1% to +20.5%), sequential p = 0.004``;
3. ``worse`` when treatments are significantly worse and none is better;
4. ``not_enough_data`` when no comparison on the primary goal could be computed;
5. ``keep_collecting`` otherwise, with the leader and the power hint.

The interval shown is the one at the corrected level (97.5% for Holm over 2 comparisons),
sequential when the options say so; the p-value shown is the adjusted one. A CUPED-adjusted
effect says so after the p-value, with the variance reduction and the unadjusted effect:
``..., sequential p = 0.004; CUPED: variance -23%, unadjusted +11.8%``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any

from experiments.stats import (
    Correction,
    Difference,
    Estimate,
    Interval,
    NotEnoughData,
    PowerHint,
    SrmResult,
)

if TYPE_CHECKING:
    from experiments.model import Experiment
    from experiments.results import Comparison, ExperimentResult, SummaryOptions


class DecisionKind(StrEnum):
    SHIP = "ship"
    WORSE = "worse"
    KEEP_COLLECTING = "keep_collecting"
    SAMPLE_RATIO_MISMATCH = "sample_ratio_mismatch"
    NOT_ENOUGH_DATA = "not_enough_data"


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    arm: str | None  # the arm the decision is about, if one
    text: str


CSV_HEADER = ["experiment", "arm", "goal", "primary", "n", "value", "p_best", "effect",
              "ci_low", "ci_high", "p", "p_adjusted", "chance_to_beat", "status"]
# Appended when some comparison is CUPED-adjusted ("effect" is then the adjusted one).
CSV_CUPED_HEADER = ["effect_unadjusted", "cuped_theta", "cuped_variance_reduction"]


def decide(experiment: Experiment, comparisons: Sequence[Comparison],
           srm: SrmResult | NotEnoughData, power: PowerHint | NotEnoughData,
           options: SummaryOptions) -> Decision:
    control, goal = experiment.control.id, experiment.primary_goal.id
    if isinstance(srm, SrmResult) and srm.alarm:
        observed = " / ".join(f"{o:,}" for o in srm.observed)
        expected = " / ".join(f"{e:,.0f}" for e in srm.expected)
        return Decision(DecisionKind.SAMPLE_RATIO_MISMATCH, None,
                        f"sample ratio mismatch: do not trust (chi-square p = {srm.p:.2g} "
                        f"< {srm.threshold:g}; units {observed}, expected {expected})")
    primary = [c for c in comparisons if c.primary]
    tested = [c for c in primary if c.p_adjusted is not None]
    family = sum(1 for c in comparisons if c.p_adjusted is not None)
    significant = [c for c in tested if c.p_adjusted is not None
                   and c.p_adjusted < options.alpha]
    better = [c for c in significant if _point(c) > 0]
    worse = [c for c in significant if _point(c) < 0]
    if better:
        best = max(better, key=_point)
        return Decision(DecisionKind.SHIP, best.arm, f"{best.arm} beats {control} on {goal}: "
                        f"{_finding(best, options, family)}")
    if worse:
        text = "; ".join(f"{c.arm} is worse than {control} on {goal}: "
                         f"{_finding(c, options, family)}" for c in worse)
        return Decision(DecisionKind.WORSE, worse[0].arm if len(worse) == 1 else None, text)
    if not tested:
        details = "; ".join(f"{c.arm}: {c.outcome.detail}" for c in primary
                            if isinstance(c.outcome, NotEnoughData))
        return Decision(DecisionKind.NOT_ENOUGH_DATA, None, f"not enough data: {details}")
    leader = max(tested, key=_point)
    text = (f"keep collecting: no arm differs from {control} on {goal} yet "
            f"(leader {leader.arm} {_effect(_point(leader), options.difference)}, "
            f"{_p_text(leader, options, family)}{cuped_text(leader, options.difference)})")
    if isinstance(power, PowerHint) and power.still_needed > 0:
        text += f"; about {power.still_needed:,} more visitors to detect {power.mde:+.0%}"
    return Decision(DecisionKind.KEEP_COLLECTING, None, text)


def _point(c: Comparison) -> float:
    assert isinstance(c.outcome, Estimate)
    return c.outcome.point


def _finding(c: Comparison, options: SummaryOptions, family: int) -> str:
    effect = _effect(_point(c), options.difference)
    cuped = cuped_text(c, options.difference)
    if c.ci_adjusted is None or c.ci_alpha is None:
        return f"{effect}, {_p_text(c, options, family)}{cuped}"
    level = f"{(1 - c.ci_alpha) * 100:.4g}%"
    lo, hi = (_effect(v, options.difference) for v in (c.ci_adjusted.lo, c.ci_adjusted.hi))
    return f"{effect} ({level} CI {lo} to {hi}), {_p_text(c, options, family)}{cuped}"


def variance_change(reduction: float) -> str:
    """A variance reduction of 0.234 as "-23%" (an increase as "+5%")."""
    return f"{-reduction * 100:+.0f}%"


def cuped_text(c: Comparison, difference: Difference) -> str:
    """"; CUPED: variance -23%, unadjusted +11.8%" for an adjusted comparison, else ""."""
    if c.cuped is None:
        return ""
    return (f"; CUPED: variance {variance_change(c.cuped.variance_reduction)}, "
            f"unadjusted {_effect(c.cuped.unadjusted.point, difference)}")


def _effect(value: float, difference: Difference) -> str:
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{value * 100:+.1f}%" if difference is Difference.RELATIVE else f"{value:+.4g}"


def _p_text(c: Comparison, options: SummaryOptions, family: int) -> str:
    p = c.p_adjusted if c.p_adjusted is not None else c.p
    kind = "sequential p" if options.sequential else "p"
    shown = "< 0.001" if p is not None and p < 0.001 else f"= {p:.3f}"
    text = f"{kind} {shown}"
    if options.correction is not Correction.NONE and family > 1:
        text += f" ({options.correction} over {family} comparisons)"
    return text


def to_json_dict(result: ExperimentResult) -> dict[str, Any]:
    plain = _plain(result)
    assert isinstance(plain, dict)
    return plain


def _plain(value: Any) -> Any:
    if isinstance(value, NotEnoughData):
        return {"not_enough_data": value.reason.value, "detail": value.detail}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
               if f.name != "estimate"}  # repeated inside each test result: keep one
        for name in ("p", "alarm", "empty"):
            if isinstance(getattr(type(value), name, None), property):
                out[name] = _plain(getattr(value, name))
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueError("to_json_dict: NaN in a result; this is a bug, please report it")
        return None if math.isinf(value) else value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def csv_rows(result: ExperimentResult) -> list[list[str]]:
    by_key = {(c.arm, c.goal): c for c in result.comparisons}
    cuped = any(c.cuped is not None for c in result.comparisons)
    rows = [list(CSV_HEADER) + (list(CSV_CUPED_HEADER) if cuped else [])]
    for summary in result.arms:
        c = by_key.get((summary.arm, summary.goal))
        row = [result.experiment, summary.arm, summary.goal,
               str(summary.goal == result.primary_goal).lower(), str(summary.n),
               _cell(summary.value), _cell(summary.p_best)]
        if c is None:
            row += ["", "", "", "", "", "", "control"]
        elif isinstance(c.outcome, NotEnoughData):
            row += ["", "", "", "", "", "", f"not_enough_data:{c.outcome.reason}"]
        else:
            ci = c.ci_adjusted or Interval(math.nan, math.nan)
            row += [_cell(c.outcome.point), _cell(ci.lo), _cell(ci.hi), _cell(c.p),
                    _cell(c.p_adjusted),
                    _cell(c.bayes.chance_to_beat if c.bayes else None), "ok"]
        if cuped:
            adjusted = None if c is None else c.cuped
            row += ["", "", ""] if adjusted is None else [
                _cell(adjusted.unadjusted.point), _cell(adjusted.theta),
                _cell(adjusted.variance_reduction)]
        rows.append(row)
    return rows


def _cell(value: float | None) -> str:
    if value is None or math.isnan(value):
        return ""
    return f"{value:.10g}"
