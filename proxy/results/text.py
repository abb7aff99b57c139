"""``kairos results`` as text for a terminal: per experiment the decision in words, then a
table per goal. A sample ratio mismatch comes first, framed, in capitals: every number under
it is suspect, so nobody should read the numbers before seeing it.

Pure: reports in, text out (no colours, so the output pastes into a ticket unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy.results.summary import (
    ExperimentReport,
    allocation_text,
    cuped_note,
    goal_table,
    guardrail_table,
)


def render(reports: Sequence[ExperimentReport]) -> str:
    if not reports:
        return "no experiments defined (add [[experiment]] tables to a rules file)\n"
    return "\n".join(experiment_text(r) for r in reports)


def experiment_text(report: ExperimentReport) -> str:
    lines = [_headline(report), ""]
    if report.untrusted:
        banner = "!! SAMPLE RATIO MISMATCH: DO NOT TRUST THESE RESULTS !!"
        lines += ["  " + "!" * len(banner), "  " + banner, "  " + "!" * len(banner)]
    lines.append(f"  Decision: {report.decision_text}")
    for goal in report.experiment.goals:
        lines += ["", f"  {goal.id} ({'primary; ' if goal.primary else ''}"
                      f"{'conversion rate' if goal.binary else 'mean per visitor'})"]
        lines += _indent(table(goal_table(report, goal)))
        note = cuped_note(report, goal)
        if note is not None:
            lines.append(f"    {note}")
    guardrails = guardrail_table(report)
    if guardrails is not None:
        lines += ["", "  guardrails", *_indent(table(guardrails))]
    lines += [f"  warning: {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"


def _headline(report: ExperimentReport) -> str:
    days = report.days
    count = f"{len(days)} day{'s' if len(days) != 1 else ''}"
    span = f"{count} ({days[0]} to {days[-1]})" if days else "no data yet"
    total = sum(report.units.values())
    return (f"{report.id}: {report.status.value}, {allocation_text(report.experiment)}, "
            f"{span}, {total:,} visitors")


def table(rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell; the first column left-aligned, others right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in rows]


def _indent(lines: list[str]) -> list[str]:
    return ["  " + line for line in lines]
