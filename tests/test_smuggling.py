"""Request smuggling: framings a front proxy and Kairos could read differently, sent raw.

Each payload hides a second request (``/echo?<marker>-smuggled``) where one reading of the
framing would find it. Kairos must answer 400 (or read the request one unambiguous way),
and the origin, which records every request it gets, must never see the hidden one. A fence
request with ``Connection: close`` follows each payload on the same connection: requests on
a connection are handled in order, so once it is answered or the connection closed, all
Kairos parsed out of the payload has reached the origin.

test_proxy_http already proves: a bad or repeated Host and NUL in a value are 400 (P7,
P11), the client's chunked framing is not forwarded (P13), and upstream framing errors are
502 (P14).
"""

from __future__ import annotations

import uuid

import pytest

from .conftest import RunningKairos
from .security_helpers import converse, origin_requests
from .upstream_server import Upstream

HOST = b"Host: shop.test\r\n"
HIDDEN = b"GET /echo?{m}-smuggled HTTP/1.1\r\nHost: shop.test\r\n\r\n"


def post(headers: bytes, body: bytes) -> bytes:
    return b"POST /echo?{m} HTTP/1.1\r\n" + HOST + headers + b"\r\n" + body


# Refused with 400, nothing forwarded; or answered, the origin getting one request with the
# given body.
REFUSED = {
    "cl-te": post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + HIDDEN),
    "te-cl": post(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                  b"%x\r\n" % len(HIDDEN) + HIDDEN + b"\r\n0\r\n\r\n"),
    "te-trailing-space-cl": post(b"Content-Length: 4\r\nTransfer-Encoding: chunked \r\n",
                                 b"0\r\n\r\n" + HIDDEN),
    "te-xchunked": post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n" + HIDDEN),
    "te-xchunked-cl": post(b"Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n",
                           b"0\r\n\r\n" + HIDDEN),
    "te-chunked-identity": post(b"Transfer-Encoding: chunked, identity\r\n",
                                b"0\r\n\r\n" + HIDDEN),
    "te-chunked-chunked": post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n" + HIDDEN),
    "te-duplicated": post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                          b"0\r\n\r\n" + HIDDEN),
    "te-space-before-colon": post(b"Transfer-Encoding : chunked\r\nContent-Length: 3\r\n",
                                  b"0\r\n\r\n" + HIDDEN),
    "te-tab-before-colon": post(b"Transfer-Encoding\t: chunked\r\n", b"0\r\n\r\n" + HIDDEN),
    "te-vertical-tab": post(b"Transfer-Encoding:\x0bchunked\r\nContent-Length: 3\r\n",
                            b"0\r\n\r\n" + HIDDEN),
    "te-empty-with-cl": post(b"Transfer-Encoding:\r\nContent-Length: 5\r\n", b"hello" + HIDDEN),
    "te-obs-fold": post(b"X-A: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                        b"abc" + HIDDEN),
    "two-content-lengths": post(b"Content-Length: 3\r\nContent-Length: 40\r\n", b"abc" + HIDDEN),
    "same-content-length-twice": post(b"Content-Length: 3\r\nContent-Length: 3\r\n",
                                      b"abc" + HIDDEN),
    "content-length-list": post(b"Content-Length: 3, 3\r\n", b"abc" + HIDDEN),
    "content-length-plus": post(b"Content-Length: +3\r\n", b"abc" + HIDDEN),
    "content-length-minus": post(b"Content-Length: -1\r\n", b"abc" + HIDDEN),
    "content-length-hex": post(b"Content-Length: 0x3\r\n", b"abc" + HIDDEN),
    "content-length-suffix": post(b"Content-Length: 3x\r\n", b"abc" + HIDDEN),
    "content-length-overflow": post(b"Content-Length: 18446744073709551619\r\n",
                                    b"abc" + HIDDEN),
    "chunk-size-overflow": post(b"Transfer-Encoding: chunked\r\n",
                                b"10000000000000000000005\r\nhello\r\n0\r\n\r\n" + HIDDEN),
    "chunk-size-0x": post(b"Transfer-Encoding: chunked\r\n", b"0x5\r\nhello\r\n0\r\n\r\n"
                          + HIDDEN),
    "chunk-size-space": post(b"Transfer-Encoding: chunked\r\n", b"5 \r\nhello\r\n0\r\n\r\n"
                             + HIDDEN),
    "chunk-shorter-than-data": post(b"Transfer-Encoding: chunked\r\n",
                                    b"3\r\nhello\r\n0\r\n\r\n" + HIDDEN),
    "chunk-bare-lf": post(b"Transfer-Encoding: chunked\r\n", b"5\nhello\n0\n\n" + HIDDEN),
    "bare-lf-head": b"POST /echo?{m} HTTP/1.1\nHost: shop.test\nContent-Length: 3\n\nabc"
                    + HIDDEN,
    "bare-lf-in-one-line": b"GET /echo?{m} HTTP/1.1\r\nHost: shop.test\nContent-Length: 3"
                           b"\r\n\r\nabc" + HIDDEN,
    "bare-cr": b"GET /echo?{m} HTTP/1.1\r\nHost: shop.test\rContent-Length: 3\r\n\r\nabc"
               + HIDDEN,
    "http-1-0-te-and-cl": b"POST /echo?{m} HTTP/1.0\r\n" + HOST
                          + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                          + HIDDEN,
    "absolute-form-without-path": b"GET http://evil.example HTTP/1.1\r\n" + HOST + b"\r\n",
}
# Chunked last, so the length is known, but with a coding before it that Kairos would not
# undo: refused, and the connection stays in step (the fence is answered).
OTHER_CODINGS = {
    "te-identity-chunked": post(b"Transfer-Encoding: identity, chunked\r\n",
                                b"5\r\nhello\r\n0\r\n\r\n"),
    "te-gzip-chunked": post(b"Transfer-Encoding: gzip, chunked\r\n",
                            b"5\r\nhello\r\n0\r\n\r\n"),
}
ANSWERED = {
    "content-length-leading-space": (post(b"Content-Length:   3\r\n", b"abc"), b"abc"),
    "te-uppercase": (post(b"Transfer-Encoding: CHUNKED\r\n", b"3\r\nabc\r\n0\r\n\r\n"), b"abc"),
    "chunk-extension": (post(b"Transfer-Encoding: chunked\r\n", b"3;x=y\r\nabc\r\n0\r\n\r\n"),
                        b"abc"),
    "chunk-trailer": (post(b"Transfer-Encoding: chunked\r\n",
                           b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"), b"abc"),
    # RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing, and the connection
    # must close after the message: the hidden request is never read.
    "http-1-0-te-keep-alive": (b"POST /echo?{m} HTTP/1.0\r\n" + HOST
                               + b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
                               + b"3\r\nabc\r\n0\r\n\r\n" + HIDDEN, b"abc"),
}


def run(kairos: RunningKairos, payload: bytes) -> tuple[str, list[int]]:
    """A fresh marker; the payload and the fence sent; the statuses that came back."""
    marker = f"smuggle-{uuid.uuid4().hex[:8]}"
    fence = f"GET /echo?{marker}-fence HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n"
    responses = converse(kairos.port, payload.replace(b"{m}", marker.encode()), fence.encode())
    return marker, [r.status for r in responses]


def unfenced(upstream: Upstream, marker: str) -> list[str]:
    return [r.target for r in origin_requests(upstream, marker)
            if not r.target.endswith("-fence")]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_ambiguous_framing_is_refused_and_nothing_reaches_the_origin(
        kairos: RunningKairos, upstream: Upstream, name: str) -> None:
    marker, statuses = run(kairos, REFUSED[name])
    assert statuses[:1] == [400], statuses
    assert 500 not in statuses
    assert unfenced(upstream, marker) == []      # neither the request nor the hidden one


@pytest.mark.parametrize("name", sorted(OTHER_CODINGS))
def test_a_coding_before_chunked_is_refused_and_the_connection_stays_in_step(
        kairos: RunningKairos, upstream: Upstream, name: str) -> None:
    marker, statuses = run(kairos, OTHER_CODINGS[name])
    assert statuses == [400, 200]
    assert unfenced(upstream, marker) == []
    assert len(origin_requests(upstream, marker)) == 1      # the fence


@pytest.mark.parametrize("name", sorted(ANSWERED))
def test_unambiguous_framing_reaches_the_origin_as_exactly_one_request(
        kairos: RunningKairos, upstream: Upstream, name: str) -> None:
    payload, body = ANSWERED[name]
    marker, statuses = run(kairos, payload)
    assert statuses[:1] == [200], statuses
    [received] = [r for r in origin_requests(upstream, marker) if not r.target.endswith("-fence")]
    assert received.target == f"/echo?{marker}" and received.body == body
    assert received.header(b"transfer-encoding") in ([], [b"chunked"])   # our own framing


def test_the_fence_sees_what_a_connection_carries(kairos: RunningKairos,
                                                  upstream: Upstream) -> None:
    """The method above can fail: two plain pipelined requests both reach the origin."""
    marker, statuses = run(kairos, b"GET /echo?{m} HTTP/1.1\r\n" + HOST + b"\r\n" + HIDDEN)
    assert statuses == [200, 200, 200]
    assert unfenced(upstream, marker) == [f"/echo?{marker}", f"/echo?{marker}-smuggled"]


@pytest.mark.parametrize("target", [
    b"http://evil.example/echo?{m}", b"https://169.254.169.254/echo?{m}",
    b"http://user:pw@evil.example:8080/echo?{m}",
])
def test_an_absolute_form_target_never_chooses_the_origin_or_the_host(
        kairos: RunningKairos, upstream: Upstream, target: bytes) -> None:
    """The upstream comes from configuration (P7); the public host from Host, so the cache
    key and what the origin is told agree; the authority in the target goes nowhere."""
    marker, statuses = run(kairos, b"GET " + target + b" HTTP/1.1\r\n" + HOST + b"\r\n")
    assert statuses[:1] == [200]
    [received] = [r for r in origin_requests(upstream, marker) if not r.target.endswith("-fence")]
    assert received.target == f"/echo?{marker}"
    assert received.header(b"x-forwarded-host") == [b"shop.test"]
    forwarded = b"".join(v for _, v in received.headers)
    assert b"evil.example" not in forwarded and b"169.254" not in forwarded
