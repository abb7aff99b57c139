"""The connection to the origin: one long-lived client per worker, opened in the lifespan.

Role: send a request with raw headers and a streamed body, hand back status, raw headers and
the raw (still encoded) body chunks. Everything the HTTP library can raise is translated,
once, into :mod:`proxy.errors` (502/504), so the rest of the proxy never sees a library
exception.

Two clients implement the interface below; ``upstream.client`` picks one:

- ``"h1"`` (default), ``upstream_h1.py``: Kairos's own HTTP/1.1 client on asyncio + httptools.
  Measured on the 2-core bench machine (``bench/README.md``, "Pass-through after
  optimisation"): Kairos's CPU per 10 KB pass-through fell from ~500-640 µs on aiohttp to
  ~250-340 µs, and its throughput at 10 KB, concurrency 10, rose 1.96-2.01x in three runs
  (11-14 % of nginx to 23-27 %), and 1.2-2.3x in every other cell (10 KB-1 MB, concurrency
  1-50). The decision rule: default to h1 only if the whole suite passes on both clients and
  h1 is at least 1.5x faster at 10 KB, concurrency 10.
- ``"aiohttp"``, this module: the previous client, kept as a fallback. Why aiohttp and not
  httpx (the design card's choice): measured on the same machine against one nginx origin
  (``bench/upstream_clients.py``), httpx's default transport served 230-630 requests/s with
  a p99 up to 3 s at concurrency 50, where aiohttp served 2,400-3,900 requests/s; httpx
  over the ``httpx-aiohttp`` transport reached only a third of aiohttp. aiohttp takes header
  values as ``str`` and writes UTF-8, so a request header with non-UTF-8 obs-text bytes is
  answered 400 instead of being forwarded byte for byte (P11 allows either; never a 500);
  h1 answers the same 400 to keep the two alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from .config import UpstreamConfig
from .errors import (
    BadRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .headers import RawHeaders

# What uvicorn refuses to write in a header (it would raise mid-response, a P15-like crash).
BAD_HEADER_NAME = re.compile(rb'[\x00-\x20\x7f()<>@,;:\\\[\]={}"]')
BAD_HEADER_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_NON_ASCII_IN_TARGET = re.compile(rb"[^\x21-\x7e]")
# aiohttp adds these unless told not to; a transparent proxy sends only the visitor's.
_NO_DEFAULTS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
_MAX_FIELD = 64 * 1024   # large cookies are real; aiohttp's default is 8 KB


@dataclass(slots=True)   # not frozen: a frozen dataclass costs 2.5x to build, per request
class UpstreamRequest:
    method: str
    target: bytes                     # raw path plus ?query, exactly as the visitor sent it
    headers: RawHeaders
    body: AsyncIterator[bytes] | None  # None: no body, no chunked framing (P13)
    content_length: int | None = None


class UpstreamResponse:
    """Status and headers are read; the body is still on the wire until iterated.

    ``headers`` are raw lower-case ``(name, value)`` byte pairs, repeats kept in order, minus
    lines uvicorn could not write (counted in ``dropped_headers``).
    """

    status: int
    headers: RawHeaders
    dropped_headers: int

    def chunks(self) -> AsyncIterator[bytes]:
        """Raw body bytes as they arrive (never decoded: pass-through keeps the encoding);
        raises :class:`proxy.errors.UpstreamError` if the body ends short."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Return the connection to the pool if the body was read to its end, else drop it."""
        raise NotImplementedError


class Upstream:
    """The client to the origin: ``Upstream(config)`` builds the one ``upstream.client``
    names, ``AiohttpUpstream`` (this module) or ``H1Upstream`` (``upstream_h1.py``)."""

    def __new__(cls, config: UpstreamConfig) -> Any:
        if cls is Upstream:
            if config.client == "h1":
                from .upstream_h1 import H1Upstream
                cls = H1Upstream
            else:
                cls = AiohttpUpstream
        return super().__new__(cls)

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


class AiohttpResponse(UpstreamResponse):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        raw = response.raw_headers
        self.headers: RawHeaders = [
            (n.lower(), v) for n, v in raw
            if not (BAD_HEADER_NAME.search(n) or BAD_HEADER_VALUE.search(v))
        ]
        # Header lines uvicorn could not write; dropped rather than crash mid-response.
        self.dropped_headers = len(raw) - len(self.headers)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Raw body bytes as they arrive (never decoded: pass-through keeps the encoding)."""
        with translate_errors():
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # release() returns a fully read connection to the pool; close() drops one that
        # still has unread body bytes (an aborted stream must not be reused).
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpUpstream(Upstream):
    def __init__(self, config: UpstreamConfig) -> None:
        self._config = config
        self._base = URL(config.url.rstrip("/"))
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily inside the running loop (aiohttp binds to it), once per worker.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._config.max_connections, limit_per_host=0,
                    keepalive_timeout=self._config.keepalive_expiry, ttl_dns_cache=60,
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self._config.pool_timeout + self._config.connect_timeout,
                    sock_connect=self._config.connect_timeout,
                    sock_read=self._config.read_timeout,
                ),
                auto_decompress=False,              # pass-through keeps the encoding (P17)
                skip_auto_headers=_NO_DEFAULTS,
                cookie_jar=aiohttp.DummyCookieJar(),  # never remember one visitor's cookies
                trust_env=False,
                requote_redirect_url=False,
                max_field_size=_MAX_FIELD, max_line_size=_MAX_FIELD,
            )
        return self._session

    async def send(self, request: UpstreamRequest) -> AiohttpResponse:
        headers = _str_headers(request.headers)
        if request.content_length is not None:
            headers.append(("Content-Length", str(request.content_length)))
        url = URL(str(self._base) + safe_target(request.target).decode("ascii"), encoded=True)
        with translate_errors():
            try:
                async with asyncio.timeout(self._config.headers_deadline):
                    response = await self._client().request(
                        request.method, url, headers=headers, data=request.body,
                        allow_redirects=False, compress=None,
                    )
            except TimeoutError:
                raise UpstreamTimeout(
                    f"no response headers within {self._config.headers_deadline} s"
                ) from None
        if problem := _framing_problem(response):
            response.close()
            raise UpstreamProtocolError(problem)
        return AiohttpResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _str_headers(headers: RawHeaders) -> list[tuple[str, str]]:
    """aiohttp wants ``str``; UTF-8 round-trips exactly, other obs-text bytes cannot (P11)."""
    out = []
    for name, value in headers:
        try:
            out.append((name.decode("ascii"), value.decode("utf-8")))
        except UnicodeDecodeError:
            raise BadRequest(
                f"header {name.decode('latin-1')!r} holds bytes that are not UTF-8; "
                "they cannot be forwarded unchanged"
            ) from None
    return out


def _framing_problem(response: aiohttp.ClientResponse) -> str | None:
    """What makes this response unsafe to relay (P14, P15), or None."""
    if not 200 <= response.status <= 599:
        return f"invalid upstream status {response.status}"
    names = [n.lower() for n, _ in response.raw_headers]
    if b"transfer-encoding" in names and b"content-length" in names:
        # Request-smuggling shape: the two framings may disagree about where the body ends.
        return "upstream sent both Transfer-Encoding and Content-Length"
    return None


def safe_target(target: bytes) -> bytes:
    """Percent-encode bytes a URL may not hold raw (spaces, non-ASCII), keep the rest."""
    if not target.startswith(b"/"):
        target = b"/" + target
    return _NON_ASCII_IN_TARGET.sub(lambda m: b"%%%02X" % m.group(0)[0], target)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """The one place where aiohttp's exceptions become the proxy's (502 or 504)."""
    try:
        yield
    except UpstreamError:
        raise
    except (aiohttp.ServerTimeoutError, aiohttp.ConnectionTimeoutError,
            aiohttp.SocketTimeoutError, TimeoutError) as exc:
        raise UpstreamTimeout(f"upstream timed out ({type(exc).__name__})") from None
    except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError,
            aiohttp.ServerDisconnectedError) as exc:
        raise UpstreamProtocolError(f"upstream broke HTTP: {type(exc).__name__}: {exc}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable(f"upstream unreachable: {type(exc).__name__}: {exc}") from None
