"""The per-worker edge cache: origin HTML pages in memory, bounded by bytes, least recently
used out first.

What is kept is the origin's response as it came (wire body, still content-encoded, and its
headers, minus ``Age``); Kairos personalises every hit afterwards, so nothing kept is ever
visitor-specific. Pure and synchronous: the caller passes the wall clock (``time.time()``) and
does all I/O; one event loop per worker means no locking.
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from ..headers import HOP_BY_HOP, RawHeaders, first, without
from ..values import quick_init
from . import keys
from .freshness import (
    Freshness,
    NotStored,
    content_coded,
    decide,
    request_wants_validation,
    vary_names,
)

# Bytes charged per entry on top of its body, headers and key (objects, dict slots).
ENTRY_OVERHEAD = 512
HEADER_OVERHEAD = 16
# Variants (Vary) of one URL; beyond it the oldest goes, so a page that varies on a field
# visitors choose (User-Agent) cannot turn a lookup into a long scan.
MAX_VARIANTS = 32
# A background revalidation that has not reported back after this long is handed out again.
REVALIDATION_TIMEOUT = 30.0
# Not taken from a 304 (RFC 9111 §3.2): they describe the stored body or the connection.
_NOT_UPDATED = HOP_BY_HOP | {b"content-length", b"content-encoding", b"content-range"}
# Reasons that are about this request, not about the page: the stored page stays.
_REQUEST_REASONS = frozenset({"method", "request_no_store", "authorization"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class CacheState(enum.Enum):
    MISS = "miss"                       # fetch as usual, then offer the page to store()
    FRESH = "fresh"                     # serve entry
    STALE_REVALIDATE_IN_BACKGROUND = "stale"   # serve entry; revalidate if told to
    MUST_REVALIDATE = "revalidate"      # conditional request first (conditional_headers)


class CacheEntry:
    """One stored response. ``compiled`` is the caller's: anything derived from the body
    (a parsed page), kept across 304 refreshes, gone with a new body (a new entry)."""

    __slots__ = ("body", "coding", "compiled", "freshness", "headers", "key",
                 "revalidating_since", "size", "stored", "vary")

    def __init__(self, key: keys.PrimaryKey, vary: keys.VaryKey, headers: RawHeaders,
                 body: bytes, freshness: Freshness) -> None:
        self.key = key
        self.vary = vary
        self.headers = headers
        self.body = body
        self.freshness = freshness
        self.coding = first(headers, b"content-encoding")
        self.compiled: Any = None
        self.stored = False     # in the cache now (False once evicted, purged or replaced)
        self.revalidating_since: float | None = None
        self.size = (ENTRY_OVERHEAD + len(body) + sum(map(len, key))
                     + sum(len(n) + len(v) + HEADER_OVERHEAD for n, v in headers)
                     + sum(len(n) + len(v or b"") for n, v in vary))

    @property
    def status(self) -> int:
        return 200

    def matches(self, request_headers: RawHeaders) -> bool:
        return keys.matches(self.vary, self.coding, request_headers)


@quick_init
@dataclass(frozen=True, slots=True)
class Lookup:
    state: CacheState
    entry: CacheEntry | None = None
    # Pass to store() so that a page fetched before a purge is not stored after it.
    generation: int = 0
    # STALE_REVALIDATE_IN_BACKGROUND: this caller starts the background revalidation (one
    # at a time per entry); the others just serve the stale page.
    start_revalidation: bool = False


def conditional_headers(entry: CacheEntry) -> RawHeaders:
    """Validators of the stored page, to add to the upstream request (after removing the
    visitor's own conditional and range headers)."""
    out: RawHeaders = []
    if entry.freshness.etag is not None:
        out.append((b"if-none-match", entry.freshness.etag))
    if entry.freshness.last_modified is not None:
        out.append((b"if-modified-since", entry.freshness.last_modified))
    return out


def age_value(entry: CacheEntry, now: float) -> bytes:
    """The ``Age`` header value for a hit: whole seconds, rounded down (RFC 9111 §5.1)."""
    return str(int(entry.freshness.age(now))).encode()


def served_headers(entry: CacheEntry, now: float) -> RawHeaders:
    """The stored headers with this hit's ``Age``."""
    return [*entry.headers, (b"age", age_value(entry, now))]


class EdgeCache:
    def __init__(self, max_bytes: int, serve_stale_seconds: float = 60.0) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes // 8
        self.serve_stale_seconds = serve_stale_seconds
        self.bytes = 0
        self.generation = 0
        self._variants: dict[keys.PrimaryKey, list[CacheEntry]] = {}
        self._lru: OrderedDict[CacheEntry, None] = OrderedDict()   # oldest first
        self.counts: Counter[str] = Counter()
        self.not_stored: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._lru)

    # -- reading --------------------------------------------------------------------------

    def lookup(self, scheme: str | bytes, host: str | bytes, target: str | bytes,
               request_headers: RawHeaders, now: float) -> Lookup:
        """What to do with a GET: ``request_headers`` as they go to the origin."""
        if first(request_headers, b"authorization") is not None:
            self.counts["bypass"] += 1   # a signed-in view is never answered from the cache
            return Lookup(CacheState.MISS, None, self.generation)
        entry = self._find(keys.primary_key(scheme, host, target), request_headers)
        if entry is None:
            self.counts["misses"] += 1
            return Lookup(CacheState.MISS, None, self.generation)
        self._lru.move_to_end(entry)
        f = entry.freshness
        if request_wants_validation(request_headers, f.age(now)):
            return self._revalidate(entry)
        if f.fresh(now):
            self.counts["hits"] += 1
            return Lookup(CacheState.FRESH, entry, self.generation)
        window = min(f.stale_while_revalidate, self.serve_stale_seconds)
        if not f.no_stale and window > 0 and f.staleness(now) <= window:
            self.counts["hits"] += 1
            self.counts["stale_hits"] += 1
            since = entry.revalidating_since
            start = since is None or not 0 <= now - since < REVALIDATION_TIMEOUT
            if start:
                entry.revalidating_since = now
                self.counts["revalidations"] += 1
            return Lookup(CacheState.STALE_REVALIDATE_IN_BACKGROUND, entry, self.generation,
                          start_revalidation=start)
        return self._revalidate(entry)

    def _revalidate(self, entry: CacheEntry) -> Lookup:
        self.counts["revalidations"] += 1
        return Lookup(CacheState.MUST_REVALIDATE, entry, self.generation)

    def _find(self, key: keys.PrimaryKey, request_headers: RawHeaders) -> CacheEntry | None:
        for entry in reversed(self._variants.get(key, ())):   # newest first
            if entry.matches(request_headers):
                return entry
        return None

    def stale_on_error(self, entry: CacheEntry, now: float) -> bool:
        """Whether the origin failing (5xx, refused, timeout) may be answered with this stale
        page: within its ``stale-if-error``, bounded by ``serve_stale_seconds``."""
        f = entry.freshness
        window = min(f.stale_if_error, self.serve_stale_seconds)
        ok = not f.no_stale and (f.fresh(now) or (window > 0 and f.staleness(now) <= window))
        if ok:
            self.counts["stale_if_error"] += 1
        return ok

    # -- writing --------------------------------------------------------------------------

    def store(self, scheme: str | bytes, host: str | bytes, target: str | bytes,
              request_headers: RawHeaders, status: int, response_headers: RawHeaders,
              body: bytes, now: float, *, method: str = "GET",
              request_time: float | None = None, generation: int | None = None,
              ) -> CacheEntry | None:
        """Keep a complete response if the origin allows it; the entry, or None.

        ``response_headers`` are the origin's (hop-by-hop removed, before Kairos adds its
        cookie or makes the page private); ``body`` is the wire body. A response the origin
        no longer lets anyone keep also removes the page it replaces (a 404, a no-store).
        """
        key = keys.primary_key(scheme, host, target)
        decision = decide(method, request_headers, status, response_headers, now,
                          request_time)
        if isinstance(decision, NotStored):
            self.not_stored[decision.reason] += 1
            if decision.reason not in _REQUEST_REASONS and status < 500:
                self._remove_matching(key, request_headers)
            return None
        if generation is not None and generation != self.generation:
            self.not_stored["purged_meanwhile"] += 1
            return None
        entry = self._entry(key, request_headers, response_headers, body, decision)
        self._remove_matching(key, request_headers)
        if entry.size > self.max_entry_bytes:
            self.not_stored["too_large"] += 1
            return None
        self._insert(entry)
        self.counts["stores"] += 1
        return entry

    def refresh(self, entry: CacheEntry, request_headers: RawHeaders,
                response_headers: RawHeaders, now: float, *,
                request_time: float | None = None) -> CacheEntry | None:
        """Apply a 304 to a stored page (RFC 9111 §4.3.4): its headers replace the stored
        ones of the same names, freshness starts again, body and ``compiled`` stay.

        Returns the entry to answer with now. It stays in the cache unless the merged headers
        no longer allow it (a ``Set-Cookie``, ``private``...: then it is this visitor's alone,
        ``entry.stored`` is False) or the entry left the cache meanwhile (purged, replaced).
        None: the 304 names another validator than the stored one; fetch without validators.
        """
        entry.revalidating_since = None
        if not _same_validator(entry.freshness, response_headers):
            self._remove(entry)
            self.not_stored["validator_mismatch"] += 1
            return None
        self.counts["not_modified"] += 1
        updated = {n.lower() for n, _ in response_headers} - _NOT_UPDATED
        merged = [(n, v) for n, v in entry.headers if n.lower() not in updated]
        merged += [(n, v) for n, v in response_headers if n.lower() in updated]
        decision = decide("GET", request_headers, 200, merged, now, request_time)
        fresh = decision if isinstance(decision, Freshness) else entry.freshness
        new = self._entry(entry.key, request_headers, merged, entry.body, fresh)
        if first(merged, b"content-type") == first(entry.headers, b"content-type"):
            new.compiled = entry.compiled
        if not entry.stored:
            return new
        if isinstance(decision, NotStored) or new.size > self.max_entry_bytes:
            self.not_stored[decision.reason if isinstance(decision, NotStored)
                            else "too_large"] += 1
            self._remove(entry)
            return new
        self._remove(entry)
        self._insert(new)
        return new

    def revalidation_failed(self, entry: CacheEntry) -> None:
        """A background revalidation ended without an answer: let the next hit retry."""
        entry.revalidating_since = None

    def invalidate_after(self, method: str, status: int, scheme: str | bytes,
                         host: str | bytes, target: str | bytes) -> int:
        """A successful unsafe request (POST, PUT, DELETE...) drops every stored variant of its
        target (RFC 9111 §4.4): the page a form posts to is fetched again."""
        if method in _SAFE_METHODS or not 200 <= status < 400:
            return 0
        removed = list(self._variants.get(keys.primary_key(scheme, host, target), ()))
        for entry in removed:
            self._remove(entry)
        self.counts["invalidated"] += len(removed)
        return len(removed)

    def purge(self, path: str | bytes | None = None, host: str | bytes | None = None) -> int:
        """Remove pages; returns how many entries went.

        ``path`` None: every page. A path without a query (``/products/tent``) removes every
        query and every variant of that path; with a query (``/search?q=tent``), only that
        exact target; ending in ``*`` (``/products/*``), every target that starts with it.
        Paths are compared as sent on the wire (percent-encoded). ``host`` limits the purge
        to one public host; None means all hosts. Pages being fetched while a purge runs are
        not stored afterwards (see ``Lookup.generation``).
        """
        self.generation += 1
        want_host = None if host is None else keys.as_bytes(host).strip().lower()
        want = None if path is None else keys.as_bytes(path)
        doomed: list[CacheEntry] = []
        for (_, entry_host, target), entries in self._variants.items():
            if want_host is not None and entry_host != want_host:
                continue
            if want is None or _path_matches(want, target):
                doomed.extend(entries)
        for entry in doomed:
            self._remove(entry)
        self.counts["purged"] += len(doomed)
        return len(doomed)

    def stats(self) -> dict[str, Any]:
        """Numbers for the metrics: gauges (entries, bytes, max_bytes) and counters."""
        names = ("hits", "stale_hits", "misses", "bypass", "revalidations", "not_modified",
                 "stale_if_error", "stores", "evictions", "purged", "invalidated")
        return {"entries": len(self._lru), "bytes": self.bytes, "max_bytes": self.max_bytes,
                **{name: self.counts[name] for name in names},
                "not_stored": dict(self.not_stored)}

    # -- internals ------------------------------------------------------------------------

    def _entry(self, key: keys.PrimaryKey, request_headers: RawHeaders,
               response_headers: RawHeaders, body: bytes, freshness: Freshness) -> CacheEntry:
        names = vary_names(response_headers)
        if content_coded(response_headers) and b"accept-encoding" not in names:
            # An origin that compresses without saying Vary: Accept-Encoding would otherwise
            # get its gzip page served to clients that cannot read it.
            names = tuple(sorted((*names, b"accept-encoding")))
        return CacheEntry(key, keys.vary_key(names, request_headers),
                          without(response_headers, b"age"), body, freshness)

    def _insert(self, entry: CacheEntry) -> None:
        variants = self._variants.setdefault(entry.key, [])
        variants.append(entry)
        self._lru[entry] = None
        entry.stored = True
        self.bytes += entry.size
        if len(variants) > MAX_VARIANTS:
            self._evict(variants[0])
        while self.bytes > self.max_bytes and self._lru:
            self._evict(next(iter(self._lru)))

    def charge(self, entry: CacheEntry, extra: int) -> None:
        """Count ``extra`` more bytes for a stored page (what is derived from it: its
        decoded text, compiled slots, gzip pieces) and evict to stay within the budget."""
        if not entry.stored:
            return
        entry.size += extra
        self.bytes += extra
        while self.bytes > self.max_bytes and self._lru:
            self._evict(next(iter(self._lru)))

    def _evict(self, entry: CacheEntry) -> None:
        self._remove(entry)
        self.counts["evictions"] += 1

    def _remove(self, entry: CacheEntry) -> None:
        if not entry.stored:
            return
        entry.stored = False
        del self._lru[entry]
        self.bytes -= entry.size
        variants = self._variants[entry.key]
        variants.remove(entry)
        if not variants:
            del self._variants[entry.key]

    def _remove_matching(self, key: keys.PrimaryKey, request_headers: RawHeaders) -> None:
        for entry in [e for e in self._variants.get(key, ()) if e.matches(request_headers)]:
            self._remove(entry)


def _same_validator(freshness: Freshness, headers: RawHeaders) -> bool:
    """Whether a 304 is about the stored page (RFC 9111 §4.3.4), comparing weakly."""
    etag = first(headers, b"etag")
    if etag is not None:
        stored = freshness.etag
        return stored is not None and _opaque(stored) == _opaque(etag)
    modified = first(headers, b"last-modified")
    if modified is not None and freshness.last_modified is not None and freshness.etag is None:
        return modified.strip() == freshness.last_modified.strip()
    return True


def _opaque(etag: bytes) -> bytes:
    return etag.strip().removeprefix(b"W/").strip()


def _path_matches(want: bytes, target: bytes) -> bool:
    if want.endswith(b"*"):
        return target.startswith(want[:-1])
    if b"?" in want:
        return target == want
    return target.partition(b"?")[0] == want
