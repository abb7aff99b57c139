"""One experiment's report: its definition, its counts and the statistics, assembled once.

Pure: :func:`build_report` takes the counts already read and the time to judge the status
by; the table, the page, the JSON and the CSV all render the same :class:`ExperimentReport`,
so the terminal and the browser never disagree. Rows are built here (:func:`goal_rows`) for
the same reason.

Where the counts carry the visitors' pre-exposure covariate (previous visits, recorded by
:mod:`proxy.experiment_runtime`), the effects are CUPED-adjusted (``summarise`` decides per
goal) and the tables say so: the effect column is headed "vs control (CUPED)", and two more
columns give the unadjusted effect and the change in its variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from experiments.model import Allocation, Experiment, Goal
from experiments.report import DecisionKind, variance_change
from experiments.results import ExperimentResult, SummaryOptions, summarise
from experiments.stats import ArmStats, Estimate, MetricKind, NotEnoughData
from proxy.store.experiment_counts import ExperimentCounts

DEFAULT_OPTIONS = SummaryOptions()
Z95 = 1.959963984540054  # the two-sided 95% normal quantile, for per-arm chart bands
COVARIATE = "previous visits"  # what x is (proxy.experiment_runtime.pre_exposure_covariate)


class Status(StrEnum):
    SCHEDULED = "scheduled"   # its start is still ahead
    RUNNING = "running"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class ExperimentReport:
    experiment: Experiment
    counts: ExperimentCounts
    status: Status
    result: ExperimentResult | None
    problem: str               # why there is no result ("" when there is one)
    warnings: tuple[str, ...]
    since: str | None = None
    until: str | None = None

    @property
    def id(self) -> str:
        return self.experiment.id

    @property
    def decision_kind(self) -> str:
        return "error" if self.result is None else self.result.decision.kind.value

    @property
    def decision_text(self) -> str:
        return self.problem if self.result is None else self.result.decision.text

    @property
    def untrusted(self) -> bool:
        """Sample ratio mismatch: shown before anything else, in red."""
        return self.decision_kind == DecisionKind.SAMPLE_RATIO_MISMATCH.value

    @property
    def days(self) -> tuple[str, ...]:
        return tuple(d.day for d in self.counts.days)

    @property
    def units(self) -> dict[str, int]:
        return self.counts.units()


def status_at(experiment: Experiment, now: datetime) -> Status:
    if experiment.start is not None and now < experiment.start:
        return Status.SCHEDULED
    if experiment.end is not None and now >= experiment.end:
        return Status.ENDED
    return Status.RUNNING


def build_report(experiment: Experiment, counts: ExperimentCounts, now: datetime, *,
                 since: str | None = None, until: str | None = None,
                 options: SummaryOptions = DEFAULT_OPTIONS) -> ExperimentReport:
    """The report of ``experiment`` from ``counts`` (an ExperimentCounts of the window).

    Counts that contradict each other, or a definition the counts do not fit, give a report
    with ``problem`` set instead of an exception: one broken experiment must not take the
    results of every other one down with it.
    """
    warnings = [f"ignored: {item}" for item in counts.ignored]
    history = counts.weights
    by_period = None
    if len(history.periods) > 1:
        by_period = counts.units_by_period()
        if by_period is None:
            warnings.append("the sample-ratio check is skipped: some exposures carry no "
                            "weight period, or one the capped weight log no longer has")
    status = status_at(experiment, now)
    try:
        cumulative = counts.cumulative()
        result = summarise(experiment, cumulative, history, options,
                           units_by_period=by_period, covariates=counts.covariates())
    except ValueError as exc:
        return ExperimentReport(experiment, counts, status, None, f"cannot analyse: {exc}",
                                tuple(warnings), since, until)
    return ExperimentReport(experiment, counts, status, result, "", tuple(warnings), since,
                            until)


@dataclass(frozen=True, slots=True)
class GoalRow:
    """One arm on one goal, as the table and the page show it."""

    arm: str
    is_control: bool
    units: int
    conversions: int
    value: float | None           # conversion rate or mean per visitor
    effect: float | None          # vs the control (relative unless options say absolute)
    ci: tuple[float, float] | None
    ci_level: float | None        # 0.975 for Holm over two comparisons, ...
    p: float | None               # adjusted, sequential when the options say so
    chance_to_beat: float | None
    p_best: float | None
    note: str                     # why a comparison is missing ("control", not enough data)
    unadjusted: float | None = None          # the effect without CUPED, when it is adjusted
    variance_reduction: float | None = None  # what CUPED took off the effect's variance


def goal_rows(report: ExperimentReport, goal: Goal) -> tuple[GoalRow, ...]:
    totals = report.counts.goal_totals(goal.id)
    units = report.units
    result = report.result
    summaries = {} if result is None else {(a.arm, a.goal): a for a in result.arms}
    comparisons = {} if result is None else {(c.arm, c.goal): c for c in result.comparisons}
    rows = []
    for k, arm in enumerate(report.experiment.arms):
        s = summaries.get((arm.id, goal.id))
        c = comparisons.get((arm.id, goal.id))
        row = GoalRow(arm.id, k == 0, units.get(arm.id, 0), totals[arm.id].conversions,
                      None if s is None else s.value, None, None, None, None, None,
                      None if s is None else s.p_best, "control" if k == 0 else "")
        if c is not None and isinstance(c.outcome, Estimate):
            ci = None if c.ci_adjusted is None else (c.ci_adjusted.lo, c.ci_adjusted.hi)
            level = None if c.ci_alpha is None else 1.0 - c.ci_alpha
            row = _with(row, effect=c.outcome.point, ci=ci, ci_level=level, p=c.p_adjusted,
                        chance_to_beat=None if c.bayes is None else c.bayes.chance_to_beat)
            if c.cuped is not None:
                row = _with(row, unadjusted=c.cuped.unadjusted.point,
                            variance_reduction=c.cuped.variance_reduction)
        elif c is not None and isinstance(c.outcome, NotEnoughData):
            row = _with(row, note="not enough data: " + c.outcome.reason.value.replace("_", " "))
        rows.append(row)
    return tuple(rows)


def _with(row: GoalRow, **changes: object) -> GoalRow:
    return replace(row, **changes)  # type: ignore[arg-type]


def kind_of(goal: Goal) -> MetricKind:
    return MetricKind.BINARY if goal.binary else MetricKind.MEAN


def arm_interval(stats: ArmStats, kind: MetricKind, z: float = Z95) -> tuple[float, float] | None:
    """A 95% interval of one arm's own rate or mean, for chart bands: Wilson for rates (sane
    at 0 conversions and small n), normal for means; None below the data it needs."""
    if stats.n == 0 or (kind is MetricKind.MEAN and stats.n < 2):
        return None
    if kind is MetricKind.BINARY:
        p, n = stats.mean, stats.n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)
    half = z * math.sqrt(stats.variance(kind) / stats.n)
    return stats.mean - half, stats.mean + half


def format_value(goal: Goal, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.2f}%" if goal.binary else f"{value:,.2f}"


def format_effect(value: float | None, report: ExperimentReport) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    relative = report.result is None or report.result.options.difference.value == "relative"
    return f"{value * 100:+.1f}%" if relative else f"{value:+.4g}"


def format_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def format_share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def allocation_text(experiment: Experiment) -> str:
    if experiment.allocation is Allocation.BANDIT:
        return "bandit (Thompson sampling)"
    return "fixed weights " + " / ".join(f"{arm.weight:.0%}" for arm in experiment.arms)


def cuped_note(report: ExperimentReport, goal: Goal) -> str | None:
    """One sentence on the CUPED adjustment of ``goal``'s effects; None when not applied."""
    result = report.result
    adjusted = [] if result is None else [c for c in result.comparisons
                                          if c.goal == goal.id and c.cuped is not None]
    if not adjusted:
        return None
    changes = ", ".join(f"{c.arm} {variance_change(c.cuped.variance_reduction)}"
                        for c in adjusted if c.cuped is not None)
    coverage = min(c.cuped.coverage for c in adjusted if c.cuped is not None)
    known = "" if coverage >= 1.0 else (f"; {coverage * 100:.0f}% of visitors have it, the "
                                        "others count as 0")
    return (f"effects adjusted with CUPED for {COVARIATE} before the first exposure "
            f"(variance of the effect: {changes}{known})")


def goal_table(report: ExperimentReport, goal: Goal) -> list[list[str]]:
    """Header and one row of display strings per arm: what the terminal and the page show.
    With CUPED the effect, interval and p are adjusted; two columns give the unadjusted
    effect and the change in variance."""
    rows = goal_rows(report, goal)
    level = next((r.ci_level for r in rows if r.ci_level is not None), 0.95)
    cuped = any(r.variance_reduction is not None for r in rows)
    out = [["arm", "visitors", "conversions", "rate" if goal.binary else "mean",
            "vs control (CUPED)" if cuped else "vs control", f"{level * 100:.4g}% CI", "p",
            "chance to beat", "P(best)", *(("unadjusted", "CUPED variance") if cuped else ())]]
    for r in rows:
        ci = "-" if r.ci is None else (f"{format_effect(r.ci[0], report)} to "
                                       f"{format_effect(r.ci[1], report)}")
        row = [r.arm, f"{r.units:,}", f"{r.conversions:,}", format_value(goal, r.value),
               r.note if r.note else format_effect(r.effect, report), ci, format_p(r.p),
               format_share(r.chance_to_beat), format_share(r.p_best)]
        if cuped:
            row += [format_effect(r.unadjusted, report), "-" if r.variance_reduction is None
                    else variance_change(r.variance_reduction)]
        out.append(row)
    return out


def guardrail_table(report: ExperimentReport) -> list[list[str]] | None:
    """Header and a row per arm of the guardrail counters; None when nothing was counted."""
    totals = report.counts.guardrail_totals()
    if not any(g.requests for g in totals.values()):
        return None
    out = [["arm", "pages", "mean latency", "5xx", "mean size"]]
    for arm, g in totals.items():
        n = g.requests
        out.append([arm, f"{n:,}", f"{g.latency_ms / n:,.0f} ms" if n else "-",
                    f"{g.errors / n * 100:.2f}%" if n else "-",
                    f"{g.bytes / n / 1024:,.1f} KiB" if n else "-"])
    return out
