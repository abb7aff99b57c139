"""Results as JSON (schema ``kairos.results/1``, SCHEMA.md beside this file) and as CSV of
daily counts, for the analyst's own tools.

Pure: reports in, text out. The JSON carries the statistics Kairos computed *and* the raw
daily counts they came from, so anyone can recompute them; the CSV carries the counts only,
one row per day, arm and goal (a tidy table: filter and sum in any tool). Counts with the
CUPED covariate (previous visits) add its sums, to the JSON's daily entries and as four more
CSV columns; counts without it give exactly the documents they always gave.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from experiments.model import Goal
from proxy.results.summary import ExperimentReport, allocation_text
from proxy.store.experiment_counts import CovariateTotals, DayCounts

SCHEMA = "kairos.results/1"
CSV_HEADER = ("experiment", "day", "arm", "units", "goal", "conversions", "sum", "sum_squares")
# Appended when some experiment's counts carry the CUPED covariate x (SCHEMA.md).
CSV_COVARIATE_HEADER = ("x_units", "x_sum", "x_sum_squares", "sum_xy")


def document(reports: Sequence[ExperimentReport], generated_at: datetime, *,
             since: str | None = None, until: str | None = None) -> dict[str, Any]:
    """The one JSON document: every endpoint and ``kairos results --format json`` give it
    (one experiment or several)."""
    return {
        "schema": SCHEMA,
        "generated_at": generated_at.astimezone(UTC).isoformat(timespec="seconds"),
        "window": {"since": since, "until": until},
        "experiments": [experiment_dict(r) for r in reports],
    }


def to_json(reports: Sequence[ExperimentReport], generated_at: datetime, *,
            since: str | None = None, until: str | None = None) -> str:
    return json.dumps(document(reports, generated_at, since=since, until=until), indent=2,
                      allow_nan=False) + "\n"


def experiment_dict(report: ExperimentReport) -> dict[str, Any]:
    exp, counts = report.experiment, report.counts
    return {
        "id": exp.id,
        "status": report.status.value,
        "allocation": exp.allocation.value,
        "allocation_text": allocation_text(exp),
        "start": None if exp.start is None else exp.start.isoformat(),
        "end": None if exp.end is None else exp.end.isoformat(),
        "arms": [{"id": a.id, "planned_weight": a.weight, "units": report.units[a.id]}
                 for a in exp.arms],
        "goals": [{"id": g.id, "kind": g.kind.value, "primary": g.primary,
                   "metric": "binary" if g.binary else "mean"} for g in exp.goals],
        "days": list(report.days),
        "decision": {"kind": report.decision_kind, "text": report.decision_text,
                     "arm": None if report.result is None else report.result.decision.arm,
                     "trustworthy": not report.untrusted and report.result is not None},
        "warnings": list(report.warnings),
        "summary": None if report.result is None else report.result.to_json_dict(),
        "daily": [_day(d, exp.goals, counts.has_covariate) for d in counts.days],
        "weights": [{"at": p.start.isoformat(), "weights": dict(zip(counts.arms, p.weights,
                                                                    strict=True))}
                    for p in counts.weights.periods],
        "guardrails": {arm: {"requests": g.requests, "latency_ms_sum": g.latency_ms,
                             "latency_ms_sum_squares": g.latency_ms_sq, "errors_5xx": g.errors,
                             "bytes": g.bytes}
                       for arm, g in counts.guardrail_totals().items()},
    }


def _day(d: DayCounts, goals: Sequence[Goal], covariate: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "day": d.day,
        "units": dict(d.units),
        "goals": {g.id: {arm: {"conversions": t.conversions, "sum": t.sum,
                               "sum_squares": t.sum_squares,
                               **({"sum_xy": t.sum_xy} if covariate else {})}
                         for arm, t in d.goals.get(g.id, {}).items()} for g in goals},
    }
    if covariate:
        out["covariate"] = {arm: {"units": x.units, "sum": x.sum, "sum_squares": x.sum_squares}
                            for arm, x in d.covariates.items()}
    return out


def daily_csv(reports: Sequence[ExperimentReport]) -> str:
    """One row per experiment, day, arm and goal; zeros where nothing happened that day.

    ``units`` are visitors first exposed that day (repeated on each goal's row: sum it over
    the rows of one goal). ``sum_squares`` of one day is a sum of deltas; only sums from the
    first day on are sums of squared per-visitor totals (SCHEMA.md explains). When some
    counts carry the CUPED covariate, four columns follow: units with a covariate, sum of x
    and of x^2 (per day and arm, repeated like ``units``), and the goal's sum of x * value.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    covariate = any(r.counts.has_covariate for r in reports)
    writer.writerow(CSV_HEADER + (CSV_COVARIATE_HEADER if covariate else ()))
    for r in reports:
        for d in r.counts.days:
            for arm in r.counts.arms:
                units = d.units.get(arm, 0)
                x = d.covariates.get(arm, CovariateTotals())
                for goal in r.counts.goals:
                    t = d.goals.get(goal, {}).get(arm)
                    row = [r.id, d.day, arm, units, goal, 0 if t is None else t.conversions,
                           _number(0.0 if t is None else t.sum),
                           _number(0.0 if t is None else t.sum_squares)]
                    if covariate:
                        row += [x.units, _number(x.sum), _number(x.sum_squares),
                                _number(0.0 if t is None else t.sum_xy)]
                    writer.writerow(row)
    return out.getvalue()


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
