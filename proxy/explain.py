"""``kairos explain URL ...``: the ``/_kairos/why`` derivation for a request described on the
command line, offline (no proxy, no origin, no store)."""

from __future__ import annotations

import argparse
import difflib
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from . import transparency
from .client_ip import ClientAddress
from .config import Config
from .experimentation import Experimentation
from .page import PageRequest
from .rules import RuleLibrary, plan, render
from .visitor import Visitors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the page, e.g. https://shop.example/products/?utm_medium=email")
    parser.add_argument("--ua", default="", help="User-Agent")
    parser.add_argument("--ip", default="127.0.0.1", help="the visitor's IP address")
    parser.add_argument("--referer", default="", help="Referer")
    parser.add_argument("--cookie", default="", help="the whole Cookie header")
    parser.add_argument("--accept-language", default="", help="Accept-Language")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="any other request header (repeatable), e.g. 'Sec-GPC: 1'")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    page = parser.add_mutually_exclusive_group()
    page.add_argument("--page", metavar="FILE",
                      help="an HTML file: also show the diff the rules make to it")
    page.add_argument("--fetch", action="store_true",
                      help="fetch the page from upstream.url and show the diff the rules make")
    parser.add_argument("--rules", help="rules folder (default: rules.folder)")
    parser.add_argument("--config", help="TOML config file (default: ./config.toml if present)")


def scope_for(args: argparse.Namespace) -> tuple[dict[str, Any], ClientAddress]:
    url = urlsplit(args.url if "://" in args.url else "http://localhost" + args.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"url {args.url!r} is not valid: expected http(s)://host/path")
    headers = [(b"host", url.netloc.encode()), (b"accept", b"text/html")]
    for name, value in (("user-agent", args.ua), ("referer", args.referer),
                        ("cookie", args.cookie), ("accept-language", args.accept_language)):
        if value:
            headers.append((name.encode(), value.encode("latin-1")))
    for line in args.header:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header {line!r} is not valid: expected 'Name: value'")
        headers.append((name.strip().lower().encode(), value.strip().encode("latin-1")))
    scope = {"type": "http", "method": "GET", "scheme": url.scheme, "path": url.path or "/",
             "query_string": url.query.encode("latin-1"), "headers": headers,
             "client": (args.ip, 0)}
    return scope, ClientAddress(ip=args.ip, peer_trusted=False, scheme=url.scheme, host=None)


def run(args: argparse.Namespace, config: Config) -> str:
    scope, client = scope_for(args)
    visitors = Visitors.open(config)
    try:
        recognition = visitors.recognise(scope, client, count_visit=False)
    finally:
        visitors.close()
    context = recognition.context
    library = RuleLibrary.load(args.rules or config.rules.folder, quiet=True)
    # The experiments as the proxy would decide them for this visitor (the cookie's id and
    # memberships; planned weights, since the store is not read offline).
    runtime = Experimentation(lambda: library.ruleset, visitors.secrets,
                              holdout=config.experiments.holdout)
    decided = runtime.on_page(context, context.host, context.path, context.query, time.time())
    experiments = runtime.describe(context, decided)
    page = PageRequest(method="GET", host=context.host, path=context.path, query=context.query,
                       headers=tuple(scope["headers"]), context=context, experiments=decided)
    rules = [d.to_dict() for d in plan(library.ruleset, context, page,
                                       decided.arm_rules).decisions]
    document = transparency.explain(context, rules, experiments)
    html = _page_html(args, config, context.path, context.query)
    if html is not None:
        rendered = render(library.ruleset, html, page, decided.arm_rules)
        new = rendered.edit.html if rendered.edit is not None else html
        document["diff"] = slot_diff(html, new, context.path)
    if args.format == "json":
        return transparency.render_json(document).decode()
    text = render_text(document)
    errors = [str(e) for e in library.errors]
    return text + ("\n\nrule errors:\n" + "\n".join(errors) if errors else "")


def _page_html(args: argparse.Namespace, config: Config, path: str, query: str) -> str | None:
    if args.page:
        try:
            return Path(args.page).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ValueError(f"--page {args.page}: cannot read it: {exc.strerror}") from None
    if not args.fetch:
        return None
    url = config.upstream.url.rstrip("/") + path + (f"?{query}" if query else "")
    try:
        response = httpx.get(url, headers={"Accept": "text/html"}, timeout=10)
    except httpx.HTTPError as exc:
        raise ValueError(f"--fetch: {url} could not be fetched: {exc}") from None
    return response.text


def slot_diff(before: str, after: str, name: str) -> str:
    """A unified diff of the page before and after the rules ("" when nothing changed)."""
    lines = difflib.unified_diff(before.splitlines(keepends=True),
                                 after.splitlines(keepends=True),
                                 fromfile=f"{name} (origin)", tofile=f"{name} (Kairos)", n=1)
    return "".join(lines)


def render_text(document: dict[str, Any]) -> str:
    page = document["page"]
    lines = [f"page      {page['host']}{page['path']}" + (f"?{page['query']}" if page["query"]
                                                         else ""),
             f"privacy   {document['privacy']['explanation']}", ""]
    width = max(len(name) for name in document["context"])
    for name, value in document["context"].items():
        if value not in (None, "", [], {}):
            lines.append(f"{name:<{width}}  {value}")
    lines += ["", "rules"]
    for rule in document["rules"] or []:
        reason = f" ({rule['reason']})" if rule.get("reason") else ""
        lines.append(f"  {rule['verdict']:<16} {rule['rule']}  {rule['where']}{reason}")
    if not document["rules"]:
        lines.append("  none for this page")
    lines += ["", "experiments"]
    for entry in document["experiments"] or []:
        arm = f"arm {entry['arm']}" if entry.get("arm") else "not in it"
        lines.append(f"  {entry['experiment']}: {arm}  {entry['where']} ({entry['reason']})")
    if not document["experiments"]:
        lines.append("  none for this page")
    if "diff" in document:
        lines += ["", document["diff"] or "the rules change nothing on this page"]
    return "\n".join(lines)
