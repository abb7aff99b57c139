"""HTTP correctness of the proxy, P1-P30 of docs/proxy-requirements.md, through real uvicorn
and a real upstream on loopback. Each test names the item it pins."""

from __future__ import annotations

import json
import re
import socket
import time

import httpx
import pytest

from .conftest import UPSTREAM_CLIENT, RunningKairos, header_lines, raw_request, status_of
from .upstream_server import Upstream


def echo(kairos: RunningKairos, path: str = "/echo", **kwargs: object) -> dict:
    response = httpx.request(kwargs.pop("method", "GET"), kairos.url + path,  # type: ignore[arg-type]
                             **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return response.json()


def kairos_upstream_requests(kairos: RunningKairos, prefix: str) -> list:
    from .conftest import upstream_of
    return [r for r in upstream_of(kairos).received if r.target.startswith(prefix)]


def sent_headers(data: dict) -> list[tuple[str, str]]:
    return [(n.lower(), v) for n, v in data["headers"]]


def values(data: dict, name: str) -> list[str]:
    return [v for n, v in sent_headers(data) if n == name]


# -- P1, P2, P4, P6: request headers ------------------------------------------------------------

def test_p1_hop_by_hop_request_headers_are_stripped(kairos: RunningKairos) -> None:
    data = echo(kairos, headers={
        "Connection": "keep-alive, X-Private", "X-Private": "secret", "Keep-Alive": "300",
        "Proxy-Connection": "keep-alive", "TE": "trailers", "Trailer": "X-T",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==", "Upgrade": "foo/2", "X-End": "kept",
    })
    names = {n for n, _ in sent_headers(data)}
    for hop in ("x-private", "keep-alive", "proxy-connection", "te", "trailer",
                "proxy-authorization", "upgrade"):
        assert hop not in names
    assert values(data, "x-end") == ["kept"]


def test_p2_connection_cannot_remove_our_forwarding_headers(kairos: RunningKairos) -> None:
    data = echo(kairos, headers={"Connection": "X-Forwarded-For, Via, X-Forwarded-Proto"})
    assert values(data, "x-forwarded-for") == ["127.0.0.1"]
    assert values(data, "via") == ["1.1 kairos"]
    assert values(data, "x-forwarded-proto") == ["http"]


def test_p4_via_added_and_existing_via_kept(kairos: RunningKairos) -> None:
    data = echo(kairos, headers={"Via": "1.1 cdn-edge"})
    assert values(data, "via") == ["1.1 cdn-edge", "1.1 kairos"]


def test_p6_forwarding_headers_from_trusted_peer_are_extended(kairos: RunningKairos) -> None:
    # The test client connects from 127.0.0.1, which the default config trusts.
    data = echo(kairos, headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.2",
                                 "X-Forwarded-Proto": "https",
                                 "X-Forwarded-Host": "shop.example"})
    assert values(data, "x-forwarded-for") == ["203.0.113.7, 10.0.0.2, 127.0.0.1"]
    assert values(data, "x-forwarded-proto") == ["https"]
    assert values(data, "x-forwarded-host") == ["shop.example"]


def test_p6_untrusted_peer_forwarding_headers_are_dropped(upstream: Upstream,
                                                          valkey: object) -> None:
    from .conftest import start_kairos
    running = start_kairos(upstream.url, valkey.connection_url,  # type: ignore[attr-defined]
                           **{"server.trusted_proxies": "192.0.2.0/24"})
    try:
        data = echo(running, headers={"X-Forwarded-For": "1.2.3.4", "Forwarded": "for=1.2.3.4",
                                      "X-Forwarded-Host": "evil.example",
                                      "X-Forwarded-Proto": "https", "X-Real-IP": "1.2.3.4"})
    finally:
        running.stop()
    assert values(data, "x-forwarded-for") == ["127.0.0.1"]
    assert values(data, "forwarded") == []
    assert values(data, "x-real-ip") == []
    assert values(data, "x-forwarded-proto") == ["http"]
    assert values(data, "x-forwarded-host") == [f"127.0.0.1:{running.port}"]


# -- P3, P9, P10: response headers --------------------------------------------------------------

def test_p9_every_set_cookie_and_repeated_field_arrives_separately(kairos: RunningKairos) -> None:
    response = raw_request(kairos.port, b"GET /cookies HTTP/1.1\r\nHost: shop.test\r\n"
                                        b"Connection: close\r\n\r\n")
    assert header_lines(response, b"set-cookie") == [
        b"a=1; Path=/", b"b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/", b"c=3; HttpOnly"]
    assert header_lines(response, b"x-repeat") == [b"one", b"two"]


def test_p1_p3_hop_by_hop_and_alt_svc_response_headers_dropped(kairos: RunningKairos) -> None:
    response = raw_request(kairos.port, b"GET /cookies HTTP/1.1\r\nHost: shop.test\r\n"
                                        b"Connection: close\r\n\r\n")
    assert header_lines(response, b"alt-svc") == []
    assert header_lines(response, b"x-hop-secret") == []
    assert header_lines(response, b"keep-alive") == []


def test_p10_exactly_one_date_and_server(kairos: RunningKairos) -> None:
    response = raw_request(kairos.port, b"GET /cookies HTTP/1.1\r\nHost: shop.test\r\n"
                                        b"Connection: close\r\n\r\n")
    assert header_lines(response, b"date") == [b"Sun, 22 Nov 2026 10:00:00 GMT"]
    assert header_lines(response, b"server") == [b"test-origin"]
    nodate = raw_request(kairos.port, b"GET /nodate HTTP/1.1\r\nHost: shop.test\r\n"
                                      b"Connection: close\r\n\r\n")
    assert len(header_lines(nodate, b"date")) == 1
    assert header_lines(nodate, b"server") == []


# -- P5: client address -------------------------------------------------------------------------

def test_p5_rightmost_untrusted_address_is_the_client() -> None:
    import ipaddress

    from proxy import client_ip
    trusted = client_ip.TrustedNetworks([ipaddress.ip_network("10.0.0.0/8"),
                                         ipaddress.ip_network("127.0.0.1/32")])
    cases = [
        ("127.0.0.1", [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9, 10.1.1.1")], "203.0.113.9"),
        ("127.0.0.1", [(b"x-forwarded-for", b"203.0.113.9")], "203.0.113.9"),
        ("127.0.0.1", [(b"forwarded", b'for="[2001:db8::1]:443";proto=https')], "2001:db8::1"),
        ("127.0.0.1", [(b"x-forwarded-for", b"garbage, 203.0.113.9")], "203.0.113.9"),
        ("198.51.100.4", [(b"x-forwarded-for", b"203.0.113.9")], "198.51.100.4"),
        ("127.0.0.1", [], "127.0.0.1"),
    ]
    for peer, headers, expected in cases:
        assert client_ip.resolve(peer, "http", headers, trusted).ip == expected, headers


# -- P7, P11, P12: what is refused --------------------------------------------------------------

@pytest.mark.parametrize("head", [
    b"GET /echo HTTP/1.1\r\n\r\n",                                    # missing Host
    b"GET /echo HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",    # duplicate Host
    b"GET /echo HTTP/1.1\r\nHost: a b\r\n\r\n",                       # invalid Host
    b"GET /echo HTTP/1.1\r\nHost: a.test:99999\r\n\r\n",              # invalid port
    b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX-Nul: a\x00b\r\n\r\n",    # NUL in a value
])
def test_p7_p11_bad_host_or_forbidden_bytes_give_400(kairos: RunningKairos, head: bytes) -> None:
    response = raw_request(kairos.port, head)
    assert status_of(response) == 400
    assert b"Traceback" not in response


def test_p7_upstream_comes_from_config_not_host(kairos: RunningKairos,
                                                upstream: Upstream) -> None:
    before = len(upstream.received)
    response = raw_request(kairos.port, b"GET /echo HTTP/1.1\r\nHost: 169.254.169.254\r\n"
                                        b"Connection: close\r\n\r\n")
    assert status_of(response) == 200
    assert len(upstream.received) == before + 1
    assert upstream.last("/echo").header(b"x-forwarded-host") == [b"169.254.169.254"]


def test_p11_utf8_obs_text_in_request_header_is_forwarded_as_bytes(
        kairos: RunningKairos, upstream: Upstream) -> None:
    name = "José Müller 東京".encode()
    response = raw_request(kairos.port, b"GET /echo?obs HTTP/1.1\r\nHost: shop.test\r\n"
                                        b"X-Name: " + name + b"\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200
    assert upstream.last("/echo?obs").header(b"x-name") == [name]


def test_p11_other_obs_text_is_answered_400_never_500(kairos: RunningKairos,
                                                      upstream: Upstream) -> None:
    before = len(upstream.received)
    response = raw_request(kairos.port, b"GET /echo?latin1 HTTP/1.1\r\nHost: shop.test\r\n"
                                        b"X-Name: Jos\xe9 M\xfcller\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 400
    assert b"not UTF-8" in response
    assert len(upstream.received) == before


@pytest.mark.parametrize("method", ["PROPFIND", "MKCOL", "M-SEARCH", "PATCH", "DELETE",
                                    "OPTIONS"])
def test_p12_any_method_token_is_forwarded(kairos: RunningKairos, method: str) -> None:
    data = echo(kairos, method=method)
    assert data["method"] == method


def test_p12_options_asterisk_reaches_the_origin_as_asterisk(kairos: RunningKairos,
                                                             upstream: Upstream) -> None:
    # OPTIONS * asks about the server as a whole; "/*" would ask about a resource named "*".
    reply = raw_request(kairos.port, b"OPTIONS * HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert status_of(reply) == 200
    # (aiohttp's URLs cannot hold the asterisk-form: it sends "/*", proxy/upstream_aiohttp.py)
    sent = "*" if UPSTREAM_CLIENT == "h1" else "/*"
    assert [r.target for r in upstream.received if r.method == "OPTIONS"][-1:] == [sent]


def test_p12_trace_is_refused(kairos: RunningKairos, upstream: Upstream) -> None:
    before = len(upstream.received)
    assert httpx.request("TRACE", kairos.url + "/echo").status_code == 405
    assert len(upstream.received) == before


# -- P13, P24: request bodies -------------------------------------------------------------------

def test_p13_bodyless_request_has_no_framing_upstream(kairos: RunningKairos) -> None:
    for method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        response = httpx.request(method, kairos.url + "/echo?bodyless-" + method)
        assert response.status_code == 200
    from_upstream = {r.method: r for r in kairos_upstream_requests(kairos, "/echo?bodyless-")}
    for method, received in from_upstream.items():
        assert received.header(b"transfer-encoding") == [], method
        assert received.body == b"", method
        # An explicit empty body is allowed for methods whose body has meaning (aiohttp
        # sends Content-Length: 0 for DELETE); GET, HEAD and OPTIONS carry no length at all.
        expected = [b"0"] if method == "DELETE" else []
        assert received.header(b"content-length") == expected, method
    assert set(from_upstream) == {"GET", "HEAD", "OPTIONS", "DELETE"}


def test_p13_client_framing_is_not_forwarded(kairos: RunningKairos, upstream: Upstream) -> None:
    response = raw_request(kairos.port, b"POST /echo?chunked HTTP/1.1\r\nHost: shop.test\r\n"
                                        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert status_of(response) == 200
    received = upstream.last("/echo?chunked")
    assert received.body == b"hello world"


def test_p13_content_length_body_forwarded_with_its_length(kairos: RunningKairos) -> None:
    data = echo(kairos, method="POST", content=b"a=1&b=2")
    assert data["body"] == "a=1&b=2"
    assert values(data, "content-length") == ["7"]
    assert values(data, "transfer-encoding") == []


def test_p24_upload_streams_and_expect_100_continue_works(kairos: RunningKairos,
                                                          upstream: Upstream) -> None:
    body = b"x" * 300_000
    with socket.create_connection(("127.0.0.1", kairos.port), timeout=5) as sock:
        sock.sendall(b"PUT /echo?upload HTTP/1.1\r\nHost: shop.test\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        interim = sock.recv(100)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert status_of(response) == 200
    received = upstream.last("/echo?upload")
    assert len(received.body) == len(body)
    assert received.header(b"expect") == []


# -- P8: Location rewriting ---------------------------------------------------------------------

def test_p8_absolute_origin_urls_point_back_at_the_proxy(kairos: RunningKairos) -> None:
    response = httpx.get(kairos.url + "/redirect", headers={"Host": "shop.example"})
    assert response.status_code == 302
    assert response.headers["location"] == "http://shop.example/target?x=1"
    assert response.headers["content-location"] == "http://shop.example/here"
    assert response.headers["refresh"] == "0; url=http://shop.example/refreshed"
    other = httpx.get(kairos.url + "/elsewhere")
    assert other.headers["location"] == "https://example.org/x"


# -- P14, P15, P25, P28: a misbehaving upstream -------------------------------------------------

@pytest.mark.parametrize("path,status", [
    ("/status999", 502), ("/dupcl", 502), ("/clte", 502), ("/badcl", 502), ("/garbage", 502),
    ("/slow?s=3", 504),
])
def test_p14_p15_p28_upstream_faults_map_to_gateway_errors(kairos: RunningKairos, path: str,
                                                           status: int) -> None:
    response = httpx.get(kairos.url + path)
    assert response.status_code == status
    assert "Traceback" not in response.text
    assert response.headers["cache-control"] == "no-store"


def test_p28_f10_refused_upstream_is_502_and_recovers(valkey: object) -> None:
    from .conftest import start_kairos
    from .upstream_server import Upstream as Origin
    origin = Origin().start()
    port = origin.port
    origin.stop()
    running = start_kairos(f"http://127.0.0.1:{port}", valkey.connection_url)  # type: ignore[attr-defined]
    try:
        start = time.monotonic()
        down = httpx.get(running.url + "/echo")
        elapsed = time.monotonic() - start
        back = Origin(port=port).start()
        try:
            up = httpx.get(running.url + "/echo")
        finally:
            back.stop()
    finally:
        running.stop()
    assert down.status_code == 502
    assert elapsed < 1.5                 # refused is immediate, not a timeout
    assert up.status_code == 200


def test_p28_non_idempotent_request_is_never_retried(kairos: RunningKairos,
                                                     upstream: Upstream) -> None:
    before = sum(1 for r in upstream.received if r.target == "/garbage?post")
    response = httpx.post(kairos.url + "/garbage?post", content=b"order=1")
    after = sum(1 for r in upstream.received if r.target == "/garbage?post")
    assert response.status_code == 502
    assert after - before == 1


def test_p25_truncated_body_stays_visibly_incomplete(kairos: RunningKairos) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(kairos.url + "/truncated")


def test_p25_buffered_page_truncated_upstream_is_502(kairos: RunningKairos) -> None:
    assert httpx.get(kairos.url + "/html?truncate=1").status_code == 502


def test_p28_reset_mid_body_is_not_a_clean_response(kairos: RunningKairos) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(kairos.url + "/reset")


def test_p15_invalid_upstream_header_does_not_crash(kairos: RunningKairos) -> None:
    response = httpx.get(kairos.url + "/badheader")
    assert response.status_code == 200
    assert response.headers["x-good"] == "yes"
    assert "x-bad" not in response.headers


def test_p28_overload_gives_503_with_retry_after(upstream: Upstream, valkey: object) -> None:
    import threading

    from .conftest import start_kairos
    running = start_kairos(upstream.url, valkey.connection_url,  # type: ignore[attr-defined]
                           **{"server.max_concurrent_requests": 1,
                              "upstream.headers_deadline": 5})
    try:
        slow = threading.Thread(target=httpx.get, args=(running.url + "/slow?s=1",),
                                kwargs={"timeout": 5})
        slow.start()
        time.sleep(0.3)
        response = httpx.get(running.url + "/echo")
        slow.join()
    finally:
        running.stop()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"


# -- P21, P23, P26: HEAD, streaming, early hints -------------------------------------------------

def test_p21_head_is_forwarded_as_head_without_body(kairos: RunningKairos,
                                                    upstream: Upstream) -> None:
    response = raw_request(kairos.port, b"HEAD /html?head HTTP/1.1\r\nHost: shop.test\r\n"
                                        b"Connection: close\r\n\r\n")
    _head, _, body = response.partition(b"\r\n\r\n")
    assert status_of(response) == 200
    assert body == b""
    assert upstream.last("/html?head").method == "HEAD"
    assert header_lines(response, b"etag") == [b'"abc123"']   # not rewritten


def test_p23_server_sent_events_arrive_one_by_one(kairos: RunningKairos) -> None:
    arrivals = []
    start = time.monotonic()
    with httpx.stream("GET", kairos.url + "/sse") as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 3
    assert arrivals[0] < 0.25           # first event long before the stream ends (0.9 s)
    assert arrivals[2] - arrivals[0] > 0.4


def test_p17_pass_through_keeps_the_origin_encoding_and_bytes(kairos: RunningKairos) -> None:
    import brotli

    from .upstream_server import page_bytes
    response = raw_request(kairos.port, b"GET /html?enc=br&cc=no-transform HTTP/1.1\r\n"
                                        b"Host: shop.test\r\nAccept-Encoding: br\r\n"
                                        b"Connection: close\r\n\r\n")
    body = response.partition(b"\r\n\r\n")[2]
    assert header_lines(response, b"content-encoding") == [b"br"]
    assert brotli.decompress(body) == page_bytes()


def test_p23_large_body_streams_through_intact(kairos: RunningKairos) -> None:
    response = httpx.get(kairos.url + "/big")
    block = bytes(range(256)) * 256
    assert response.content == block * (5 * 1024 * 1024 // len(block))


def test_p26_early_hints_do_not_break_the_response(kairos: RunningKairos) -> None:
    response = httpx.get(kairos.url + "/early-hints")
    assert response.status_code == 200
    assert response.text == "hints"


# -- P29, P30: timeouts and disconnects ---------------------------------------------------------

def test_p29_slow_headers_hit_the_deadline(kairos: RunningKairos) -> None:
    start = time.monotonic()
    assert httpx.get(kairos.url + "/slow?s=5").status_code == 504
    assert time.monotonic() - start < 4


def test_p30_client_disconnect_cancels_the_upstream_request(kairos: RunningKairos,
                                                            upstream: Upstream) -> None:
    disconnects = kairos.app.metrics.errors["client_disconnected"]
    with socket.create_connection(("127.0.0.1", kairos.port)) as sock:
        sock.sendall(b"GET /slow?s=1.2 HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        time.sleep(0.2)
    deadline = time.monotonic() + 3
    while kairos.app.metrics.errors["client_disconnected"] == disconnects:
        assert time.monotonic() < deadline, "disconnect was not noticed"
        time.sleep(0.05)


def test_metrics_and_health_endpoints(kairos: RunningKairos) -> None:
    httpx.get(kairos.url + "/echo")
    httpx.get(kairos.url + "/html")   # an HTML page: looked up in the edge cache
    metrics = httpx.get(kairos.url + "/_kairos/metrics")
    assert metrics.status_code == 200
    assert 'kairos_requests_total{' in metrics.text
    assert "kairos_upstream_latency_seconds_count" in metrics.text
    assert "kairos_events_dropped_total" in metrics.text
    # The edge cache's and the repeated pages' gauges, each read from its own stats.
    gauges = dict(re.findall(r'^kairos_((?:cache|repeated_pages)_\w+)\{worker="\d+"\} (\d+)$',
                             metrics.text, re.MULTILINE))
    cache, repeated = kairos.app.http.cache.stats(), kairos.app.http.repeated.stats()
    assert {name: gauges[f"cache_{name}"] for name in ("entries", "misses", "hits")} == {
        name: str(cache[name]) for name in ("entries", "misses", "hits")}
    assert {name: gauges[f"repeated_pages_{name}"] for name in ("entries", "remembered")} == {
        name: str(repeated[name]) for name in ("entries", "remembered")}
    assert int(gauges["cache_misses"]) > 0
    health = httpx.get(kairos.url + "/_kairos/health").json()
    assert health["upstream"]["state"] == "ok"
    assert health["store"]["state"] in ("ok", "degraded")
    assert json.dumps(health)


def test_one_visitors_upstream_cookies_never_reach_another_visitor(upstream: Upstream,
                                                                   valkey: object) -> None:
    # A hostname, not an IP: cookie jars skip IP hosts, which would hide the leak.
    from .conftest import start_kairos
    running = start_kairos(f"http://localhost:{upstream.port}",
                           valkey.connection_url)  # type: ignore[attr-defined]
    try:
        first = httpx.get(running.url + "/cookies")
        httpx.get(running.url + "/echo?second-visitor")
    finally:
        running.stop()
    assert len(first.headers.get_list("set-cookie")) == 3
    assert upstream.last("/echo?second-visitor").header(b"cookie") == []
