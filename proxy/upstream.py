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
- ``"aiohttp"``, ``upstream_aiohttp.py``: the previous client, kept as a fallback (imported
  only when chosen). Why aiohttp and not
  httpx (the design card's choice): measured on the same machine against one nginx origin
  (``bench/upstream_clients.py``), httpx's default transport served 230-630 requests/s with
  a p99 up to 3 s at concurrency 50, where aiohttp served 2,400-3,900 requests/s; httpx
  over the ``httpx-aiohttp`` transport reached only a third of aiohttp. aiohttp takes header
  values as ``str`` and writes UTF-8, so a request header with non-UTF-8 obs-text bytes is
  answered 400 instead of being forwarded byte for byte (P11 allows either; never a 500);
  h1 answers the same 400 to keep the two alike.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .config import UpstreamConfig
from .headers import RawHeaders

# What uvicorn refuses to write in a header (it would raise mid-response, a P15-like crash).
BAD_HEADER_NAME = re.compile(rb'[\x00-\x20\x7f()<>@,;:\\\[\]={}"]')
BAD_HEADER_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_NON_ASCII_IN_TARGET = re.compile(rb"[^\x21-\x7e]")


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
    names, ``AiohttpUpstream`` (``upstream_aiohttp.py``) or ``H1Upstream`` (``upstream_h1.py``)."""

    def __new__(cls, config: UpstreamConfig) -> Any:
        if cls is Upstream:
            if config.client == "h1":
                from .upstream_h1 import H1Upstream
                cls = H1Upstream
            else:   # imported only when chosen: aiohttp costs a worker ~11 MB
                from .upstream_aiohttp import AiohttpUpstream
                cls = AiohttpUpstream
        return super().__new__(cls)

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


def safe_target(target: bytes) -> bytes:
    """Percent-encode bytes a URL may not hold raw (spaces, non-ASCII), keep the rest.
    ``*`` stays as it is: ``OPTIONS *`` asks about the server, not about a path."""
    if target == b"*":
        return target
    if not target.startswith(b"/"):
        target = b"/" + target
    return _NON_ASCII_IN_TARGET.sub(lambda m: b"%%%02X" % m.group(0)[0], target)
