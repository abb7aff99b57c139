"""The edge cache's I/O: revalidating stale pages in the background, and its metrics.

:mod:`proxy.cache` decides what may be kept and which stored page answers which request
(pure); the hot path (:mod:`proxy.http_proxy`) looks pages up and stores them. A page served
stale within its ``stale-while-revalidate`` window is refreshed here, after the visitor got
it: one conditional request per page at a time (the cache hands out one revalidation), a 304
refreshes the stored headers and freshness, a 200 replaces the page, anything else leaves
the stale page for the next request to retry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .byte_splice import byte_map
from .cache import CacheEntry, EdgeCache, conditional_headers
from .errors import ProxyError
from .gzip_pieces import precompress
from .headers import RawHeaders, response_headers, rewrite_origin_urls
from .metrics import Metrics
from .page import Decoded, decode_page
from .page_memo import RepeatedPage, RepeatedPages
from .upstream import Upstream, UpstreamRequest

log = logging.getLogger("kairos.cache")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


class Revalidator:
    def __init__(self, cache: EdgeCache, upstream: Upstream, origin: tuple[str, str, int],
                 limit: int, metrics: Metrics) -> None:
        self.cache = cache
        self.upstream = upstream
        self.origin = origin
        self.limit = limit
        self.metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()
        metrics.gauge_stats("cache", cache.stats, ("entries", "bytes", "hits", "stale_hits",
                            "misses", "stores", "evictions", "not_modified", "purged"))

    def later(self, entry: CacheEntry, scheme: str, host: bytes, target: bytes,
              request_headers: RawHeaders) -> None:
        task = asyncio.get_running_loop().create_task(
            self._revalidate(entry, scheme, host, target, request_headers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _revalidate(self, entry: CacheEntry, scheme: str, host: bytes, target: bytes,
                          request_headers: RawHeaders) -> None:
        sent = time.time()
        headers = [*request_headers, *conditional_headers(entry)]
        try:
            response = await self.upstream.send(UpstreamRequest(
                method="GET", target=target, headers=headers, body=None, content_length=None))
            try:
                origin = rewrite_origin_urls(response_headers(response.headers), self.origin,
                                             scheme.encode() + b"://" + host)
                if response.status == 304:
                    self.cache.refresh(entry, request_headers, origin, time.time(),
                                       request_time=sent)
                    return
                body = await _read(response, self.limit)
                if response.status == 200 and body is not None:
                    self.cache.store(scheme, host, target, request_headers, 200, origin, body,
                                     time.time(), request_time=sent)
                    return
            finally:
                await response.aclose()
        except ProxyError as exc:
            log.info("revalidation of %s failed: %s", target.decode("latin-1"), exc.detail)
        except Exception:
            log.exception("revalidation of %s failed", target.decode("latin-1"))
        self.cache.revalidation_failed(entry)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)


async def _read(response: Any, limit: int) -> bytes | None:
    chunks, size = [], 0
    async for chunk in response.chunks():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A cached page made ready for views: decoded once, compiled for the rule set
    ``version`` (None: it could not be: every view takes the full path)."""

    version: Any   # (Any, not object: mypyc cannot build an object field, bench/compiled.py)
    decoded: Decoded | None = None
    compiled: Any = None


MAX_PENDING = 4


class Preparer:
    """Decodes and compiles cached pages off the event loop (compiling costs about one full
    rewrite, and up to a few hundred ms for selectors that match thousands of elements);
    meanwhile views take the full path, which gives the same page.

    One page at a time, on one thread shared by every Preparer of the worker: lexbor holds
    the GIL while it parses, so more threads would not prepare faster, but each would hold
    a parse tree (several times the page) and a malloc arena of its own: with 50 connections
    missing the cache, that was ~30 MB of the worker's peak memory.

    At most :data:`MAX_PENDING` preparations wait or run at once: a page stored while the
    thread is that far behind is prepared at its first hit instead. Unbounded, a stream of
    misses on ever new URLs (each stored, most never seen again) queued a preparation per
    page faster than one thread could work them off, and every queued page stayed alive,
    evicted or not: ~60 MB of a worker's peak in bench/personalised.py's memory run. A page
    evicted while it waited is not prepared at all."""

    def __init__(self, transform: Any, limit: int, cache: EdgeCache | RepeatedPages,
                 thread: ThreadPoolExecutor) -> None:
        self.transform = transform
        self.limit = limit
        self.cache = cache   # whose budget a preparation is charged to
        self.thread = thread
        self._tasks: set[asyncio.Task[None]] = set()

    def ready(self, entry: CacheEntry | RepeatedPage, host: str, path: str) -> Prepared | None:
        """The page's preparation for the current rules, or None (started if need be)."""
        version_of = getattr(self.transform, "prepared_for", None)
        if version_of is None:
            return None
        version = version_of()
        slot = entry.compiled
        if isinstance(slot, Prepared) and slot.version is version:
            return slot if slot.decoded is not None else None
        if slot is not version and len(self._tasks) < MAX_PENDING:   # not being prepared
            entry.compiled = version
            task = asyncio.get_running_loop().create_task(
                self._prepare(entry, version, host, path))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return None

    async def _prepare(self, entry: CacheEntry | RepeatedPage, version: object, host: str,
                       path: str) -> None:
        prepared = await asyncio.get_running_loop().run_in_executor(
            self.thread, self._build, entry, version, host, path)
        if entry.compiled is version:   # nothing newer meanwhile (a reload, a refresh)
            entry.compiled = prepared
            # What the page now holds besides its wire bytes counts against cache.max_mb.
            self.cache.charge(entry, _size(prepared, entry.body))  # type: ignore[arg-type]

    def _build(self, entry: CacheEntry | RepeatedPage, version: object, host: str,
               path: str) -> Prepared:
        if not entry.stored:   # evicted while it waited: nobody will see it again
            return Prepared(version)
        try:
            decoded = decode_page(entry.body, entry.headers, self.limit)
            compiled = self.transform.prepare(decoded.html, host, path)
            changeable = regions(decoded.html, compiled)
            decoded = dataclasses.replace(decoded, bytes_map=byte_map(
                decoded.html, decoded.raw, decoded.bom, decoded.codec,
                [edge for region in changeable for edge in region]))
            if (entry.coding or b"").strip().lower() in (b"gzip", b"x-gzip"):   # slots only
                pieces = precompress(decoded.html, changeable, decoded.codec,
                                     decoded.raw[:decoded.bom])
                decoded = dataclasses.replace(decoded, pieces=pieces)
            return Prepared(version, decoded, compiled)
        except Exception as exc:   # undecodable or a bug: views keep the full path
            log.info("cached page %s not compiled: %s", path, exc)
            return Prepared(version)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)


def _size(prepared: Prepared, body: bytes) -> int:
    """Bytes a preparation holds, roughly: decoded bytes (unless they are the stored body
    itself), the text (1-4 bytes a character), the gzip pieces and the compiled slots."""
    decoded = prepared.decoded
    if decoded is None:
        return 0
    size = (0 if decoded.raw is body else len(decoded.raw)) + sys.getsizeof(decoded.html)
    if decoded.pieces is not None:
        size += sum(len(blob) for blob in decoded.pieces.blobs) + decoded.pieces.table_bytes()
    return size + 64 * getattr(prepared.compiled, "element_count", 0) + 1024


def regions(html: str, compiled: Any) -> list[tuple[int, int]]:
    """Where a view's edits can fall: every element a rule or arm may change, and the point
    where the goals script goes (before the last ``</body>``)."""
    out = [(m.start(), m.start()) for m in _BODY_END.finditer(html)][-1:]
    for selector in getattr(compiled, "selectors", ()):
        for element in compiled.elements(selector):
            if isinstance(element.located, str):
                continue   # never edited: rewrite leaves such elements alone
            end = element.ends.end if not isinstance(element.ends, str) \
                else element.located.end
            out.append((element.located.start, end))
    return out
