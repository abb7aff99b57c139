"""Preparing cached pages off the loop (proxy.page_cache.Preparer): bounded, and never for a
page that has left the cache."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from proxy.cache import EdgeCache
from proxy.page_cache import MAX_PENDING, Prepared, Preparer

NOW = 1_700_000_000.0
REQUEST = [(b"host", b"shop.example"), (b"accept-encoding", b"gzip")]
HEADERS = [(b"content-type", b"text/html; charset=utf-8"),
           (b"cache-control", b"public, max-age=600")]


class HeldTransform:
    """Prepares pages (a compiled page is just the text here) only when let go."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.prepared: list[str] = []
        self.version = object()

    def prepared_for(self) -> object:
        return self.version

    def prepare(self, html: str, host: str, path: str) -> str:
        assert self.go.wait(10), "never let go"
        self.prepared.append(path)
        return html


def stored(cache: EdgeCache, n: int) -> Any:
    body = f"<html><body>page {n}</body></html>".encode()
    entry = cache.store("https", b"shop.example", f"/p{n}".encode(), REQUEST, 200, HEADERS,
                        body, NOW)
    assert entry is not None
    return entry


def test_at_most_a_few_preparations_wait_and_the_rest_start_at_a_later_hit() -> None:
    async def scenario() -> None:
        cache = EdgeCache(1 << 20)
        transform = HeldTransform()
        with ThreadPoolExecutor(1) as thread:
            preparer = Preparer(transform, 1 << 20, cache, thread)
            entries = [stored(cache, n) for n in range(MAX_PENDING + 3)]
            for n, entry in enumerate(entries):
                assert preparer.ready(entry, "shop.example", f"/p{n}") is None
            transform.go.set()
            await preparer.close()
            assert transform.prepared == [f"/p{n}" for n in range(MAX_PENDING)]
            late = entries[-1]
            assert preparer.ready(late, "shop.example", "/late") is None   # starts now
            await preparer.close()
            ready = preparer.ready(late, "shop.example", "/late")
            assert isinstance(ready, Prepared) and ready.compiled == late.body.decode()
    asyncio.run(scenario())


def test_a_page_evicted_while_waiting_is_not_prepared() -> None:
    async def scenario() -> None:
        cache = EdgeCache(1 << 20)
        transform = HeldTransform()
        with ThreadPoolExecutor(1) as thread:
            preparer = Preparer(transform, 1 << 20, cache, thread)
            first, second = stored(cache, 1), stored(cache, 2)
            preparer.ready(first, "shop.example", "/p1")
            preparer.ready(second, "shop.example", "/p2")
            await asyncio.sleep(0.05)   # /p1 is being prepared, /p2 waits
            assert cache.purge() == 2   # everything: both pages leave the cache
            transform.go.set()
            await preparer.close()
            assert "/p2" not in transform.prepared
    asyncio.run(scenario())
