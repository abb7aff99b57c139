"""Helpers shared by the hardening tests (test_security, test_smuggling, test_client_abuse,
test_rules_folder_faults): browser-like requests, a rules-driven Kairos, extra origin pages,
raw HTTP/1.1 exchanges and a full scan of what Valkey holds.

The extra origin pages are added to the test origin's route table under ``/sec-`` paths: the
origin looks routes up per request, so every ``Upstream`` of the session serves them.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import redis

from proxy.context import identity

from .conftest import RunningKairos, start_kairos
from .upstream_server import ROUTES, Received, _response

SECRET = "test-secret-0123456789abcdef"   # conftest's cookies.secrets
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
# A browser navigating to a document: only these are profiled and personalised.
PAGE = {"Accept": "text/html,application/xhtml+xml", "User-Agent": CHROME}
VISITOR_COOKIE = "kairos_v"


# -- waiting ------------------------------------------------------------------------------

def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    """Poll until ``predicate()`` is truthy (and return it); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)
    return value


# -- Kairos with a rules folder -----------------------------------------------------------

def write_rules(folder: Path, **files: str) -> Path:
    """``folder`` holding ``files`` (name without .toml -> text)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.toml").write_text(text)
    return folder


@contextmanager
def kairos_with_rules(upstream_url: str, store_url: str, folder: Path,
                      **overrides: Any) -> Iterator[RunningKairos]:
    """The real thing: rules and experiments from ``folder``, not the test stand-in."""
    running = start_kairos(upstream_url, store_url, transform=None,
                           **{"rules.folder": str(folder), **overrides})
    try:
        yield running
    finally:
        running.stop()


def health(kairos: RunningKairos) -> dict[str, Any]:
    response = httpx.get(kairos.url + "/_kairos/health")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def rule_errors(kairos: RunningKairos) -> list[str]:
    return health(kairos)["rules"]["errors"]  # type: ignore[no-any-return]


def why(kairos: RunningKairos, path: str = "/", cookies: Any = None,
        **headers: str) -> dict[str, Any]:
    response = httpx.get(kairos.url + "/_kairos/why", params={"path": path, "format": "json"},
                         cookies=cookies, headers={**PAGE, **headers})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


# -- the visitor cookie -------------------------------------------------------------------

def visitor_cookies(response: httpx.Response) -> list[str]:
    """Every ``kairos_v`` Set-Cookie line of a response."""
    return [line for line in response.headers.get_list("set-cookie")
            if line.startswith(VISITOR_COOKIE + "=")]


def cookie_value(response: httpx.Response) -> str:
    [line] = visitor_cookies(response)
    return line.split(";", 1)[0].split("=", 1)[1]


def decode_cookie(value: str, secrets: tuple[str, ...] = (SECRET,)
                  ) -> identity.VisitorState | None:
    return identity.decode(value, secrets, time.time())


def cookie_attributes(line: str) -> dict[str, str]:
    """``{"path": "/", "httponly": "", ...}`` of one Set-Cookie line."""
    out = {}
    for part in line.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        out[name.lower()] = value
    return out


# -- origin pages for these tests ---------------------------------------------------------

# Headers an origin framework may believe when building absolute URLs, redirects or routes
# (Rack, Symfony, IIS, Django, Spring): a cache poisoning primer if a visitor can set them.
REFLECTED = (
    "host", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-scheme", "x-forwarded-ssl",
    "x-forwarded-port", "x-forwarded-server", "x-forwarded-prefix", "x-host", "x-original-host",
    "x-original-url", "x-rewrite-url", "x-url-scheme", "front-end-https", "forwarded",
    "x-real-ip", "x-forwarded-for",
)


def _query(request: Received) -> dict[str, str]:
    return dict(parse_qsl(request.target.partition("?")[2]))


async def _reflect(request: Received, writer: asyncio.StreamWriter, up: Any) -> bool:
    """/sec-reflect/...: a cacheable page that shows the forwarding-ish headers it got, as a
    naive origin building absolute links from them would; and the body of a GET."""
    items = "".join(
        f'<li id="h-{name}">{b"|".join(request.header(name.encode())).decode("latin-1")}</li>'
        for name in REFLECTED)
    body = (f"<!doctype html><html><head><title>r</title></head><body><h1>Hello</h1>"
            f"<ul>{items}</ul><pre>{request.body.decode('latin-1')}</pre></body></html>")
    writer.write(_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                      ("Cache-Control", "public, max-age=300")],
                           body.encode()))
    await writer.drain()
    return True


async def _policy_page(request: Received, writer: asyncio.StreamWriter, up: Any) -> bool:
    """/sec-page?nonce=N&vary=V&cc=C: an HTML page with a nonce-based CSP (and its
    report-only twin), an inline script carrying the nonce, and the given Vary and
    Cache-Control."""
    query = _query(request)
    nonce = query.get("nonce", "n0nce-123")
    body = (f"<!doctype html><html><head><title>p</title>"
            f'<script nonce="{nonce}">var a = 1;</script></head>'
            "<body><h1>Hello</h1><p>text</p></body></html>").encode()
    headers = [("Content-Type", "text/html; charset=utf-8"),
               ("Content-Security-Policy", f"default-src 'self'; script-src 'nonce-{nonce}'"),
               ("Content-Security-Policy-Report-Only", "img-src 'none'"),
               ("Cache-Control", query.get("cc", "public, s-maxage=600, max-age=60"))]
    if "vary" in query:
        headers.append(("Vary", query["vary"]))
    writer.write(_response("200 OK", headers, body))
    await writer.drain()
    return True


ROUTES.setdefault("/sec-reflect", _reflect)
ROUTES.setdefault("/sec-page", _policy_page)


def origin_requests(upstream: Any, marker: str) -> list[Received]:
    """What the origin received whose target contains ``marker``."""
    return [r for r in list(upstream.received) if marker in r.target]


# -- raw HTTP/1.1 ---------------------------------------------------------------------------

@dataclass
class RawResponse:
    status: int
    head: bytes
    body: bytes


def parse_responses(data: bytes) -> list[RawResponse]:
    """Every complete HTTP/1.1 response in ``data`` (Content-Length or chunked framing);
    a trailing incomplete one is left out."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        if length:
            size = int(length.group(1))
            if len(rest) < size:
                break
            body, data = rest[:size], rest[size:]
        elif re.search(rb"(?im)^transfer-encoding:\s*chunked\s*$", head):
            body, data, complete = _dechunk(rest)
            if not complete:
                break
        elif 100 <= status < 200 or status in (204, 304):
            body, data = b"", rest
        else:   # framed by the close
            body, data = rest, b""
        out.append(RawResponse(status, head, body))
    return out


def _dechunk(data: bytes) -> tuple[bytes, bytes, bool]:
    """(body, what follows, complete) of a chunked body at the start of ``data``."""
    body = b""
    while True:
        line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return body, data, False
        size = int(line.split(b";")[0], 16)
        if size == 0:
            while True:   # trailer fields up to the empty line
                trailer, sep, rest = rest.partition(b"\r\n")
                if not sep:
                    return body, data, False
                if not trailer:
                    return body, rest, True
        if len(rest) < size + 2:
            return body, data, False
        body, data = body + rest[:size], rest[size + 2:]


def converse(port: int, payload: bytes, fence: bytes, timeout: float = 5.0) -> list[RawResponse]:
    """Send ``payload`` and then ``fence`` (a request with ``Connection: close``) on one
    connection, and read until the server closes it: every response the connection carried.

    Requests on one connection are answered in order, so once the fence is answered (or the
    connection closed) anything Kairos parsed out of ``payload`` has reached the origin.
    """
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        with suppress(OSError):   # closed after an error answer: nothing more is parsed
            sock.sendall(fence)
        deadline = time.monotonic() + timeout
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                assert time.monotonic() < deadline, "the connection was never closed"
        except ConnectionResetError:
            pass
    return parse_responses(b"".join(chunks))


# -- Valkey ---------------------------------------------------------------------------------

def every_stored_byte(url: str) -> Iterator[tuple[bytes, bytes]]:
    """(key, one value) for every key in every database of the store, of every type."""
    with redis.Redis.from_url(url) as client:
        databases = int(client.config_get("databases").get("databases", 16))
    for db in range(databases):
        with redis.Redis.from_url(url, db=db) as client:
            for key in client.scan_iter(count=1000):
                yield key, key
                yield from ((key, v) for v in _values(client, key))


def _values(client: redis.Redis, key: bytes) -> Iterator[bytes]:
    kind = client.type(key)
    if kind == b"string":
        yield client.get(key) or b""
    elif kind == b"hash":
        for field, value in client.hgetall(key).items():
            yield field
            yield value
    elif kind == b"list":
        yield from client.lrange(key, 0, -1)
    elif kind == b"set":
        yield from client.smembers(key)
    elif kind == b"zset":
        for member, score in client.zrange(key, 0, -1, withscores=True):
            yield member
            yield repr(score).encode()
    elif kind == b"stream":
        for entry_id, fields in client.xrange(key):
            yield entry_id
            for field, value in fields.items():
                yield field
                yield value
    else:
        yield client.dump(key) or b""
