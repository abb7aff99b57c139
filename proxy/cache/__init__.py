"""Edge cache of origin HTML (issue 7): the pages Kairos buffers to personalise, kept per
worker when the origin marks them cacheable, revalidated with the origin's validators.

``freshness`` says what may be kept and for how long (RFC 9111, no heuristics), ``keys`` which
stored page may answer which request (Vary), ``edge`` holds the bounded LRU store.

How the proxy uses it, for a GET whose page Kairos buffers (``request_headers`` are those sent
to the origin, ``now`` is ``time.time()``):

- ``found = cache.lookup(scheme, public_host, target, request_headers, now)``;
- FRESH: answer with ``found.entry`` (``served_headers``), personalised as usual;
- STALE_REVALIDATE_IN_BACKGROUND: the same, and if ``found.start_revalidation`` a background
  conditional request; its 304 goes to ``cache.refresh``, its 200 to ``cache.store``, a
  failure to ``cache.revalidation_failed``;
- MUST_REVALIDATE: send ``conditional_headers(found.entry)``; 304 -> ``cache.refresh`` (None:
  fetch again without validators), 200 -> ``cache.store``, 5xx or no answer ->
  ``cache.stale_on_error`` decides between the stale page and the error;
- MISS: fetch; a complete buffered 200 goes to ``cache.store(..., generation=found.generation)``
  with the origin's headers, before Kairos adds its cookie or makes the page private.

Other methods: ``cache.invalidate_after(method, status, ...)``. Operators: ``cache.purge``.
"""

from .edge import (
    CacheEntry,
    CacheState,
    EdgeCache,
    Lookup,
    age_value,
    conditional_headers,
    served_headers,
)
from .freshness import Freshness, NotStored, decide, decide_storable
from .keys import accept_encoding_key, primary_key

__all__ = [
    "CacheEntry", "CacheState", "EdgeCache", "Freshness", "Lookup", "NotStored",
    "accept_encoding_key", "age_value", "conditional_headers", "decide", "decide_storable",
    "primary_key", "served_headers",
]
