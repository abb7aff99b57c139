"""The buffered page path through the real proxy: P16-P22, F5-F8.

The transform is the test stand-in ``MarkHeadline`` (conftest): it changes ``<h1>Hello</h1>``
on ``/html`` pages. The rules engine plugs into the same ``PageTransform`` protocol.
"""

from __future__ import annotations

import gzip
import zlib

import brotli
import httpx
import pytest
import zstandard

from .conftest import RunningKairos, header_lines, raw_request, status_of
from .upstream_server import Upstream, page_bytes

DECODERS = {"gzip": gzip.decompress, "deflate": zlib.decompress, "br": brotli.decompress,
            "zstd": lambda b: zstandard.ZstdDecompressor().decompress(b, max_output_size=1 << 20),
            "identity": lambda b: b}


def get_raw(kairos: RunningKairos, target: str, *extra: bytes) -> tuple[bytes, bytes]:
    """(head, body) with the body exactly as sent on the wire (no client-side decoding)."""
    request = (b"GET " + target.encode() + b" HTTP/1.1\r\nHost: shop.test\r\n" +
               b"".join(h + b"\r\n" for h in extra) + b"Connection: close\r\n\r\n")
    response = raw_request(kairos.port, request)
    head, _, body = response.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", body


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate", "br", "zstd"])
def test_p16_p17_rewrite_decodes_reencodes_and_fixes_length(kairos: RunningKairos,
                                                            encoding: str) -> None:
    head, body = get_raw(kairos, f"/html?enc={encoding}",
                         b"Accept-Encoding: gzip, deflate, br, zstd")
    assert status_of(head) == 200
    assert header_lines(head, b"content-length") == [str(len(body)).encode()]
    expected_encoding = [] if encoding == "identity" else [encoding.encode()]
    assert header_lines(head, b"content-encoding") == expected_encoding
    html = DECODERS[encoding](body).decode("utf-8")
    assert "<h1>Hello, Zoë</h1>" in html
    assert "Café crème" in html
    assert header_lines(head, b"content-md5") == []          # P16: digest of the old body
    if encoding != "identity":
        assert any(b"accept-encoding" in v.lower() for v in header_lines(head, b"vary"))


def test_p18_strong_etag_becomes_weak_and_variant_specific(kairos: RunningKairos) -> None:
    head, _ = get_raw(kairos, "/html")
    etags = header_lines(head, b"etag")
    assert len(etags) == 1
    assert etags[0].startswith(b'W/"abc123-k') and etags[0] != b'"abc123"'


def test_p19_p20_conditional_and_range_headers_stripped_upstream(kairos: RunningKairos,
                                                                 upstream: Upstream) -> None:
    head, _ = get_raw(kairos, "/html?cond", b'If-None-Match: "abc123"',
                      b"If-Modified-Since: Sun, 22 Nov 2026 09:00:00 GMT",
                      b"Range: bytes=0-10", b'If-Range: "abc123"')
    assert status_of(head) == 200
    received = upstream.last("/html?cond")
    for name in (b"if-none-match", b"if-modified-since", b"range", b"if-range"):
        assert received.header(name) == []


def test_p19_pages_no_transform_wants_keep_conditionals(kairos: RunningKairos,
                                                       upstream: Upstream) -> None:
    get_raw(kairos, "/echo?cond", b'If-None-Match: "x"')
    assert upstream.last("/echo?cond").header(b"if-none-match") == [b'"x"']


def test_p20_a_206_is_never_rewritten(kairos: RunningKairos) -> None:
    head, body = get_raw(kairos, "/html?status=206")
    assert status_of(head) == 206
    assert body == page_bytes()
    assert header_lines(head, b"etag") == [b'"abc123"']


def test_p21_head_of_a_rewritable_page_is_not_rewritten(kairos: RunningKairos) -> None:
    response = raw_request(kairos.port, b"HEAD /html HTTP/1.1\r\nHost: shop.test\r\n"
                                        b"Connection: close\r\n\r\n")
    assert header_lines(response, b"content-length") == [str(len(page_bytes())).encode()]


def test_p22_no_transform_means_no_rewrite(kairos: RunningKairos) -> None:
    head, body = get_raw(kairos, "/html?cc=no-transform")
    assert body == page_bytes()
    assert header_lines(head, b"etag") == [b'"abc123"']


def test_s6_personalised_page_is_private(kairos: RunningKairos) -> None:
    head, _ = get_raw(kairos, "/html")
    cache_control = header_lines(head, b"cache-control")
    assert cache_control == [b"private, max-age=60"]


def test_f5_a_failing_transform_serves_the_original(kairos: RunningKairos) -> None:
    failures = kairos.app.metrics.errors["rewrite_failed"]
    head, body = get_raw(kairos, "/html?boom=1")
    assert status_of(head) == 200
    assert body == page_bytes()
    assert kairos.app.metrics.errors["rewrite_failed"] == failures + 1


def test_f6_page_without_a_matching_slot_is_byte_identical(kairos: RunningKairos) -> None:
    response = httpx.get(kairos.url + "/html?ct=text/plain")   # not HTML: streams
    assert response.content == page_bytes()
    _head, body = get_raw(kairos, "/echo")
    assert b"Zo" not in body


@pytest.mark.parametrize("charset", ["windows-1252", "iso-8859-15", "utf-8"])
def test_f7_page_charset_is_respected(kairos: RunningKairos, charset: str) -> None:
    _head, body = get_raw(kairos, f"/html?charset={charset}")
    html = body.decode(charset)
    assert "Café crème" in html                       # not U+FFFD
    assert "<h1>Hello, Zoë</h1>" in html              # the inserted ë fits these charsets


def test_f7_charset_from_meta_when_header_has_none(kairos: RunningKairos) -> None:
    _head, body = get_raw(kairos, "/html?charset=windows-1252&ct=text/html")
    assert "Café crème" in body.decode("windows-1252")
    assert "Zoë" in body.decode("windows-1252")


def test_f7_undecodable_page_passes_through(kairos: RunningKairos) -> None:
    # Declared utf-8 but the bytes are windows-1252: strict decoding fails, page untouched.
    _head, body = get_raw(kairos, "/html?charset=windows-1252&ct=text/html;+charset=utf-8")
    assert body == page_bytes("windows-1252")


def test_f8_gzip_bomb_is_not_expanded(kairos: RunningKairos) -> None:
    skipped = kairos.app.metrics.errors["rewrite_skipped_undecodable"]
    head, body = get_raw(kairos, "/html?bomb=50000000", b"Accept-Encoding: gzip")
    assert status_of(head) == 200
    assert len(body) < 200_000                         # compressed wire bytes, unchanged
    assert kairos.app.metrics.errors["rewrite_skipped_undecodable"] == skipped + 1


def test_f8_oversize_page_streams_through_unchanged(upstream: Upstream, valkey: object) -> None:
    from .conftest import start_kairos
    running = start_kairos(upstream.url, valkey.connection_url,  # type: ignore[attr-defined]
                           **{"limits.max_rewrite_bytes": 1024})
    try:
        big = httpx.get(running.url + "/big")
        page = httpx.get(running.url + "/html?bomb=5000", headers={"Accept-Encoding": "gzip"})
    finally:
        running.stop()
    assert len(big.content) == 5 * 1024 * 1024
    assert page.status_code == 200
    assert page.text.startswith("<html>")


def test_codings_decode_is_bounded_for_every_encoding() -> None:
    from proxy import codings
    payload = b"a" * 100_000
    for name, encode in [(b"gzip", gzip.compress), (b"deflate", zlib.compress),
                         (b"br", brotli.compress),
                         (b"zstd", zstandard.ZstdCompressor().compress)]:
        assert codings.decode(encode(payload), name, 100_000) == payload
        with pytest.raises(codings.TooLarge):
            codings.decode(encode(payload), name, 99_999)
    with pytest.raises(codings.DecodeError):
        codings.decode(gzip.compress(payload)[:-30], b"gzip", 1_000_000)


@pytest.mark.parametrize("content_type,body,expected", [
    (b"text/html; charset=ISO-8859-1", b"<p>x", "cp1252"),
    (b"text/html", b"\xef\xbb\xbf<p>x", "utf-8"),
    (b"text/html", b'<meta charset="shift_jis"><p>', "shift_jis"),
    (b"text/html", b'<meta http-equiv="Content-Type" content="text/html; charset=koi8-r">',
     "koi8-r"),
    (b"text/html", b"<p>no declaration", "cp1252"),
    (b"text/html; charset=bogus", b"<p>x", "cp1252"),
])
def test_f7_charset_detection_order(content_type: bytes, body: bytes, expected: str) -> None:
    from proxy import charset
    assert charset.detect(content_type, body)[0] == expected
