"""Shared helpers for the rules tests: real visitor contexts, real pages, rule text.

Contexts are built by the real ``build_context`` (geo from trusted CDN headers, local time
from zoneinfo, visits from an advanced visitor cookie state), demo pages are rendered by
the real demo app through ``httpx.ASGITransport``. The tests at the bottom pin the helpers.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from proxy.context.build import build_context
from proxy.context.model import RequestFacts, VisitorContext
from proxy.context.settings import parse_settings
from proxy.context.signals import NO_SIGNALS, SignalSnapshot, parse_signal_hash
from proxy.demo.site import create_demo_app
from proxy.page import PageRequest
from proxy.rules.model import RuleError
from proxy.rules.parse import parse_file
from proxy.rules.ruleset import RuleSet, build

CORPUS = Path("/work/shared/corpus/realworld")
RULES = Path(__file__).resolve().parent.parent / "rules"
NOW = datetime(2025, 10, 14, 10, 30, tzinfo=ZoneInfo("UTC")).timestamp()  # a Tuesday
DESKTOP = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/124.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1")
SETTINGS = parse_settings({"trust_cdn_headers": True})
HOST = "shop.example.com"


def facts(path: str = "/", query: str = "", user_agent: str = DESKTOP, referer: str = "",
          accept_language: str = "en-US,en;q=0.8", geo: Sequence[tuple[str, str]] = (),
          sec_gpc: str = "") -> RequestFacts:
    return RequestFacts(client_ip="203.0.113.9", peer_trusted=True, method="GET",
                        scheme="https", host=HOST, path=path, query_string=query,
                        user_agent=user_agent, referer=referer,
                        accept_language=accept_language, sec_gpc=sec_gpc,
                        geo_headers=tuple(geo))


def visitor(path: str = "/", *, query: str = "", user_agent: str = DESKTOP, referer: str = "",
            accept_language: str = "en-US,en;q=0.8", country: str = "", city: str = "",
            time_zone: str = "UTC", now: float = NOW, history: Sequence[str] = (),
            signals: dict[str, str] | None = None, gpc: bool = False) -> VisitorContext:
    """The context of one request; ``history`` are paths seen on earlier visits (one visit
    each, a day apart), so ``history=["/"]`` makes a returning visitor."""
    geo = [(k, v) for k, v in (("cf-ipcountry", country), ("cf-ipcity", city),
                               ("cf-timezone", time_zone)) if v]
    state = None
    for days_ago, earlier in zip(range(len(history), 0, -1), history, strict=True):
        state = build_context(facts(earlier, geo=geo), state, SETTINGS, now - days_ago * 86400,
                              None).cookie_state
    snapshot: SignalSnapshot = parse_signal_hash(signals) if signals else NO_SIGNALS
    return build_context(facts(path, query, user_agent, referer, accept_language, geo,
                               "1" if gpc else ""), state, SETTINGS, now, None, snapshot)


def at(local: str, time_zone: str, **kw: object) -> VisitorContext:
    """A visitor whose wall clock in ``time_zone`` shows ``local`` ("2025-03-30T02:30")."""
    moment = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(time_zone))
    return visitor(time_zone=time_zone, now=moment.timestamp(), **kw)  # type: ignore[arg-type]


def page(path: str = "/", context: VisitorContext | None = None, host: str = HOST,
         query: str = "") -> PageRequest:
    return PageRequest(method="GET", host=host, path=path, query=query, headers=(),
                       context=context)


@functools.cache
def demo_html(path: str) -> str:
    """A demo page as the origin serves it."""
    async def fetch() -> str:
        transport = httpx.ASGITransport(app=create_demo_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            response = await client.get(path)
            response.raise_for_status()
            return response.text
    return asyncio.run(fetch())


@functools.cache
def corpus(name: str) -> str:
    return (CORPUS / name).read_text(encoding="utf-8", errors="replace")


def corpus_names() -> list[str]:
    return sorted(p.name for p in CORPUS.glob("*.html"))


def load(text: str, name: str = "test.toml", *more: tuple[str, str]
         ) -> tuple[RuleSet, tuple[RuleError, ...]]:
    """Rules from TOML text (and more (name, text) files), without touching the disk; the
    errors are the files' and the folder's."""
    files = [parse_file(t.encode(), n, f"rules/{n}") for n, t in ((name, text), *more)]
    ruleset, cross = build(files)
    return ruleset, tuple(e for f in files for e in f.errors) + cross


def test_history_makes_a_returning_visitor() -> None:
    assert visitor().get("visitor.returning") is False
    ctx = visitor(history=["/", "/checkout"])
    assert ctx.get("visitor.visit_number") == 3 and ctx.get("journey.furthest") == "purchase"


def test_geo_and_local_time_come_from_the_cdn_headers() -> None:
    ctx = at("2025-10-14T08:15", "Europe/Berlin", country="DE", city="Berlin")
    assert (ctx.get("geo.country"), ctx.get("geo.city")) == ("DE", "Berlin")
    assert (ctx.get("time.hour"), ctx.get("time.minute"), ctx.get("time.zone")) == (
        8, 15, "Europe/Berlin")


def test_demo_pages_have_their_slots() -> None:
    assert 'id="greeting"' in demo_html("/") and 'id="order-message"' in demo_html(
        "/checkout/complete")
