"""The edge cache of origin HTML (proxy/cache/): what is kept, for how long, for whom.

Every test passes the clock in; nothing sleeps.
"""

from __future__ import annotations

from email.utils import formatdate

import pytest

from proxy.cache import (
    CacheState,
    EdgeCache,
    Freshness,
    NotStored,
    accept_encoding_key,
    age_value,
    conditional_headers,
    decide,
    decide_storable,
    served_headers,
)
from proxy.cache import edge as edge_module
from proxy.cache.freshness import cache_control, request_wants_validation
from proxy.headers import RawHeaders, first

NOW = 1_700_000_000.0
HOST = b"shop.example"
PAGE = b"<html><body>kept</body></html>"
BROWSER: RawHeaders = [(b"host", HOST), (b"accept-encoding", b"gzip, deflate, br, zstd"),
                       (b"user-agent", b"Firefox"), (b"cookie", b"kairos_v=visitor-1")]


def date(at: float) -> bytes:
    return formatdate(at, usegmt=True).encode()


def origin(*extra: tuple[bytes, bytes], at: float = NOW) -> RawHeaders:
    return [(b"content-type", b"text/html; charset=utf-8"), (b"date", date(at)), *extra]


def cc(value: bytes) -> tuple[bytes, bytes]:
    return (b"cache-control", value)


def store(cache: EdgeCache, headers: RawHeaders, *, target: bytes = b"/p",
          request: RawHeaders = BROWSER, body: bytes = PAGE, now: float = NOW,
          host: bytes = HOST, scheme: str = "https", **kw):
    return cache.store(scheme, host, target, request, 200, headers, body, now, **kw)


def lookup(cache: EdgeCache, *, target: bytes = b"/p", request: RawHeaders = BROWSER,
           now: float = NOW, host: bytes = HOST, scheme: str = "https"):
    return cache.lookup(scheme, host, target, request, now)


# -- what may be stored -------------------------------------------------------------------------

AUTH = [(b"authorization", b"Basic dXNlcjpwdw==")]
ETAG = (b"etag", b'"v1"')


@pytest.mark.parametrize("method,request_extra,status,response_extra,expected", [
    ("GET", [], 200, [cc(b"max-age=60")], None),
    ("GET", [], 200, [cc(b"public, s-maxage=60")], None),
    ("GET", [], 200, [(b"expires", date(NOW + 60))], None),
    ("GET", [], 200, [cc(b"no-cache"), ETAG], None),          # kept, revalidated each use
    ("GET", [], 200, [cc(b"max-age=0"), ETAG], None),         # kept, revalidated when used
    ("GET", [], 200, [cc(b"max-age=0, stale-while-revalidate=30")], None),
    ("GET", [], 200, [cc(b"max-age=60, must-revalidate")], None),
    ("GET", [], 200, [(b"expires", b"0"), ETAG], None),       # invalid Expires: expired
    ("GET", [(b"cookie", b"kairos_v=abc; other=1")], 200, [cc(b"max-age=60")], None),
    ("GET", AUTH, 200, [cc(b"public, max-age=60")], None),
    ("GET", AUTH, 200, [cc(b"s-maxage=60")], None),
    ("GET", AUTH, 200, [cc(b"max-age=60")], "authorization"),
    ("GET", [], 200, [cc(b"no-store, max-age=60")], "no_store"),
    ("GET", [], 200, [cc(b"private, max-age=60")], "private"),
    ("GET", [], 200, [cc(b'private="x-user", max-age=60')], "private"),
    ("GET", [cc(b"no-store")], 200, [cc(b"max-age=60")], "request_no_store"),
    ("GET", [], 200, [cc(b"max-age=60"), (b"set-cookie", b"s=1; Path=/")], "set_cookie"),
    ("GET", [], 200, [cc(b"max-age=60"), (b"kairos-event", b"goal=buy")], "origin_event"),
    ("GET", [], 200, [cc(b"max-age=60"), (b"vary", b"Accept-Encoding, *")], "vary_star"),
    ("GET", [], 200, [cc(b"max-age=60"), (b"vary", b"Cookie")], "vary_per_visitor"),
    ("GET", [], 200, [cc(b"max-age=60"), (b"vary", b"X-Forwarded-For")], "vary_per_visitor"),
    ("GET", [], 206, [cc(b"max-age=60")], "status"),
    ("GET", [], 304, [cc(b"max-age=60")], "status"),
    ("GET", [], 404, [cc(b"max-age=60")], "status"),
    ("GET", [], 301, [cc(b"max-age=60")], "status"),
    ("HEAD", [], 200, [cc(b"max-age=60")], "method"),
    ("POST", [], 200, [cc(b"max-age=60")], "method"),
    ("GET", [], 200, [ETAG, (b"last-modified", date(NOW - 3600))], "no_freshness"),  # heuristic
    ("GET", [], 200, [cc(b"public")], "no_freshness"),
    ("GET", [], 200, [cc(b"must-revalidate")], "no_freshness"),
    ("GET", [], 200, [cc(b"no-cache")], "no_validator"),
    ("GET", [], 200, [cc(b"max-age=0")], "no_validator"),
    ("GET", [], 200, [cc(b"max-age=0, must-revalidate, stale-while-revalidate=30")],
     "no_validator"),
])
def test_storable_or_not(method: str, request_extra: RawHeaders, status: int,
                         response_extra: RawHeaders, expected: str | None) -> None:
    request = [*BROWSER, *request_extra]
    result = decide(method, request, status, origin(*response_extra), NOW)
    if expected is None:
        assert isinstance(result, Freshness)
        assert decide_storable(method, request, status, origin(*response_extra), NOW) == result
    else:
        assert result == NotStored(expected)
        assert not result
        assert decide_storable(method, request, status, origin(*response_extra), NOW) is None


def test_the_visitor_cookie_never_makes_a_page_uncacheable_nor_splits_it() -> None:
    cache = EdgeCache(1 << 20)
    kept = store(cache, origin(cc(b"max-age=60")))
    assert kept is not None
    other = [(n, b"kairos_v=visitor-2; cart=3" if n == b"cookie" else v) for n, v in BROWSER]
    assert lookup(cache, request=other).entry is kept


# -- freshness arithmetic -----------------------------------------------------------------------

def lifetime(*extra: tuple[bytes, bytes], at: float = NOW) -> float:
    result = decide("GET", BROWSER, 200, origin(*extra, at=at), NOW)
    assert isinstance(result, Freshness)
    return result.lifetime


def test_s_maxage_wins_over_max_age_which_wins_over_expires() -> None:
    expires = (b"expires", date(NOW + 30))
    assert lifetime(cc(b"max-age=50, s-maxage=100"), expires) == 100
    assert lifetime(cc(b"max-age=50"), expires) == 50
    assert lifetime(expires) == 30
    assert lifetime((b"expires", date(NOW - 30)), ETAG) == 0        # already expired
    assert lifetime(cc(b"max-age=50"), cc(b"max-age=20")) == 20     # repeated: the smallest
    assert lifetime(cc(b"max-age=abc"), ETAG) == 0                   # invalid: stale
    assert lifetime(cc(b"max-age=99999999999")) == 2**31


def test_expires_counts_from_the_origins_date_and_the_age_from_date_and_age() -> None:
    # The page left the origin 10 s ago with 30 s to live: 20 s left.
    f = decide("GET", BROWSER, 200, origin((b"expires", date(NOW + 20)), at=NOW - 10), NOW)
    assert isinstance(f, Freshness)
    assert (f.lifetime, f.age(NOW)) == (30, 10)
    assert f.fresh(NOW + 19) and not f.fresh(NOW + 20)
    # An Age from a cache before the origin's, plus the time the request took.
    f = decide("GET", BROWSER, 200, origin(cc(b"max-age=60"), (b"age", b"25")), NOW,
               request_time=NOW - 2)
    assert isinstance(f, Freshness)
    assert f.age(NOW) == 27
    assert f.age(NOW + 10) == 37
    assert f.age(NOW - 100) == 27          # a clock that went back adds nothing
    # Apparent age wins when larger than Age.
    f = decide("GET", BROWSER, 200, origin(cc(b"max-age=60"), (b"age", b"5"), at=NOW - 40),
               NOW)
    assert isinstance(f, Freshness)
    assert f.age(NOW) == 40


def test_a_date_in_the_future_gives_no_negative_age_and_expires_stays_relative() -> None:
    f = decide("GET", BROWSER, 200, origin((b"expires", date(NOW + 130)), at=NOW + 100), NOW)
    assert isinstance(f, Freshness)
    assert f.age(NOW) == 0
    assert f.lifetime == 30


def test_stale_windows_and_quoted_commas_are_parsed() -> None:
    f = decide("GET", BROWSER, 200,
               origin(cc(b'max-age=60, stale-while-revalidate=30, stale-if-error=600')), NOW)
    assert isinstance(f, Freshness)
    assert (f.stale_while_revalidate, f.stale_if_error, f.no_stale) == (30, 600, False)
    parsed = cache_control([cc(b'no-cache="set-cookie, x-a", max-age="60"'), cc(b"PUBLIC")])
    assert parsed == {b"no-cache": b"set-cookie, x-a", b"max-age": b"60", b"public": None}
    # must-revalidate (and s-maxage, which implies proxy-revalidate) forbid stale pages.
    for value in (b"max-age=60, must-revalidate, stale-while-revalidate=30",
                  b"s-maxage=60, stale-if-error=30"):
        f = decide("GET", BROWSER, 200, origin(cc(value)), NOW)
        assert isinstance(f, Freshness)
        assert (f.no_stale, f.stale_while_revalidate, f.stale_if_error) == (True, 0, 0)


# -- keys: Vary, host, target ---------------------------------------------------------------------

@pytest.mark.parametrize("value,key", [
    (b"gzip, deflate, br, zstd", b"br,deflate,gzip,identity,zstd"),
    (b"zstd,br ,deflate,  gzip", b"br,deflate,gzip,identity,zstd"),
    (b"gzip;q=1.0, br;q=0.5", b"br,gzip,identity"),
    (b"x-gzip", b"gzip,identity"),
    (b"gzip;q=0, br", b"br,identity"),
    (b"gzip;q=abc, br", b"br,identity"),       # unparsable q: not accepted (conservative)
    (b"compress, sdch, br", b"br,identity"),   # unknown codings are left out
    (b"*", b"br,deflate,gzip,identity,zstd"),
    (b"br, *;q=0", b"br"),                     # identity refused through *
    (b"identity;q=0, gzip", b"gzip"),
    (b"", b"identity"),
])
def test_accept_encoding_is_keyed_by_the_set_of_codings_accepted(value: bytes, key: bytes
                                                                  ) -> None:
    assert accept_encoding_key([value]) == key


def with_header(name: bytes, value: bytes | None, base: RawHeaders = BROWSER) -> RawHeaders:
    out = [(n, v) for n, v in base if n != name]
    return out if value is None else [*out, (name, value)]


def test_vary_accept_encoding_splits_br_from_gzip_but_not_spellings() -> None:
    cache = EdgeCache(1 << 20)
    vary = (b"vary", b"Accept-Encoding")
    br = store(cache, origin(cc(b"max-age=60"), vary, (b"content-encoding", b"br")),
               body=b"br-body")
    assert br is not None
    same_set = with_header(b"accept-encoding", b"br, zstd, gzip,deflate")
    assert lookup(cache, request=same_set).entry is br
    gzip_only = with_header(b"accept-encoding", b"gzip")
    assert lookup(cache, request=gzip_only).state is CacheState.MISS
    gz = store(cache, origin(cc(b"max-age=60"), vary, (b"content-encoding", b"gzip")),
               request=gzip_only, body=b"gzip-body")
    assert gz is not None and br.stored and len(cache) == 2
    assert lookup(cache, request=gzip_only).entry is gz
    assert lookup(cache, request=BROWSER).entry is br


def test_a_compressed_page_without_vary_is_keyed_on_accept_encoding_anyway() -> None:
    cache = EdgeCache(1 << 20)
    kept = store(cache, origin(cc(b"max-age=60"), (b"content-encoding", b"gzip")))
    assert kept is not None
    assert lookup(cache, request=with_header(b"accept-encoding", b"identity")).entry is None
    assert lookup(cache).entry is kept
    # An identity page without Vary suits everyone.
    plain = store(cache, origin(cc(b"max-age=60")), target=b"/plain")
    for value in (b"identity", b"br", None):
        request = with_header(b"accept-encoding", value)
        assert lookup(cache, target=b"/plain", request=request).entry is plain


def test_unkeyed_headers_neither_split_nor_poison_the_cache() -> None:
    cache = EdgeCache(1 << 20)
    first_request = with_header(b"x-forwarded-host", b"shop.example")
    kept = store(cache, origin(cc(b"max-age=60"), (b"vary", b"Accept-Language")),
                 request=with_header(b"accept-language", b"en-US,en;q=0.9", first_request))
    assert kept is not None
    attacker = with_header(b"accept-language", b"en-US, en;q=0.9", [
        *with_header(b"x-forwarded-host", b"evil.example"),
        (b"cookie", b"kairos_v=attacker"), (b"x-original-url", b"/admin"),
        (b"user-agent", b"<script>"),
    ])
    found = lookup(cache, request=attacker)
    assert found.state is CacheState.FRESH and found.entry is kept
    assert kept.body == PAGE and b"evil" not in b"".join(v for _, v in kept.headers)
    # The attacker's request, were it stored, replaces the same variant: still one entry.
    store(cache, origin(cc(b"max-age=60"), (b"vary", b"Accept-Language")), request=attacker)
    assert len(cache) == 1
    french = with_header(b"accept-language", b"fr")
    assert lookup(cache, request=french).state is CacheState.MISS


def test_only_the_same_scheme_host_and_target_reuse_a_page() -> None:
    cache = EdgeCache(1 << 20)
    kept = store(cache, origin(cc(b"max-age=60")), target=b"/p?a=1")
    assert lookup(cache, target=b"/p?a=1", host=b"SHOP.example").entry is kept
    assert lookup(cache, target=b"/p?a=1", host=b"other.example").entry is None
    assert lookup(cache, target=b"/p?a=1", scheme="http").entry is None
    assert lookup(cache, target=b"/p?a=2").entry is None
    assert lookup(cache, target=b"/p").entry is None
    assert lookup(cache, target=b"/p?a=1", host=b"shop.example:8443").entry is None


def test_vary_on_a_field_visitors_choose_keeps_a_bounded_number_of_variants() -> None:
    cache = EdgeCache(1 << 24)
    for i in range(edge_module.MAX_VARIANTS + 8):
        store(cache, origin(cc(b"max-age=60"), (b"vary", b"User-Agent")),
              request=with_header(b"user-agent", f"agent-{i}".encode()))
    assert len(cache) == edge_module.MAX_VARIANTS
    assert cache.stats()["evictions"] == 8
    assert lookup(cache, request=with_header(b"user-agent", b"agent-0")).entry is None


# -- bounded by bytes -----------------------------------------------------------------------------

def test_least_recently_used_pages_go_first_when_bytes_run_out() -> None:
    cache = EdgeCache(80_000)            # entries up to 10000 bytes
    body = b"x" * 9_000
    for i in range(9):
        assert store(cache, origin(cc(b"max-age=60")), target=f"/p{i}".encode(), body=body)
        lookup(cache, target=b"/p0")     # /p0 stays in use
    assert cache.bytes <= 80_000
    stats = cache.stats()
    assert stats["evictions"] == 1 and stats["entries"] == 8
    assert lookup(cache, target=b"/p0").entry is not None
    assert lookup(cache, target=b"/p1").entry is None     # the least recently used one


def test_a_page_larger_than_an_eighth_of_the_cache_is_not_kept() -> None:
    cache = EdgeCache(80_000)
    assert store(cache, origin(cc(b"max-age=60")), body=b"x" * 10_000) is None
    assert cache.stats()["not_stored"] == {"too_large": 1}
    assert (cache.bytes, len(cache)) == (0, 0)


# -- revalidation ---------------------------------------------------------------------------------

def test_no_cache_pages_are_revalidated_before_every_use() -> None:
    cache = EdgeCache(1 << 20)
    modified = date(NOW - 3600)
    kept = store(cache, origin(cc(b"no-cache"), ETAG, (b"last-modified", modified)))
    assert kept is not None
    found = lookup(cache)
    assert found.state is CacheState.MUST_REVALIDATE and found.entry is kept
    assert conditional_headers(kept) == [(b"if-none-match", b'"v1"'),
                                         (b"if-modified-since", modified)]
    refreshed = cache.refresh(kept, BROWSER, [ETAG, (b"date", date(NOW + 5))], NOW + 5)
    assert refreshed is not None and refreshed.stored and refreshed.body == PAGE
    assert lookup(cache, now=NOW + 6).state is CacheState.MUST_REVALIDATE
    assert not cache.stale_on_error(refreshed, NOW + 6)


def test_must_revalidate_pages_are_served_fresh_but_never_stale() -> None:
    cache = EdgeCache(1 << 20, serve_stale_seconds=600)
    kept = store(cache, origin(cc(b"max-age=10, must-revalidate, stale-while-revalidate=60,"
                                  b" stale-if-error=60"), ETAG))
    assert kept is not None
    assert lookup(cache, now=NOW + 5).state is CacheState.FRESH
    assert lookup(cache, now=NOW + 15).state is CacheState.MUST_REVALIDATE
    assert not cache.stale_on_error(kept, NOW + 15)


def test_a_304_merges_headers_extends_freshness_and_keeps_body_and_compiled() -> None:
    cache = EdgeCache(1 << 20)
    kept = store(cache, origin(cc(b"max-age=60"), ETAG, (b"content-length", b"31"),
                               (b"x-version", b"1"), (b"age", b"3")))
    assert kept is not None
    assert first(kept.headers, b"age") is None      # Age is computed per hit, not stored
    kept.compiled = "parsed page"
    assert lookup(cache, now=NOW + 100).state is CacheState.MUST_REVALIDATE
    not_modified = [ETAG, cc(b"max-age=120"), (b"date", date(NOW + 100)),
                    (b"x-version", b"2"), (b"x-new", b"yes"), (b"content-length", b"0")]
    new = cache.refresh(kept, BROWSER, not_modified, NOW + 100)
    assert new is not None and new is not kept
    assert new.stored and not kept.stored
    assert new.body == PAGE and new.compiled == "parsed page"
    assert first(new.headers, b"cache-control") == b"max-age=120"
    assert first(new.headers, b"x-version") == b"2"
    assert first(new.headers, b"x-new") == b"yes"
    assert first(new.headers, b"content-length") == b"31"     # the body's, not the 304's
    assert first(new.headers, b"content-type") == b"text/html; charset=utf-8"
    assert [n for n, _ in new.headers].count(b"x-version") == 1
    found = lookup(cache, now=NOW + 150)
    assert found.state is CacheState.FRESH and found.entry is new
    assert age_value(new, NOW + 150) == b"50"
    assert cache.stats()["not_modified"] == 1
    assert len(cache) == 1


def test_a_304_that_makes_the_page_personal_serves_it_once_and_drops_it() -> None:
    cache = EdgeCache(1 << 20)
    kept = store(cache, origin(cc(b"max-age=0"), ETAG))
    assert kept is not None
    new = cache.refresh(kept, BROWSER, [ETAG, (b"set-cookie", b"session=1")], NOW + 1)
    assert new is not None and not new.stored and new.body == PAGE
    assert first(new.headers, b"set-cookie") == b"session=1"     # this visitor's alone
    assert lookup(cache, now=NOW + 1).state is CacheState.MISS
    assert cache.stats()["not_stored"] == {"set_cookie": 1}


def test_a_304_for_another_validator_means_fetch_again() -> None:
    cache = EdgeCache(1 << 20)
    kept = store(cache, origin(cc(b"max-age=0"), ETAG))
    assert kept is not None
    assert cache.refresh(kept, BROWSER, [(b"etag", b'"v2"')], NOW + 1) is None
    assert lookup(cache, now=NOW + 1).state is CacheState.MISS
    # Weak and strong spellings of one tag are the same page.
    kept = store(cache, origin(cc(b"max-age=0"), ETAG))
    assert kept is not None
    assert cache.refresh(kept, BROWSER, [(b"etag", b'W/"v1"')], NOW + 1) is not None


def test_a_new_body_is_a_new_entry_without_the_compiled_page() -> None:
    cache = EdgeCache(1 << 20)
    kept = store(cache, origin(cc(b"max-age=60")))
    assert kept is not None
    kept.compiled = "old"
    new = store(cache, origin(cc(b"max-age=60")), body=b"<html>new</html>", now=NOW + 70)
    assert new is not None and new.compiled is None and not kept.stored
    assert lookup(cache, now=NOW + 71).entry is new and len(cache) == 1


def test_a_page_the_origin_stops_allowing_is_dropped_but_not_for_a_request_reason() -> None:
    cache = EdgeCache(1 << 20)
    assert store(cache, origin(cc(b"max-age=60")))
    assert store(cache, origin(cc(b"max-age=60")), request=[*BROWSER, cc(b"no-store")]) is None
    assert lookup(cache).entry is not None
    assert cache.store("https", HOST, b"/p", BROWSER, 503, origin(), b"", NOW) is None
    assert lookup(cache).entry is not None                  # kept for stale-if-error
    assert cache.store("https", HOST, b"/p", BROWSER, 404, origin(), b"gone", NOW) is None
    assert lookup(cache).entry is None


def test_visitor_reloads_ask_for_revalidation() -> None:
    cache = EdgeCache(1 << 20)
    assert store(cache, origin(cc(b"max-age=600"), ETAG))
    assert lookup(cache, now=NOW + 5).state is CacheState.FRESH
    for extra in ([cc(b"no-cache")], [(b"pragma", b"no-cache")], [cc(b"max-age=0")]):
        state = lookup(cache, request=[*BROWSER, *extra], now=NOW + 5).state
        assert state is CacheState.MUST_REVALIDATE, extra
    assert lookup(cache, request=[*BROWSER, cc(b"max-age=10")], now=NOW + 5).state \
        is CacheState.FRESH
    assert not request_wants_validation([cc(b"max-stale=5")], 100)


def test_requests_with_authorization_never_get_a_stored_page() -> None:
    cache = EdgeCache(1 << 20)
    assert store(cache, origin(cc(b"public, max-age=60")), request=[*BROWSER, *AUTH])
    assert lookup(cache, request=[*BROWSER, *AUTH]).state is CacheState.MISS
    assert lookup(cache).state is CacheState.FRESH
    assert cache.stats()["bypass"] == 1


# -- serving stale --------------------------------------------------------------------------------

def test_stale_while_revalidate_is_bounded_by_the_configured_seconds() -> None:
    cache = EdgeCache(1 << 20, serve_stale_seconds=30)
    kept = store(cache, origin(cc(b"max-age=10, stale-while-revalidate=100"), ETAG))
    assert kept is not None
    assert lookup(cache, now=NOW + 9).state is CacheState.FRESH
    first_hit = lookup(cache, now=NOW + 20)
    assert first_hit.state is CacheState.STALE_REVALIDATE_IN_BACKGROUND
    assert first_hit.start_revalidation and first_hit.entry is kept
    again = lookup(cache, now=NOW + 21)      # one background revalidation at a time
    assert again.state is CacheState.STALE_REVALIDATE_IN_BACKGROUND
    assert not again.start_revalidation
    cache.revalidation_failed(kept)
    assert lookup(cache, now=NOW + 22).start_revalidation
    assert lookup(cache, now=NOW + 40).state is CacheState.STALE_REVALIDATE_IN_BACKGROUND
    assert lookup(cache, now=NOW + 41).state is CacheState.MUST_REVALIDATE   # 31 s stale
    plain = EdgeCache(1 << 20)   # without stale-while-revalidate: stale the moment it ends
    assert store(plain, origin(cc(b"max-age=10"), ETAG))
    assert lookup(plain, now=NOW + 10).state is CacheState.MUST_REVALIDATE
    never = EdgeCache(1 << 20, serve_stale_seconds=0)
    assert store(never, origin(cc(b"max-age=10, stale-while-revalidate=100"), ETAG))
    assert lookup(never, now=NOW + 11).state is CacheState.MUST_REVALIDATE


def test_a_lost_background_revalidation_is_handed_out_again() -> None:
    cache = EdgeCache(1 << 20, serve_stale_seconds=600)
    assert store(cache, origin(cc(b"max-age=10, stale-while-revalidate=500"), ETAG))
    assert lookup(cache, now=NOW + 20).start_revalidation
    assert not lookup(cache, now=NOW + 20 + edge_module.REVALIDATION_TIMEOUT - 1
                      ).start_revalidation
    assert lookup(cache, now=NOW + 20 + edge_module.REVALIDATION_TIMEOUT).start_revalidation


def test_stale_if_error_is_bounded_by_the_configured_seconds() -> None:
    cache = EdgeCache(1 << 20, serve_stale_seconds=30)
    kept = store(cache, origin(cc(b"max-age=10, stale-if-error=50"), ETAG))
    assert kept is not None
    assert lookup(cache, now=NOW + 35).state is CacheState.MUST_REVALIDATE
    assert cache.stale_on_error(kept, NOW + 35)
    assert not cache.stale_on_error(kept, NOW + 45)
    plain = store(cache, origin(cc(b"max-age=10"), ETAG), target=b"/plain")
    assert plain is not None and not cache.stale_on_error(plain, NOW + 10)
    assert cache.stats()["stale_if_error"] == 1


# -- age ------------------------------------------------------------------------------------------

def test_age_of_a_hit() -> None:
    cache = EdgeCache(1 << 20)
    kept = store(cache, origin(cc(b"max-age=60"), (b"age", b"3")))
    assert kept is not None
    assert age_value(kept, NOW + 12.7) == b"15"
    headers = served_headers(kept, NOW + 12.7)
    assert [v for n, v in headers if n == b"age"] == [b"15"]


# -- purge, invalidation, stats -------------------------------------------------------------------

def filled() -> EdgeCache:
    cache = EdgeCache(1 << 22)
    vary = (b"vary", b"Accept-Encoding")
    for target in (b"/p", b"/p?x=1", b"/p?x=2", b"/p/q", b"/products/a", b"/products/b"):
        for coding in (b"br", b"gzip"):
            request = with_header(b"accept-encoding", coding)
            assert store(cache, origin(cc(b"max-age=60"), vary, (b"content-encoding", coding)),
                         target=target, request=request)
    assert store(cache, origin(cc(b"max-age=60")), host=b"other.example", target=b"/p")
    return cache


def test_purge_a_path_every_query_and_variant_of_it() -> None:
    cache = filled()
    assert len(cache) == 13
    assert cache.purge("/p") == 7              # /p, /p?x=1, /p?x=2 in two codings, other host
    assert lookup(cache, target=b"/p/q", request=with_header(b"accept-encoding", b"br")).entry
    assert cache.purge("/p/q?nothing") == 0


def test_purge_an_exact_target_a_prefix_a_host_or_everything() -> None:
    cache = filled()
    assert cache.purge("/p?x=1") == 2
    assert cache.purge("/products/*") == 4
    assert cache.purge("/p", host="OTHER.example") == 1
    assert cache.purge(host=HOST) == 6         # /p, /p?x=2 and /p/q, two codings each
    assert len(cache) == 0
    cache = filled()
    assert cache.purge() == 13
    assert (len(cache), cache.bytes) == (0, 0)
    assert cache.stats()["purged"] == 13


def test_a_page_fetched_before_a_purge_is_not_stored_after_it() -> None:
    cache = EdgeCache(1 << 20)
    miss = lookup(cache)
    assert miss.state is CacheState.MISS
    cache.purge("/p")
    assert store(cache, origin(cc(b"max-age=60")), generation=miss.generation) is None
    assert cache.stats()["not_stored"] == {"purged_meanwhile": 1}
    assert store(cache, origin(cc(b"max-age=60")), generation=lookup(cache).generation)


def test_a_refresh_after_a_purge_does_not_bring_the_page_back() -> None:
    cache = EdgeCache(1 << 20)
    kept = store(cache, origin(cc(b"max-age=0"), ETAG))
    assert kept is not None
    cache.purge()
    new = cache.refresh(kept, BROWSER, [ETAG, cc(b"max-age=60")], NOW + 1)
    assert new is not None and not new.stored and len(cache) == 0


def test_a_successful_unsafe_request_invalidates_its_target() -> None:
    cache = EdgeCache(1 << 20)
    assert store(cache, origin(cc(b"max-age=60")))
    assert cache.invalidate_after("GET", 200, "https", HOST, b"/p") == 0
    assert cache.invalidate_after("POST", 500, "https", HOST, b"/p") == 0
    assert cache.invalidate_after("POST", 303, "https", HOST, b"/p") == 1
    assert lookup(cache).state is CacheState.MISS


def test_stats_count_what_the_metrics_need() -> None:
    cache = EdgeCache(1 << 20, serve_stale_seconds=60)
    lookup(cache)                                                       # miss
    kept = store(cache, origin(cc(b"max-age=10, stale-while-revalidate=30"), ETAG))
    assert kept is not None
    lookup(cache, now=NOW + 1)                                          # hit
    lookup(cache, now=NOW + 15)                                         # stale hit, revalidate
    lookup(cache, now=NOW + 100)                                        # must revalidate
    stats = cache.stats()
    assert {k: stats[k] for k in ("entries", "hits", "stale_hits", "misses", "revalidations",
                                  "evictions", "stores")} == {
        "entries": 1, "hits": 2, "stale_hits": 1, "misses": 1, "revalidations": 2,
        "evictions": 0, "stores": 1}
    assert stats["bytes"] == kept.size > len(PAGE)
    assert stats["max_bytes"] == 1 << 20


def test_what_is_derived_from_a_page_counts_against_the_budget() -> None:
    """A cached page's decoded text, compiled slots and gzip pieces are charged to it: the
    cache then evicts older pages to stay within max_bytes."""
    cache = EdgeCache(max_bytes=100_000)
    request: list[tuple[bytes, bytes]] = []
    headers = [(b"content-type", b"text/html"), (b"cache-control", b"max-age=60"),
               (b"etag", b'"a"'), (b"date", b"Sun, 22 Nov 2026 20:00:00 GMT")]
    now = 1_795_377_600.0
    first = cache.store("http", "shop", "/a", request, 200, headers, b"x" * 6000, now)
    second = cache.store("http", "shop", "/b", request, 200, headers, b"y" * 6000, now)
    assert first is not None and second is not None and len(cache) == 2
    before = cache.bytes
    cache.charge(second, 20_000)
    assert cache.bytes == before + 20_000 and len(cache) == 2
    cache.charge(second, 70_000)   # over the budget: the least recently used page goes
    assert not first.stored and second.stored and cache.bytes <= cache.max_bytes
