"""build_context: privacy (GPC, DNT, opt-out, consent), visits across requests, to_dict/get."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from proxy.context import identity
from proxy.context.build import build_context
from proxy.context.geo import CDN_HEADER_NAMES, GeoReader, open_reader
from proxy.context.identity import decode, encode, opt_out
from proxy.context.model import ATTRIBUTES, RequestFacts, VisitorContext
from proxy.context.settings import ContextSettings, parse_settings
from proxy.context.signals import parse_signal_hash

NOW = 1_765_000_000.0  # 2025-12-06 05:46:40 UTC
KEY = "s" * 32
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1")
SETTINGS = parse_settings({"interests": {"shoes": ["/products/shoes*"]}})
README = Path(__file__).resolve().parent.parent / "proxy" / "context" / "README.md"


@pytest.fixture(scope="module")
def geo_reader() -> GeoReader | None:
    return open_reader("")


def facts(**changes: object) -> RequestFacts:
    base = RequestFacts(
        client_ip="81.2.69.160", peer_trusted=False, method="GET", scheme="https",
        host="shop.example.com", path="/products/shoes/trail-42",
        query_string="utm_source=newsletter&utm_medium=email&utm_campaign=xmas",
        user_agent=IPHONE, referer="", accept_language="en-GB,en;q=0.9,de;q=0.5",
    )
    return replace(base, **changes)


def build(geo_reader: GeoReader | None, request: RequestFacts, state: object = None,
          settings: ContextSettings = SETTINGS, now: float = NOW) -> VisitorContext:
    return build_context(request, state, settings, now, geo_reader)  # type: ignore[arg-type]


def test_a_new_visitor(geo_reader: GeoReader | None) -> None:
    ctx = build(geo_reader, facts())
    data = ctx.to_dict()
    assert data["privacy.profiling_allowed"] is True and data["privacy.reason"] == ""
    assert data["visitor.new"] is True and data["visitor.returning"] is False
    assert data["visitor.visit_number"] == 1 and data["visitor.landing_page"] == (
        "/products/shoes/trail-42")
    assert data["visitor.entry_source"] == "email/newsletter"
    assert data["visitor.entry_campaign"] == "xmas"
    assert data["device.kind"] == "mobile" and data["device.os"] == "iOS"
    assert data["geo.country"] == "GB" and data["time.zone"] == "Europe/London"
    assert data["time.hour"] == 5 and data["time.part_of_day"] == "morning"
    assert data["time.ranges"] == ["christmas-season"]
    assert data["source.class"] == "email" and data["utm.campaign"] == "xmas"
    assert data["language.primary"] == "en" and data["language.locale"] == "en-GB"
    assert data["journey.stage"] == "consideration" and data["journey.furthest"] == (
        "consideration")
    assert data["interest.top"] == "shoes" and data["interest.counts"] == {"shoes": 1}
    assert ctx.cookie_state is ctx.visitor and ctx.visitor is not None


def test_state_carries_across_requests(geo_reader: GeoReader | None) -> None:
    first = build(geo_reader, facts())
    cookie = encode(first.cookie_state, KEY)  # type: ignore[arg-type]
    second = build(geo_reader, facts(path="/checkout/cart", query_string="",
                                     referer="https://shop.example.com/products/shoes"),
                   decode(cookie, (KEY,), NOW + 60), now=NOW + 60)
    assert second.get("visitor.pages_this_visit") == 2
    assert second.get("visitor.id") == first.get("visitor.id")
    assert second.get("source.class") == "internal"
    assert second.get("visitor.entry_source") == "email/newsletter"  # kept for the visit
    assert second.get("journey.furthest") == "purchase"
    later = build(geo_reader, facts(path="/", query_string="", referer="https://www.bing.com/"),
                  second.cookie_state, now=NOW + 5 * 86_400)
    assert later.get("visitor.returning") is True and later.get("visitor.visit_number") == 2
    assert later.get("visitor.days_since_last_visit") == 4
    assert later.get("visitor.entry_source") == "search/bing"
    assert later.get("journey.stage") == "awareness" and later.get("journey.furthest") == (
        "purchase")


HISTORY_KEYS = [k for k in ATTRIBUTES if k.startswith("visitor.")] + [
    "journey.furthest", "interest.top", "interest.counts"]


@pytest.mark.parametrize(
    ("changes", "settings", "state", "reason"),
    [
        ({"sec_gpc": "1"}, SETTINGS, None, "gpc"),
        ({"sec_gpc": "1"}, SETTINGS, "existing", "gpc"),
        ({"dnt": "1"}, replace(SETTINGS, honour_dnt=True), "existing", "dnt"),
        ({}, SETTINGS, "opted_out", "opted_out"),
        ({"cookie": "other=1"}, replace(SETTINGS, consent_cookie="consent"), None,
         "no_consent"),
        ({"cookie": "consent=0"}, replace(SETTINGS, consent_cookie="consent"), None,
         "no_consent"),
    ],
)
def test_privacy_strips_history(geo_reader: GeoReader | None, changes: dict,
                                settings: ContextSettings, state: str | None,
                                reason: str) -> None:
    previous = None
    if state == "existing":
        previous = build(geo_reader, facts(), settings=ContextSettings()).cookie_state
    elif state == "opted_out":
        previous = opt_out(NOW - 100)
    ctx = build(geo_reader, facts(**changes), previous, settings=settings)
    data = ctx.to_dict()
    assert data["privacy.profiling_allowed"] is False and data["privacy.reason"] == reason
    assert ctx.visitor is None and ctx.cookie_state is None
    for key in HISTORY_KEYS:
        assert data[key] is None, key
    # request-local facts stay
    assert data["device.kind"] == "mobile" and data["geo.country"] == "GB"
    assert data["source.class"] == "email" and data["language.primary"] == "en"
    assert data["time.part_of_day"] == "morning" and data["journey.stage"] == "consideration"
    assert data["interest.current"] == ["shoes"]


@pytest.mark.parametrize(
    ("changes", "settings"),
    [
        ({"dnt": "1"}, SETTINGS),  # DNT is not honoured unless configured
        ({"sec_gpc": "0"}, SETTINGS),
        ({"cookie": "a=b; consent=1"}, parse_settings({"consent_cookie": "consent"})),
        ({"cookie": "consent=all"}, parse_settings({"consent_cookie": "consent",
                                                    "consent_value": "all"})),
    ],
)
def test_profiling_allowed(geo_reader: GeoReader | None, changes: dict,
                           settings: ContextSettings) -> None:
    ctx = build(geo_reader, facts(**changes), settings=settings)
    assert ctx.profiling_allowed and ctx.visitor is not None and ctx.cookie_state is not None


def test_opted_out_cookie_is_not_rewritten(geo_reader: GeoReader | None) -> None:
    state = opt_out(NOW)
    ctx = build(geo_reader, facts(), state)
    assert ctx.cookie_state is None and identity.advance(state, NOW, "/", SETTINGS) is state


REQUIRED = [
    "visitor.returning", "visitor.visit_number", "device.kind", "geo.country", "geo.city",
    "source.class", "source.engine", "source.term", "source.campaign", "utm.source",
    "time.hour", "time.part_of_day", "time.weekday", "time.ranges", "journey.stage",
    "interest.top", "language.primary",
]


def test_to_dict_has_the_names_rules_use_and_is_json(geo_reader: GeoReader | None) -> None:
    snapshot = parse_signal_hash({b"weather.london": b"rain", b"temp.london": b"7.5"})
    ctx = build_context(facts(), None, SETTINGS, NOW, geo_reader, snapshot)
    data = ctx.to_dict()
    assert set(REQUIRED) <= set(data)
    assert json.loads(json.dumps(data)) == data
    assert data["signals.weather.london"] == "rain" and data["signals.temp.london"] == 7.5
    for name, value in data.items():
        got = ctx.get(name)
        assert (list(got) if isinstance(got, tuple) else got) == value, name
    assert ctx.get("signals.missing") is None and ctx.get("no.such.thing", "x") == "x"


def test_readme_documents_every_attribute() -> None:
    section = README.read_text().split("## Attributes", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_.<>]+)` \|", section, re.MULTILINE))
    assert documented - {"signals.<name>"} == set(ATTRIBUTES)


def test_context_without_geo_database() -> None:
    ctx = build(None, facts(client_ip="8.8.8.8"))
    assert ctx.get("geo.country") == "" and ctx.get("time.zone") in {"local", ""} | {
        ctx.time.time_zone}


def test_cdn_headers_reach_the_context_only_from_trusted_peers(
    geo_reader: GeoReader | None,
) -> None:
    settings = parse_settings({"trust_cdn_headers": True})
    cdn = (("cf-ipcountry", "JP"), ("cf-timezone", "Asia/Tokyo"))
    trusted = build(geo_reader, facts(geo_headers=cdn, peer_trusted=True), settings=settings)
    untrusted = build(geo_reader, facts(geo_headers=cdn, peer_trusted=False), settings=settings)
    assert (trusted.get("geo.country"), trusted.get("time.hour")) == ("JP", 14)
    assert (untrusted.get("geo.country"), untrusted.get("time.hour")) == ("GB", 5)


def test_request_facts_from_asgi() -> None:
    scope = {
        "type": "http", "method": "GET", "scheme": "http", "path": "/products/x",
        "query_string": b"utm_source=a", "server": ("10.0.0.5", 8080),
        "headers": [
            (b"host", b"Shop.Example.com"), (b"user-agent", IPHONE.encode()),
            (b"referer", b"https://www.google.com/"), (b"accept-language", b"de"),
            (b"sec-gpc", b"1"), (b"cookie", b"a=1"), (b"cookie", b"kairos_v=xyz"),
            (b"cf-ipcountry", b"DE"), (b"x-unrelated", b"1"),
        ],
    }
    found = RequestFacts.from_asgi(scope, "203.0.113.7", True, scheme="https")
    assert (found.host, found.scheme, found.path, found.query_string) == (
        "shop.example.com", "https", "/products/x", "utm_source=a")
    assert found.user_agent == IPHONE and found.referer == "https://www.google.com/"
    assert found.sec_gpc == "1" and found.accept_language == "de"
    assert identity.read_cookie(found.cookie, "kairos_v") == "xyz"
    assert found.geo_headers == (("cf-ipcountry", "DE"),)
    assert found.client_ip == "203.0.113.7" and found.peer_trusted
    bare = RequestFacts.from_asgi({"type": "http", "headers": [], "server": ("h", 80)}, "", False)
    assert (bare.host, bare.method, bare.path, bare.scheme) == ("h", "GET", "/", "http")


def _reference_from_asgi(scope: dict, client_ip: str, peer_trusted: bool) -> RequestFacts:
    """RequestFacts.from_asgi as it was before its header loop became one dict lookup."""
    named = {b"user-agent": "user_agent", b"referer": "referer",
             b"accept-language": "accept_language", b"sec-gpc": "sec_gpc", b"dnt": "dnt"}
    geo_names = {name.encode() for name in CDN_HEADER_NAMES}
    found: dict[str, str] = {}
    cookies, geo, host = [], [], ""
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.lower()
        if name in named:
            found.setdefault(named[name], raw_value.decode("latin-1"))
        elif name == b"cookie":
            cookies.append(raw_value.decode("latin-1"))
        elif name == b"host":
            host = host or raw_value.decode("latin-1")
        elif name in geo_names:
            geo.append((name.decode("latin-1"), raw_value.decode("latin-1")))
    if not host and scope.get("server"):
        host = str(scope["server"][0])
    return RequestFacts(
        client_ip=client_ip, peer_trusted=peer_trusted, method=str(scope.get("method", "GET")),
        scheme=str(scope.get("scheme", "http")), host=host.lower(),
        path=str(scope.get("path", "/")),
        query_string=bytes(scope.get("query_string", b"")).decode("latin-1"),
        cookie="; ".join(cookies), geo_headers=tuple(geo), **found)


def test_from_asgi_reads_headers_as_it_always_did() -> None:
    """Repeated, empty, upper-case and unrelated headers in any order: first value wins for
    single fields, an empty first Host gives way, cookies join, CDN headers all kept."""
    import random
    rng = random.Random(9)
    pool = [(b"host", b""), (b"host", b"Shop.Example"), (b"Host", b"other.example"),
            (b"user-agent", IPHONE.encode()), (b"User-Agent", b"curl/8"), (b"user-agent", b""),
            (b"referer", b"https://www.google.com/"), (b"accept-language", b"de"),
            (b"ACCEPT-LANGUAGE", b"fr"), (b"sec-gpc", b"1"), (b"dnt", b"1"),
            (b"cookie", b"a=1"), (b"Cookie", b"kairos_v=xyz"), (b"cf-ipcountry", b"DE"),
            (b"CF-IPCity", b"Berlin"), (b"x-vercel-ip-country", b"FR"), (b"accept", b"*/*"),
            (b"x-forwarded-for", b"1.2.3.4"), (b"sec-fetch-dest", b"document"),
            (b"caf\xe9", b"\xe9t\xe9")]
    for _ in range(500):
        scope = {"type": "http", "method": "GET", "path": "/p", "query_string": b"q=1",
                 "server": ("10.0.0.5", 8080), "headers": rng.sample(pool, rng.randint(0, 12))}
        assert (RequestFacts.from_asgi(scope, "203.0.113.7", True)
                == _reference_from_asgi(scope, "203.0.113.7", True)), scope["headers"]


def test_page_stage_and_interests_are_memoised_per_settings() -> None:
    from proxy.context import journey
    other = parse_settings({"interests": {"bags": ["/products/*"]},
                            "journey_stages": [{"name": "browse", "paths": ["/products/*"]}]})
    path = "/products/shoes/trail-42"
    for _ in range(2):  # computed, then from the memo, alternating settings objects
        assert journey.page_of(path, SETTINGS) == ("consideration", ("shoes",))
        assert journey.page_of(path, other) == ("browse", ("bags",))
    long_path = "/products/shoes/" + "x" * journey.MAX_CACHED_PATH_CHARS
    assert journey.page_of(long_path, SETTINGS) == ("consideration", ("shoes",))
    assert long_path not in journey._pages  # long paths are matched, never kept


def test_every_field_comes_from_its_own_source(geo_reader: GeoReader | None) -> None:
    """build_context passes the fields by position: each must land in its own place."""
    request = facts(method="HEAD", scheme="http", host="h.example", path="/p",
                    query_string="q=1", sec_gpc="1")
    ctx = build(geo_reader, request)
    assert (ctx.method, ctx.scheme, ctx.host, ctx.path, ctx.query) == (
        "HEAD", "http", "h.example", "/p", "q=1")
    assert (ctx.profiling_allowed, ctx.privacy_reason) == (False, "gpc")
    snapshot = parse_signal_hash({b"a": b"1"})
    ctx = build_context(facts(), None, SETTINGS, NOW, geo_reader, snapshot)
    assert ctx.visitor is ctx.cookie_state and ctx.visitor is not None
    kinds = {"device": "Device", "geo": "Geo", "source": "Source", "languages": "Languages",
             "time": "LocalTime", "journey": "Journey", "signals": "SignalSnapshot"}
    for field_name, kind in kinds.items():
        assert type(getattr(ctx, field_name)).__name__ == kind, field_name
    assert ctx.signals is snapshot
