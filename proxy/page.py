"""The buffered path: an HTML page that a transform may change (P16-P22, F5, F7, F8).

Everything else streams. A page is buffered only when the transform says, before the
upstream request, that it may touch this request (so conditional and range headers can be
stripped upstream, P19/P20), and the response turns out to be a complete ``200 text/html``
within the size caps, without ``no-transform`` and in an encoding we can decode.

The transform itself (slot rewriting, experiments) lives elsewhere; this module only owns
bytes, encodings, charsets and the headers that must change with the body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import charset, codings
from .byte_splice import ByteMap
from .gzip_pieces import Pieces, gzip_view
from .headers import RawHeaders, first, has_token, make_private
from .values import quick_init


@quick_init
@dataclass(frozen=True, slots=True)
class PageRequest:
    """What a transform may know about the request (the visitor context joins it later)."""

    method: str
    host: str
    path: str
    query: str
    headers: tuple[tuple[bytes, bytes], ...]
    context: Any = None   # the visitor context, once known (Any: mypyc, bench/compiled.py)
    experiments: Any = None   # proxy.experimentation.PageExperiments of this page view
    compiled: Any = None      # a cached page's proxy.rules.compiled.CompiledPage

    def with_compiled(self, compiled: object) -> PageRequest:
        """This request for a cached page's compiled form. Positional, not
        dataclasses.replace, which costs several times more on every cached view."""
        return PageRequest(self.method, self.host, self.path, self.query, self.headers,
                           self.context, self.experiments, compiled)


class PageEdit:
    """A transform's change to a page: its new text (``html``), or the ``splices`` on the
    ``source`` text that make it. Given splices, the text is only built when asked for: a
    cached page's view splices its bytes (and gzip pieces) from them, and a 100 KB page's
    text would be built for nothing."""

    __slots__ = ("_html", "_variant", "personalised", "source", "splices")

    def __init__(self, html: str | None = None, variant: str | Callable[[], str] = "",
                 personalised: bool = False,
                 splices: tuple[tuple[int, int, str], ...] | None = None, *,
                 source: str | None = None) -> None:
        if html is None and (source is None or splices is None):
            raise ValueError("PageEdit needs the new html, or the source and its splices")
        self._html = html
        self._variant = variant           # or how to name it, when a weak ETag needs it
        self.personalised = personalised  # depends on the visitor: Cache-Control private (S6)
        # (start, end, text) splices on the original text that make ``html``, when known: a
        # cached page's gzip is then assembled from its stored pieces (proxy.gzip_pieces).
        self.splices = splices
        self.source = source

    @property
    def html(self) -> str:
        if self._html is None:
            from .rules.edits import splice  # here: proxy.rules imports this module
            self._html = splice(self.source, list(self.splices))  # type: ignore[arg-type]
        return self._html

    @property
    def variant(self) -> str:
        """What was applied: goes into the weak ETag (P18), so made only for pages that
        have an ETag."""
        if callable(self._variant):
            self._variant = self._variant()
        return self._variant

    def replace(self, **changes: Any) -> PageEdit:
        fields = {"html": self._html, "variant": self._variant, "splices": self.splices,
                  "personalised": self.personalised, "source": self.source, **changes}
        return PageEdit(fields.pop("html"), **fields)

    def leaves(self, html: str) -> bool:
        """Is ``html`` (the page this edit was made on) unchanged by it?"""
        if self._html is None and self.source is html and self.splices is not None:
            for start, end, text in self.splices:  # noqa: SIM110 (no generator per view)
                if html[start:end] != text:
                    return False
            return True
        return self.html == html


class PageTransform(Protocol):
    def wants(self, page: PageRequest) -> bool:
        """Cheap check before the upstream request: could this page be changed?"""

    def apply(self, html: str, page: PageRequest) -> PageEdit | None:
        """The changed page, or None when nothing applies (the original bytes go out, F6)."""


# Representation metadata of the old body that would lie about the new one (P16).
_STALE_WITH_BODY = (b"content-length", b"content-md5", b"digest", b"content-digest",
                    b"repr-digest", b"content-range", b"etag")
_STALE = frozenset(_STALE_WITH_BODY)


def may_rewrite(status: int, headers: RawHeaders, wire_limit: int) -> bool:
    """Response-side eligibility: checked before a single body byte is read."""
    if status != 200:  # never a 206 (P20), never an error page or a redirect
        return False
    content_type = (first(headers, b"content-type") or b"").split(b";")[0].strip().lower()
    if content_type != b"text/html":
        return False
    if has_token(headers, b"cache-control", b"no-transform"):  # P22
        return False
    encoding = (first(headers, b"content-encoding") or b"identity").strip().lower()
    if encoding not in codings.SUPPORTED:   # also rules out stacked "gzip, br"
        return False
    length = first(headers, b"content-length")
    return not (length is not None and (not length.isdigit() or int(length) > wire_limit))


@quick_init
@dataclass(frozen=True, slots=True)
class Rewritten:
    headers: RawHeaders
    body: bytes


@dataclass(frozen=True, slots=True)
class Decoded:
    """A page body as text: what a cached page keeps so it is decoded only once."""

    raw: bytes       # content-decoded bytes
    codec: str
    bom: int         # bytes of byte-order mark before the text
    html: str
    pieces: Pieces | None = None   # the text deflated in pieces, for gzip views
    bytes_map: ByteMap | None = None   # to splice a view's bytes without encoding it all


def decode_page(wire_body: bytes, headers: RawHeaders, decoded_limit: int) -> Decoded:
    """Raises ``codings.DecodeError`` / ``codings.TooLarge`` / ``UnicodeError``."""
    encoding = (first(headers, b"content-encoding") or b"identity").strip().lower()
    raw = codings.decode(wire_body, encoding, decoded_limit)
    codec, bom = charset.detect(first(headers, b"content-type"), raw)
    # strict: a page that does not decode is not touched
    return Decoded(raw, codec, bom, raw[bom:].decode(codec))


def rewrite(
    wire_body: bytes,
    headers: RawHeaders,
    page: PageRequest,
    transform: PageTransform,
    decoded_limit: int,
    decoded: Decoded | None = None,
) -> Rewritten | None:
    """The new response, or None to send the original bytes unchanged. ``decoded`` is the
    body already decoded (a cached page's); its text is then the one the transform gets.

    Raises ``codings.DecodeError`` / ``codings.TooLarge`` / ``UnicodeError`` for pages it
    cannot handle; the caller counts them and serves the original (F5).
    """
    coding = first(headers, b"content-encoding")
    encoding = (coding or b"identity").strip().lower()
    if decoded is None:
        decoded = decode_page(wire_body, headers, decoded_limit)
    html = decoded.html
    edit = transform.apply(html, page)
    if edit is None or edit.leaves(html):
        return None
    splices = edit.splices
    pieces = decoded.pieces if encoding in (b"gzip", b"x-gzip") else None
    if pieces is not None and splices is not None:   # only the slots deflated, CRC alone
        body = gzip_view(pieces, splices)
    elif decoded.bytes_map is not None and splices is not None:
        body = codings.encode(decoded.bytes_map.splice(splices), encoding)   # edits encoded
    else:
        body = codings.encode(decoded.raw[:decoded.bom] + edit.html.encode(
            decoded.codec, errors="xmlcharrefreplace"), encoding)
    return Rewritten(headers=_fixed_headers(headers, body, edit, coding), body=body)


def _fixed_headers(headers: RawHeaders, body: bytes, edit: PageEdit,
                   coding: bytes | None) -> RawHeaders:
    """``coding``: the response's Content-Encoding value, if any."""
    etag = None
    out: RawHeaders = []
    for name, value in headers:   # (one pass: the ETag and the fields that stay)
        if name in _STALE:
            if etag is None and name == b"etag":
                etag = value
            continue
        out.append((name, value))
    out.append((b"content-length", str(len(body)).encode()))
    if etag:
        out.append((b"etag", _weak_etag(etag, edit.variant)))
    if edit.personalised:
        out = make_private(out)
    if coding and not has_token(out, b"vary", b"accept-encoding"):
        out.append((b"vary", b"Accept-Encoding"))
    return out


def _weak_etag(etag: bytes, variant: str) -> bytes:
    """A weak validator that differs per variant, never the origin's strong one (P18)."""
    opaque = etag.removeprefix(b"W/").strip().strip(b'"')
    tag = hashlib.blake2s(variant.encode(), digest_size=6).hexdigest().encode()
    return b'W/"' + opaque + b"-k" + tag + b'"'
