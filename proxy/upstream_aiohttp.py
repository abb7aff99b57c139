"""The ``"aiohttp"`` upstream client (``upstream.client = "aiohttp"``), kept as a fallback
for the default ``"h1"`` client; :mod:`proxy.upstream` says why both exist and what was
measured. In its own module so that workers on ``"h1"`` never import aiohttp (~11 MB each).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

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
from .upstream import (
    BAD_HEADER_NAME,
    BAD_HEADER_VALUE,
    Upstream,
    UpstreamRequest,
    UpstreamResponse,
    safe_target,
)

# aiohttp adds these unless told not to; a transparent proxy sends only the visitor's.
_NO_DEFAULTS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
_MAX_FIELD = 64 * 1024   # large cookies are real; aiohttp's default is 8 KB


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
        # A URL cannot hold the asterisk-form target of ``OPTIONS *``: aiohttp sends ``/*``.
        target = safe_target(request.target) if request.target != b"*" else b"/*"
        url = URL(str(self._base) + target.decode("ascii"), encoded=True)
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
