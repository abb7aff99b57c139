"""Pages the edge cache may not keep, parsed once while the origin repeats itself.

Many pages cannot be cached (``no-store``, ``private``, a ``Set-Cookie``, the cache turned
off) and yet come back from the origin byte for byte the same, view after view. Parsing such
a page again on every view is most of what an uncached view costs (about 1.3 ms of lexbor
per 100 KB, plus a gzip round trip). Here a page's preparation (decoded text, compiled
slots, gzip pieces: :class:`proxy.page_cache.Prepared`) is remembered under the exact bytes
the origin sent, the page's host and path, and its encoding headers.

Nothing is ever served from here that the origin did not just send: the key *is* the fresh
body (compared in full on a hit), so this is no cache of responses, and freshness, ``Vary``
and ``private`` do not come into it. A body is remembered from its second sighting on, so
pages that differ on every view (a token, a timestamp) cost a hash each and no parse or
memory; one seen twice costs one preparation, made in a thread like a cached page's.

Memory: ``cache.repeated_pages_mb`` per worker, least recently used first out, bodies plus
what their preparation holds (the same count the edge cache uses).

A hit does not hash the whole body: that costs ~28 µs for 100 KB (siphash, timeit), and each
view's body is a new bytes object, so its hash is never cached. In the key a body is a
:class:`Body`, hashed by its length and first and last bytes and equal only to the same
bytes (a full compare: ~2 µs). Only a body that is not remembered is hashed in full, to
count its sightings.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .headers import RawHeaders, first

# A page remembered only on its second sighting: this many first sightings are kept (as
# hashes only, a few dozen bytes each) before the oldest are forgotten.
SIGHTINGS = 4096
ENTRY_OVERHEAD = 512

EDGE = 512   # bytes from each end of a body that its key's hash covers


class Body:
    """A page body as part of a dict key: hashed by its length and first and last ``EDGE``
    bytes, equal only to a Body of the same bytes. Bodies that differ only in the middle
    share a hash and are told apart by the full compare."""

    __slots__ = ("_hash", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._hash = hash((len(data), data[:EDGE], data[-EDGE:]))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Body) and self._hash == other._hash and self.data == other.data


MemoKey = tuple[str, str, bytes, bytes, Body]   # host, path, coding, content type, body


class RepeatedPage:
    """One remembered body, shaped like a cache entry for :class:`Preparer`."""

    __slots__ = ("body", "coding", "compiled", "headers", "key", "size", "stored")

    def __init__(self, key: MemoKey, headers: RawHeaders) -> None:
        self.key = key
        self.body = key[4].data
        self.coding = key[2] or None
        self.headers = [(n, v) for n, v in headers
                        if n in (b"content-encoding", b"content-type")]
        self.compiled: Any = None   # the Preparer's: a Prepared, or the version being prepared
        self.stored = True
        self.size = ENTRY_OVERHEAD + len(self.body) + len(key[0]) + len(key[1])


class RepeatedPages:
    """Bounded by bytes; per worker, touched only from the event loop."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._pages: OrderedDict[MemoKey, RepeatedPage] = OrderedDict()
        self._seen: OrderedDict[int, None] = OrderedDict()
        self.counts = {"hits": 0, "misses": 0, "remembered": 0, "evictions": 0}

    def find(self, host: str, path: str, headers: RawHeaders, body: bytes) -> RepeatedPage | None:
        """The remembered page with exactly this body (and is now remembered, if this is its
        second sighting), or None."""
        if len(body) > self.max_bytes // 8:   # like the edge cache: no page takes it all
            return None
        key = (host, path, first(headers, b"content-encoding") or b"",
               first(headers, b"content-type") or b"", Body(body))
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
            self.counts["hits"] += 1
            return page
        self.counts["misses"] += 1
        digest = hash((*key[:4], body))   # the whole body: pages that differ anywhere
        if digest not in self._seen:
            self._seen[digest] = None
            if len(self._seen) > SIGHTINGS:
                self._seen.popitem(last=False)
            return None
        del self._seen[digest]
        page = RepeatedPage(key, headers)
        self._pages[key] = page
        self.bytes += page.size
        self.counts["remembered"] += 1
        self._trim()
        return page

    def charge(self, page: RepeatedPage, extra: int) -> None:
        """Count what the page's preparation holds; evict to stay within the budget."""
        if not page.stored:
            return
        page.size += extra
        self.bytes += extra
        self._trim()

    def clear(self) -> None:
        for page in self._pages.values():
            page.stored = False
        self._pages.clear()
        self._seen.clear()
        self.bytes = 0

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._pages), "bytes": self.bytes, **self.counts}

    def _trim(self) -> None:
        while self.bytes > self.max_bytes and self._pages:
            _, oldest = self._pages.popitem(last=False)
            oldest.stored = False
            self.bytes -= oldest.size
            self.counts["evictions"] += 1
