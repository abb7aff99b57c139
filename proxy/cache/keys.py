"""Cache keys: which stored page may answer which request (RFC 9111 §4.1).

The primary key is (scheme, host, target): the visitor's scheme and public host, lower-case,
and the raw request target (path and query) exactly as sent to the origin. Kairos sends the
origin ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` from these very values, so an origin that
reflects them into a page (absolute links, canonical URLs) is only ever reused for requests
that would have made it reflect the same thing.

The secondary key holds, for each field the stored response's ``Vary`` names, the request's
value normalised: lines combined, whitespace around commas removed. ``Accept-Encoding`` is
reduced to the set of codings the request accepts (see :func:`accept_encoding_key`). Fields
not named by ``Vary`` never take part: a visitor cannot split the cache, or get a page kept
for them, through ``X-Forwarded-Host``, a cookie, or any other unkeyed header.

The cache changes nothing in what Kairos sends the origin (``upstream_request_headers``, plus
the stored validators when revalidating). An origin that reflects a header it does not name in
``Vary`` (User-Agent, a session cookie) into a page it marks cacheable has the same bug behind
any shared cache: such pages must say ``Vary`` or ``private``. What the cache guarantees is
that a stored page is reused only for requests of equal scheme, host and target, and equal
values of the fields its ``Vary`` names.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

PrimaryKey = tuple[bytes, bytes, bytes]
VaryKey = tuple[tuple[bytes, bytes | None], ...]

# Codings a cached page can be in (what the buffered path decodes, proxy/codings.py).
KNOWN_CODINGS = (b"br", b"deflate", b"gzip", b"identity", b"zstd")
_ALIASES = {b"x-gzip": b"gzip"}


def as_bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


def primary_key(scheme: str | bytes, host: str | bytes, target: str | bytes) -> PrimaryKey:
    return (as_bytes(scheme).lower(), as_bytes(host).strip().lower(), as_bytes(target))


def accept_encoding_key(values: list[bytes]) -> bytes:
    """The codings a request accepts, as a canonical sorted list: ``b"br,gzip,identity"``.

    Browsers send the same set in many spellings (order, spaces, ``q`` values, ``x-gzip``);
    keying on the set means Chrome, Firefox and Safari share two or three variants instead of
    one per spelling. Keying on the set is safe because any coding the origin picks for one
    request is in the set, hence acceptable to every request with the same set. It is also
    conservative: an unparsable ``q`` counts as "not accepted", unknown codings are left out
    (a page is never stored in them), and ``*`` stands for every known coding not listed.
    Collapsing further (say, "br if br is accepted") would not be: an origin that preferred
    gzip would have its gzip page served to a client that accepts only br.
    """
    return _accepted_codings(tuple(values))


@lru_cache(maxsize=1024)   # browsers send a handful of spellings: each parsed once
def _accepted_codings(values: tuple[bytes, ...]) -> bytes:
    accepted: set[bytes] = set()
    refused: set[bytes] = set()
    star: bool | None = None
    for value in values:
        for item in value.split(b","):
            coding, _, params = item.partition(b";")
            coding = _ALIASES.get(coding.strip().lower(), coding.strip().lower())
            if not coding:
                continue
            ok = _q_positive(params)
            if coding == b"*":
                star = ok
            elif coding in KNOWN_CODINGS:
                (accepted if ok else refused).add(coding)
    if star:
        accepted.update(c for c in KNOWN_CODINGS if c not in refused)
    elif b"identity" not in refused and star is not False:   # identity is acceptable unless
        accepted.add(b"identity")                             # refused (RFC 9110 §12.5.3)
    return b",".join(sorted(accepted - refused))


def _q_positive(params: bytes) -> bool:
    for param in params.split(b";"):
        name, _, value = param.partition(b"=")
        if name.strip().lower() == b"q":
            try:
                return float(value.strip()) > 0
            except ValueError:
                return False
    return True


def field_value(name: bytes, request_headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """One request field as the secondary key holds it; None when the field is absent."""
    # ``name`` is lower-case; so are the names of every request an ASGI server hands over,
    # and those need no lower() each (a request's dozen fields are read on every hit).
    values = [v for n, v in request_headers
              if n == name or (not n.islower() and n.lower() == name)]
    if not values:
        return None
    if name == b"accept-encoding":
        return accept_encoding_key(values)
    parts = [part.strip() for value in values for part in value.split(b",")]
    return b",".join(part for part in parts if part)


def vary_key(names: Iterable[bytes], request_headers: Iterable[tuple[bytes, bytes]]) -> VaryKey:
    headers = list(request_headers)
    return tuple((name, field_value(name, headers)) for name in names)


def coding_acceptable(coding: bytes | None,
                      request_headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a page stored in ``coding`` may go to this request. A request without
    ``Accept-Encoding`` gets what the origin would give it too: any coding (RFC 9110 §12.5.3)."""
    return _coding_in(coding, field_value(b"accept-encoding", request_headers))


def _coding_in(coding: bytes | None, accepted: bytes | None) -> bool:
    """``accepted``: the request's Accept-Encoding key (None: the field is absent)."""
    if accepted is None:
        return True
    coding = (coding or b"identity").strip().lower()
    return _ALIASES.get(coding, coding) in accepted.split(b",")


def matches(vary: VaryKey, coding: bytes | None,
            request_headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a page stored under the secondary key ``vary`` and in ``coding`` answers
    this request: equal values of the fields ``Vary`` names, and a coding it accepts.

    Same as ``vary_key(names, headers) == vary and coding_acceptable(coding, headers)``,
    with Accept-Encoding read once when Vary names it, as nearly every stored page's does
    (the headers were scanned twice on every cache hit)."""
    headers = list(request_headers)
    accepted: bytes | None = None
    read = False
    for name, stored in vary:
        value = field_value(name, headers)
        if value != stored:
            return False
        if name == b"accept-encoding":
            accepted, read = value, True
    if not read:
        accepted = field_value(b"accept-encoding", headers)
    return _coding_in(coding, accepted)
