"""What visitors may see and say: ``why`` they get what they get, and ``opt-out`` / ``opt-in``.

``explain()`` builds the one documented JSON shape (schema ``kairos.why/1``) that both
``/_kairos/why?format=json`` and ``kairos explain --format json`` print; the HTML page renders
the same data. Every value shown is escaped: context values come from the request.
"""

from __future__ import annotations

import datetime
import html
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from .context.model import VisitorContext

SCHEMA = "kairos.why/1"

# Transforms that can say which rules applied to a page offer this (the rules engine does).
Describe = Callable[[Any], list[dict[str, Any]]]

PRIVACY_TEXT = {
    "": "Kairos remembers your visits in a first-party cookie to choose content for you.",
    "opted_out": "You have objected to personalisation: no profile is kept.",
    "gpc": "Your browser sends Global Privacy Control (Sec-GPC): no profile is kept.",
    "dnt": "Your browser sends Do Not Track and this site honours it: no profile is kept.",
    "no_consent": "You have not consented to personalisation: no profile is kept.",
}


def explain(context: VisitorContext, rules: list[dict[str, Any]] | None,
            experiments: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``kairos.why/1`` document for one request.

    ``rules`` and ``experiments``: None when no engine for them is loaded, else one entry
    per rule or experiment of this page with its verdict (or arm) and the named reason.
    """
    return {
        "schema": SCHEMA,
        "page": {"host": context.host, "path": context.path, "query": context.query},
        "privacy": {
            "profiling_allowed": context.profiling_allowed,
            "reason": context.privacy_reason or None,
            "explanation": PRIVACY_TEXT.get(context.privacy_reason, ""),
        },
        "context": context.to_dict(),
        "rules": rules,   # None: no rules engine loaded; [] : none apply to this page
        "experiments": experiments,
    }


def target_path(scope: dict[str, Any]) -> tuple[str, str, str]:
    """(page path, its query, format) that /why is asked about: ``?path=/products/x``."""
    params = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    page = params.get("path", ["/"])[0]
    if not page.startswith("/"):
        page = "/" + page
    path, _, query = page.partition("?")
    return path, query, params.get("format", ["html"])[0]


def render_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, ensure_ascii=False, default=str).encode() + b"\n"


def render_html(document: dict[str, Any], prefix: str) -> bytes:
    e = html.escape
    rows = ""
    current = ""
    for name, value in document["context"].items():
        group = name.split(".", 1)[0]
        if group != current:
            current = group
            rows += f'<tr><th colspan="2" class="group">{e(GROUPS.get(group, group))}</th></tr>'
        breakable = e(name).replace(".", ".<wbr>")   # wrap narrow screens at the dots
        rows += f"<tr><th>{breakable}</th><td>{e(_show(value, name))}</td></tr>"
    rules = document["rules"]
    if rules is None:
        rules_html = "<p>No personalisation rules are loaded.</p>"
    elif not rules:
        rules_html = "<p>No rule applies to this page.</p>"
    else:
        rules_html = "<ul>" + "".join(
            f"<li><strong>{e(str(r.get('rule', '')))}</strong>: "
            f"{e(str(r.get('verdict', '')).replace('_', ' '))}"
            f"{' – ' + e(str(r['reason'])) if r.get('reason') else ''}</li>" for r in rules
        ) + "</ul>"
    experiments = document["experiments"]
    if not experiments:
        experiments_html = "<p>No experiment runs on this page.</p>"
    else:
        experiments_html = "<ul>" + "".join(
            f"<li><strong>{e(str(x.get('experiment', '')))}</strong>: "
            + (f"arm <strong>{e(str(x['arm']))}</strong>" if x.get("arm") else "not in it")
            + (f" – {e(str(x['reason']))}" if x.get("reason") else "") + "</li>"
            for x in experiments) + "</ul>"
    privacy = document["privacy"]
    allowed = privacy["profiling_allowed"]
    action = "opt-in" if not allowed else "opt-out"
    button = "Allow personalisation again" if not allowed else "Object to personalisation"
    page = document["page"]
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Why you see this page</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;
color:#1d2a24}}
table{{border-collapse:collapse;width:100%}}th,td{{text-align:left;padding:.3rem .5rem;
border-bottom:1px solid #dde5e0;vertical-align:top;overflow-wrap:anywhere}}
th{{font-weight:600;width:40%;overflow-wrap:normal}}th.group{{padding-top:1.2rem;font-size:1.05rem;
color:#1f4d3a;border-bottom:2px solid #1f4d3a}}
button{{font:inherit;padding:.5rem 1rem;border-radius:.4rem;border:1px solid #1f4d3a;
background:#1f4d3a;color:#fff;cursor:pointer}}
</style></head><body>
<h1>Why you see this page</h1>
<p>Page: <code>{e(page["path"])}</code></p>
<h2>Your privacy</h2>
<p>{e(privacy["explanation"])}</p>
<form method="post" action="{e(prefix)}{action}"><button type="submit">{button}</button></form>
<h2>Personalisation on this page</h2>
{rules_html}
<h2>Experiments on this page</h2>
{experiments_html}
<h2>What Kairos recognised about this request</h2>
<p>Your IP address is used only in memory, to look up your country, and is never stored.</p>
<table>{rows}</table>
<p><a href="?path={e(page["path"])}&amp;format=json">This information as JSON</a></p>
</body></html>
"""
    return body.encode()


def render_choice(opted_out: bool) -> bytes:
    text = ("You have objected to personalisation. Kairos keeps no profile of you; you see "
            "the site's default content." if opted_out else
            "Personalisation is allowed again. You can object at any time.")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Your choice is saved</title></head><body><h1>Your choice is saved</h1>"
            f"<p>{html.escape(text)}</p><p><a href=\"/\">Back to the site</a></p>"
            f"</body></html>\n").encode()


def render_confirm_opt_in(action: str) -> bytes:
    """What a link to opt-in shows: a button, because only a POST from this page may undo
    an objection (a link on another site is a top-level GET that can set cookies)."""
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Allow personalisation?</title></head><body>"
            f"<h1>Allow personalisation again?</h1>"
            f"<p>You objected to personalisation. Nothing changes unless you confirm.</p>"
            f"<form method=\"post\" action=\"{html.escape(action)}\">"
            f"<button type=\"submit\">Allow personalisation again</button></form>"
            f"<p><a href=\"/\">Back to the site</a></p></body></html>\n").encode()


GROUPS = {"request": "This request", "privacy": "Privacy", "visitor": "Your visits",
          "device": "Device", "geo": "Location (from your IP address, not stored)",
          "source": "Where you came from", "utm": "Campaign parameters",
          "language": "Language", "time": "Your local time", "journey": "Journey",
          "interest": "Interests", "signals": "Outside signals"}


def _show(value: Any, name: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name.endswith(("_seen", "_start")) and isinstance(value, int | float) and value > 0:
        moment = datetime.datetime.fromtimestamp(value, datetime.UTC)
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "–"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "–"
    return str(value)
