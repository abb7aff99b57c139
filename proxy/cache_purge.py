"""``POST /_kairos/cache/purge``: an operator empties the edge cache of a path or of
everything, on every worker of every machine.

Each worker has its own cache, and a request reaches one worker of one machine; so the
endpoint purges its own worker at once and appends the purge to a Redis stream
(``<prefix>:{site}:purges``) that every worker follows in the background (once a second)
and applies. Admin token required (``Authorization: Bearer <admin.token>``); without a
configured token the endpoint answers 401 like the results pages. If Redis is down the
answer says the purge reached this worker only (``"propagated": false``), and pages purge
themselves when their freshness runs out.

``?path=/products/tent`` (every query and variant of the path), ``?path=/search?q=x`` (that
target), ``?path=/products/*`` (a prefix), no path: everything; ``&host=shop.example``
limits it to one host.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from .background import every
from .cache import EdgeCache
from .responses import respond
from .results import auth
from .store.client import StoreUnavailable, translated

log = logging.getLogger("kairos.cache")
STREAM_LENGTH = 1000   # purges remembered (MAXLEN ~): a worker further behind misses some
# A worker follows the purges published from this long before it started: its cache starts
# empty, so applying a few old purges costs nothing, while the margin absorbs a clock
# difference between this machine and Redis (stream ids are Redis's clock in ms).
START_MARGIN_MS = 60_000


class CachePurge:
    def __init__(self, cache: EdgeCache, store: Any, token: str, interval: float = 1.0
                 ) -> None:
        self.cache = cache
        self.store = store
        self.token = token
        self.interval = interval
        # Purges published after our start, by Redis's clock give or take the margin. Not
        # "the newest entry at the first read": a page cached before that read, purged
        # elsewhere before it, would be kept (the first read can wait on a slow Redis).
        self.last_id = f"{int(time.time() * 1000) - START_MARGIN_MS}-0"

    @property
    def routes(self) -> dict[str, Any]:
        return {"cache/purge": self.purge}

    def _key(self) -> str:
        return self.store._keyspace.purges()  # type: ignore[no-any-return]

    async def purge(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        verdict = auth.check(self.token, scope["headers"], None)
        # The bearer token only: the results session cookie opens the results pages alone.
        if verdict.access is not auth.Access.GRANTED or verdict.via != "header":
            await respond(send, 401, b"application/json", json.dumps({
                "error": "an admin token is required: Authorization: Bearer <admin.token>"
                         if self.token else "admin.token is not configured"}).encode(),
                [(b"www-authenticate", b'Bearer realm="kairos"')])
            return
        if scope["method"] != "POST":
            await respond(send, 405, b"application/json",
                          b'{"error": "POST to purge"}', [(b"allow", b"POST")])
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        path = query.get("path", [None])[0]
        host = query.get("host", [None])[0]
        if path is not None and not path.startswith("/"):
            await respond(send, 400, b"application/json", json.dumps(
                {"error": f"path {path!r} must start with /"}).encode())
            return
        purged = self.cache.purge(path, host)
        propagated = True
        try:
            with translated("publishing a cache purge"):
                await self.store.redis.xadd(self._key(), {"path": path or "", "host": host or ""},
                                            maxlen=STREAM_LENGTH, approximate=True)
        except StoreUnavailable as exc:
            propagated = False
            log.warning("cache purge reached this worker only: %s", exc)
        await respond(send, 200, b"application/json", json.dumps(
            {"purged_here": purged, "path": path, "host": host,
             "propagated": propagated}).encode())

    async def follow(self) -> None:
        """Apply the purges other workers publish, until cancelled."""
        await every(self.interval, self._apply_new, "cache purge follower", log)

    async def _apply_new(self) -> None:
        with translated("reading cache purges"):
            replies = await self.store.redis.xread({self._key(): self.last_id}, count=100)
        for _, entries in replies or ():
            for entry_id, fields in entries:
                self.last_id = _text(entry_id)
                values = {_text(k): _text(v) for k, v in fields.items()}
                self.cache.purge(values.get("path") or None, values.get("host") or None)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
