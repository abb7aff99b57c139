"""The connection to the origin: one long-lived client per worker, opened in the lifespan.

Role: send a request with raw byte headers and a streamed body, hand back status, raw
headers and the raw (still encoded) body chunks. Everything the HTTP library can raise is
translated here, once, into :mod:`proxy.errors` (502/504), so the rest of the proxy never
sees an httpx exception.

The card names httpx and we keep its API; which transport sits under it is chosen by
measurement (``bench/README.md``, "Upstream client").
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx

from .config import UpstreamConfig
from .errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .headers import RawHeaders

# What uvicorn refuses to write in a header (it would raise mid-response, P15-like crash).
_BAD_NAME = re.compile(rb'[\x00-\x20\x7f()<>@,;:\\\[\]={}"]')
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_NON_ASCII_IN_TARGET = re.compile(rb"[^\x21-\x7e]")


@dataclass(frozen=True)
class UpstreamRequest:
    method: str
    target: bytes                     # raw path plus ?query, exactly as the visitor sent it
    headers: RawHeaders
    body: AsyncIterator[bytes] | None  # None: no body at all, no framing headers (P13)
    content_length: int | None = None


class UpstreamResponse:
    """Status and headers are read; the body is still on the wire until iterated."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: RawHeaders = [
            (n.lower(), v) for n, v in response.headers.raw
            if not (_BAD_NAME.search(n) or _BAD_VALUE.search(v))
        ]
        # Header lines uvicorn could not write; dropped rather than crash mid-response.
        self.dropped_headers = len(response.headers.raw) - len(self.headers)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Raw body bytes as they arrive (never decoded: pass-through keeps the encoding)."""
        with translate_errors():
            async for chunk in self._response.aiter_raw():
                if chunk:
                    yield chunk

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._response.aclose()


class Upstream:
    def __init__(
        self, config: UpstreamConfig, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._config = config
        self._base = httpx.URL(config.url)
        self._client = httpx.AsyncClient(
            transport=transport or _default_transport(config),
            timeout=httpx.Timeout(
                connect=config.connect_timeout, read=config.read_timeout,
                write=config.write_timeout, pool=config.pool_timeout,
            ),
            follow_redirects=False,
            trust_env=False,       # no proxies or .netrc picked up from the environment
            headers={},            # no default User-Agent / Accept of httpx's own
        )
        # httpx adds these unless told otherwise; a transparent proxy must not.
        self._client.headers.clear()

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        url = self._base.copy_with(raw_path=_safe_target(request.target))
        headers = list(request.headers)
        if request.content_length is not None:
            headers.append((b"content-length", str(request.content_length).encode()))
        httpx_request = self._client.build_request(
            request.method, url, headers=headers, content=request.body,
        )
        if request.body is None:
            # build_request adds nothing for content=None, but be explicit: no framing (P13).
            httpx_request.headers.pop("transfer-encoding", None)
        with translate_errors():
            try:
                async with asyncio.timeout(self._config.headers_deadline):
                    response = await self._client.send(httpx_request, stream=True)
            except TimeoutError:
                raise UpstreamTimeout(
                    f"no response headers within {self._config.headers_deadline} s"
                ) from None
        if problem := _framing_problem(response):
            await response.aclose()
            raise UpstreamProtocolError(problem)
        return UpstreamResponse(response)

    async def aclose(self) -> None:
        await self._client.aclose()


def _framing_problem(response: httpx.Response) -> str | None:
    """What makes this response unsafe to relay (P14, P15), or None."""
    if not 200 <= response.status_code <= 599:
        return f"invalid upstream status {response.status_code}"
    names = [n.lower() for n, _ in response.headers.raw]
    if b"transfer-encoding" in names and b"content-length" in names:
        # Request-smuggling shape: the two framings may disagree about where the body ends.
        return "upstream sent both Transfer-Encoding and Content-Length"
    return None


def _default_transport(config: UpstreamConfig) -> httpx.AsyncBaseTransport:
    return httpx.AsyncHTTPTransport(
        limits=httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
            keepalive_expiry=config.keepalive_expiry,
        ),
        retries=0,  # never retry: a POST must not reach the origin twice (P28)
    )


def _safe_target(target: bytes) -> bytes:
    """Percent-encode bytes a URL may not hold raw (spaces, non-ASCII), keep the rest."""
    if not target.startswith(b"/"):
        target = b"/" + target
    return _NON_ASCII_IN_TARGET.sub(lambda m: b"%%%02X" % m.group(0)[0], target)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """The one place where httpx's exceptions become the proxy's (502 or 504)."""
    try:
        yield
    except UpstreamError:
        raise
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"upstream timed out ({type(exc).__name__})") from None
    except (httpx.RemoteProtocolError, httpx.LocalProtocolError, httpx.DecodingError) as exc:
        raise UpstreamProtocolError(f"upstream broke HTTP: {exc}") from None
    except (httpx.TransportError, OSError) as exc:
        raise UpstreamUnavailable(f"upstream unreachable: {type(exc).__name__}: {exc}") from None
    except ValueError as exc:
        # h11 raises plain ValueError/LocalProtocolError on some malformed headers.
        raise UpstreamProtocolError(f"upstream sent something unusable: {exc}") from None
