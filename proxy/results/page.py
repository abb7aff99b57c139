"""The results pages as HTML: the list of experiments and one experiment in detail.

Pure functions returning whole documents. No JavaScript and nothing fetched from elsewhere
(styles inline, charts inline SVG, a data: favicon), so the pages work offline, under a strict
Content-Security-Policy, and on a phone (one column, tables scroll sideways). Every value
from the outside is escaped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from urllib.parse import quote

from experiments.model import Goal
from proxy.results.figures import goal_chart, share_chart
from proxy.results.summary import (
    ExperimentReport,
    allocation_text,
    cuped_note,
    format_share,
    goal_table,
    guardrail_table,
)

CSS = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;
background:#f5f5f7}
main{max-width:980px;margin:0 auto;padding:16px}
h1{font-size:1.5rem;margin:.4em 0}h2{font-size:1.15rem;margin:1.4em 0 .4em}
a{color:#0061a8}.meta{color:#555;margin:.2em 0 .8em}
.card{background:#fff;border-radius:10px;padding:14px 16px;margin:12px 0;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:.8rem;
background:#e8e8ed;margin-left:6px;vertical-align:middle}
.badge.running{background:#d9f2e3}.badge.ended{background:#e8e8ed}
.badge.scheduled{background:#fff1cc}
.decision{border-left:5px solid #0061a8;padding:8px 12px;background:#eef5fb;margin:10px 0}
.decision.ship{border-color:#1a7f37;background:#e9f7ee}
.decision.worse{border-color:#b35900;background:#fff4e5}
.decision.error,.decision.not_enough_data{border-color:#777;background:#f0f0f0}
.alert{border:3px solid #c00;background:#fde8e8;color:#900;padding:10px 12px;font-weight:700;
margin:10px 0;border-radius:6px}
.arms{list-style:none;padding:0;margin:6px 0;display:flex;flex-wrap:wrap;gap:6px}
.arms li{background:#f0f0f5;border-radius:6px;padding:2px 8px;font-size:.9rem}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-size:.92rem;background:#fff}
th,td{padding:6px 8px;text-align:right;border-bottom:1px solid #e5e5ea;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{font-weight:600;color:#444}
figure{margin:10px 0;max-width:760px}svg.chart{width:100%;height:auto;display:block}
.warn{color:#8a4b00}.downloads a{margin-right:14px}
@media (max-width:600px){main{padding:8px}.card{padding:10px}th,td{padding:4px 5px}}
"""


def _document(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta name=\"robots\" content=\"noindex\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def experiment_url(prefix: str, experiment_id: str, suffix: str = "") -> str:
    return f"{prefix}results/{quote(experiment_id, safe='')}{suffix}"


def _window(since: str | None, until: str | None) -> str:
    if since is None and until is None:
        return "all days"
    return f"{since or 'first day'} to {until or 'today'}"


def render_index(reports: Sequence[ExperimentReport], prefix: str, generated_at: datetime,
                 since: str | None = None, until: str | None = None) -> str:
    cards = [_card(r, prefix) for r in reports] or [
        "<p class=\"card\">No experiments are defined yet: add <code>[[experiment]]</code> "
        "tables to a rules file.</p>"]
    body = (f"<h1>Experiments</h1><p class=\"meta\">{escape(_window(since, until))}; "
            f"computed {escape(generated_at.strftime('%Y-%m-%d %H:%M UTC'))}. "
            f"<span class=\"downloads\"><a href=\"{escape(prefix)}results.json\">JSON</a></span>"
            f"</p>{''.join(cards)}")
    return _document("Kairos results", body)


def _card(report: ExperimentReport, prefix: str) -> str:
    units = report.units
    total = sum(units.values())
    arms = "".join(
        f"<li>{escape(a.id)} · {escape(format_share(units[a.id] / total) if total else '-')}"
        f" · {units[a.id]:,} visitors</li>" for a in report.experiment.arms)
    return (f"<section class=\"card experiment\" data-experiment=\"{escape(report.id)}\">"
            f"<h2><a href=\"{escape(experiment_url(prefix, report.id))}\">"
            f"{escape(report.id)}</a>{_badge(report)}</h2>"
            f"<p class=\"meta\">{escape(allocation_text(report.experiment))}; "
            f"{escape(_span(report))}</p><ul class=\"arms\">{arms}</ul>"
            f"{_alert(report)}{_decision(report)}</section>")


def _badge(report: ExperimentReport) -> str:
    s = report.status.value
    return f"<span class=\"badge {s}\">{s}</span>"


def _span(report: ExperimentReport) -> str:
    days, total = report.days, sum(report.units.values())
    if not days:
        return "no data yet"
    count = f"{len(days)} day{'s' if len(days) != 1 else ''}"
    return f"{count}, {days[0]} to {days[-1]}, {total:,} visitors"


def _alert(report: ExperimentReport) -> str:
    if not report.untrusted:
        return ""
    return ("<div class=\"alert\" role=\"alert\">Sample ratio mismatch: do not trust these "
            "results. The arms did not get the traffic their weights promise, so something "
            "other than the variants differs between them.</div>")


def _decision(report: ExperimentReport) -> str:
    return (f"<p class=\"decision {escape(report.decision_kind)}\">"
            f"{escape(report.decision_text)}</p>")


def render_detail(report: ExperimentReport, prefix: str, generated_at: datetime) -> str:
    parts = [f"<p><a href=\"{escape(prefix)}results\">← all experiments</a></p>",
             f"<h1>{escape(report.id)}{_badge(report)}</h1>",
             f"<p class=\"meta\">{escape(allocation_text(report.experiment))}; "
             f"{escape(_span(report))}; {escape(_window(report.since, report.until))}; "
             f"computed {escape(generated_at.strftime('%Y-%m-%d %H:%M UTC'))}</p>",
             _alert(report), _decision(report)]
    for goal in report.experiment.goals:
        parts.append(_goal_section(report, goal))
    share = share_chart(report)
    if share:
        parts.append(f"<h2>Traffic share</h2><figure>{share}</figure>")
    parts.append(_guardrail_table(report))
    if report.warnings:
        parts.append("<h2>Warnings</h2><ul class=\"warn\">" + "".join(
            f"<li>{escape(w)}</li>" for w in report.warnings) + "</ul>")
    parts.append(
        "<h2>Download</h2><p class=\"downloads\">"
        f"<a href=\"{escape(experiment_url(prefix, report.id, '.json'))}\">JSON</a>"
        f"<a href=\"{escape(experiment_url(prefix, report.id, '.csv'))}\">daily counts (CSV)</a>"
        "</p>")
    return _document(f"{report.id} - Kairos results", "".join(parts))


def _goal_section(report: ExperimentReport, goal: Goal) -> str:
    chart = goal_chart(report, goal)
    title = f"{goal.id}{' (primary)' if goal.primary else ''}"
    note = cuped_note(report, goal)
    cuped = ("" if note is None
             else f"<p class=\"meta cuped\">{escape(note[0].upper() + note[1:])}.</p>")
    return (f"<section class=\"goal\" data-goal=\"{escape(goal.id)}\"><h2>{escape(title)}</h2>"
            f"{_table(goal_table(report, goal))}{cuped}"
            f"{f'<figure>{chart}</figure>' if chart else ''}</section>")


def _guardrail_table(report: ExperimentReport) -> str:
    rows = guardrail_table(report)
    return "" if rows is None else f"<h2>Guardrails</h2>{_table(rows)}"


def _table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows[1:])
    return (f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def render_message(title: str, message: str, hint: str = "") -> str:
    """A plain page for 401, 404, 503: what happened and what to do."""
    extra = f"<p>{escape(hint)}</p>" if hint else ""
    return _document(title, f"<h1>{escape(title)}</h1><p class=\"message\">{escape(message)}"
                            f"</p>{extra}")
