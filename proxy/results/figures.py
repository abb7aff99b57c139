"""The charts of a report: which numbers become which series (charts.py draws them).

Pure. The x axis is the calendar from the first to the last day with counts, so a day
without traffic is a gap in time, not a squeezed-out point.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from experiments.model import Allocation, Goal
from proxy.results.charts import Point, Series, colour, line_chart
from proxy.results.summary import ExperimentReport, arm_interval, format_value, kind_of


def calendar(days: tuple[str, ...]) -> list[str]:
    """Every UTC day from the first to the last of ``days`` (sorted ``YYYY-MM-DD``)."""
    if not days:
        return []
    first, last = date.fromisoformat(days[0]), date.fromisoformat(days[-1])
    return [(first + timedelta(d)).isoformat() for d in range((last - first).days + 1)]


def _x(day: str, first: str) -> float:
    return float((date.fromisoformat(day) - date.fromisoformat(first)).days)


def goal_chart(report: ExperimentReport, goal: Goal) -> str:
    """Cumulative conversion rate (or mean per visitor) per arm, day by day, with each arm's
    95% interval as a band. Empty string when the counts cannot be read as statistics (the
    report's ``problem`` says why)."""
    try:
        series = report.counts.series(goal.id)
    except ValueError:
        return ""
    labels = calendar(report.days)
    kind = kind_of(goal)
    drawn = []
    for k, arm in enumerate(report.experiment.arms):
        points = []
        for day, by_arm in series:
            stats = by_arm[arm.id]
            if stats.n == 0:
                continue
            band = arm_interval(stats, kind)
            points.append(Point(_x(day, labels[0]), stats.mean, *(band or (None, None))))
        drawn.append(Series(arm.id, tuple(points), colour(k)))
    what = "conversion rate" if goal.binary else "mean per visitor"
    return line_chart(f"{report.id}: cumulative {what} on {goal.id}, with 95% intervals",
                      [label[5:] for label in labels], drawn,
                      y_format=lambda v: format_value(goal, v).replace(".00", ""),
                      chart_id=f"goal-{goal.id}")


def share_chart(report: ExperimentReport) -> str:
    """Traffic share per arm, day by day (solid), and the bandit's weights in force (dashed
    steps). Empty string for fixed allocations: their share is a flat line worth no chart."""
    if report.experiment.allocation is not Allocation.BANDIT or not report.days:
        return ""
    labels = calendar(report.days)
    first = labels[0]
    start = datetime.fromisoformat(first).replace(tzinfo=UTC)
    end_x = float(len(labels) - 1)
    drawn = []
    for k, arm in enumerate(report.experiment.arms):
        points = []
        for d in report.counts.days:
            total = sum(d.units.values())
            if total:
                points.append(Point(_x(d.day, first), d.units.get(arm.id, 0) / total))
        drawn.append(Series(arm.id, tuple(points), colour(k)))
    for k, arm in enumerate(report.experiment.arms):
        steps = []
        for period in report.counts.weights.periods:
            x = min(max((period.start - start).total_seconds() / 86_400, 0.0), end_x)
            steps.append(Point(x, period.weights[k]))
        if steps:
            steps.append(Point(end_x, steps[-1].y))
            drawn.append(Series(f"{arm.id} weight", tuple(steps), colour(k), dashed=True,
                                step=True))
    return line_chart(f"{report.id}: traffic share per day and bandit weights",
                      [label[5:] for label in labels], drawn,
                      y_format=lambda v: f"{v * 100:.0f}%", y_range=(0.0, 1.0),
                      chart_id="share")
