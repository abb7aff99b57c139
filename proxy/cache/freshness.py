"""What the origin allows a shared cache to keep, and for how long (RFC 9111, RFC 5861).

Pure functions of headers and times: no clock is read here, the caller passes ``now`` (wall
seconds, ``time.time()``, because ``Date`` and ``Expires`` are wall times).

Only what the origin says counts: no heuristic freshness, ever. A page is kept when the origin
gave it an explicit lifetime (``s-maxage``, ``max-age`` or ``Expires``) or asked for
revalidation on each use (``no-cache``) with a validator to revalidate with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import mktime_tz, parsedate_tz

from ..headers import RawHeaders, first

# RFC 9111 §1.2.2: delta-seconds beyond 2^31 are taken as 2^31.
MAX_DELTA = 2**31
# Vary on these makes every visitor's page its own: pointless to keep, and what is kept must
# never be visitor-specific (Kairos personalises each hit afterwards).
PER_VISITOR_VARY = frozenset({b"cookie", b"authorization", b"x-forwarded-for", b"forwarded",
                              b"x-real-ip"})
# The origin's way of reporting this visitor's goal (proxy/goal_events.py): never replayed.
ORIGIN_EVENT = b"kairos-event"


@dataclass(frozen=True)
class NotStored:
    """Why a response is not kept; ``reason`` is short enough for a metric label."""

    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True)
class Freshness:
    """How long a stored response may be used, from the response and when it arrived."""

    lifetime: float              # freshness lifetime (s-maxage > max-age > Expires - Date)
    initial_age: float           # corrected initial age when it arrived (RFC 9111 §4.2.3)
    response_time: float         # when it arrived, wall seconds
    stale_while_revalidate: float = 0.0   # as the origin said; the cache bounds it
    stale_if_error: float = 0.0
    no_cache: bool = False       # validate before every use
    no_stale: bool = False       # must-revalidate, proxy-revalidate or s-maxage: never stale
    etag: bytes | None = None
    last_modified: bytes | None = None

    def age(self, now: float) -> float:
        """Current age (RFC 9111 §4.2.3); never negative, even if the clock went back."""
        return self.initial_age + max(0.0, now - self.response_time)

    def fresh(self, now: float) -> bool:
        return not self.no_cache and self.age(now) < self.lifetime

    def staleness(self, now: float) -> float:
        """Seconds past the end of the freshness lifetime (0 while fresh)."""
        return max(0.0, self.age(now) - self.lifetime)

    @property
    def has_validator(self) -> bool:
        return self.etag is not None or self.last_modified is not None


# -- Cache-Control ------------------------------------------------------------------------------

def cache_control(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes | None]:
    """Directives of every ``Cache-Control`` line: lower-case name -> value (unquoted) or None.

    Commas inside quoted values (``no-cache="a, b"``) do not split. A repeated directive keeps
    its first value, except the lifetimes, which keep the smallest (the most restrictive).
    """
    out: dict[bytes, bytes | None] = {}
    for name, value in headers:
        if name.lower() != b"cache-control":
            continue
        for directive in _split_list(value):
            key, sep, arg = directive.partition(b"=")
            key = key.strip().lower()
            if not key:
                continue
            parsed = _unquote(arg.strip()) if sep else None
            if key in out and key in {b"max-age", b"s-maxage"}:
                old, new = _delta(out[key]), _delta(parsed)
                if new < old:
                    out[key] = parsed
            else:
                out.setdefault(key, parsed)
    return out


def _split_list(value: bytes) -> list[bytes]:
    items: list[bytes] = []
    current = bytearray()
    quoted = escaped = False
    for byte in value:
        char = bytes((byte,))
        if escaped:
            escaped = False
        elif quoted and char == b"\\":
            escaped = True
        elif char == b'"':
            quoted = not quoted
        elif char == b"," and not quoted:
            items.append(bytes(current).strip())
            current.clear()
            continue
        current += char
    items.append(bytes(current).strip())
    return [item for item in items if item]


def _unquote(value: bytes) -> bytes:
    if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
        inner = value[1:-1]
        out = bytearray()
        escaped = False
        for byte in inner:
            if not escaped and byte == 0x5C:   # backslash
                escaped = True
                continue
            escaped = False
            out.append(byte)
        return bytes(out)
    return value


def _delta(value: bytes | None) -> float:
    """delta-seconds; an invalid value counts as 0 (stale at once, RFC 9111 §4.2.1)."""
    if value is None or not value.isdigit():
        return 0.0
    return float(min(int(value), MAX_DELTA))


def http_date(value: bytes | None) -> float | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime) as epoch seconds, None if invalid."""
    if value is None:
        return None
    parsed = parsedate_tz(value.decode("latin-1").strip())
    return None if parsed is None else float(mktime_tz(parsed))


# -- Vary ---------------------------------------------------------------------------------------

def vary_names(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes, ...]:
    """Lower-case field names of every ``Vary`` line, sorted, without duplicates."""
    names = {part.strip().lower() for n, v in headers if n.lower() == b"vary"
             for part in v.split(b",")}
    names.discard(b"")
    return tuple(sorted(names))


def content_coded(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    coding = (first(headers, b"content-encoding") or b"").strip().lower()
    return coding not in {b"", b"identity"}


# -- the decision -------------------------------------------------------------------------------

def decide(
    method: str,
    request_headers: RawHeaders,
    status: int,
    response_headers: RawHeaders,
    now: float,
    request_time: float | None = None,
) -> Freshness | NotStored:
    """Whether a shared cache may keep this response, and its freshness if so.

    ``request_headers`` are those sent to the origin; ``now`` is when the response headers
    arrived and ``request_time`` when the request was sent (``now`` if not given).
    """
    if method != "GET":
        return NotStored("method")
    if status != 200:   # not 206, 304, 404...: only complete pages are kept
        return NotStored("status")
    req_cc = cache_control(request_headers)
    if b"no-store" in req_cc:
        return NotStored("request_no_store")
    cc = cache_control(response_headers)
    if b"no-store" in cc:
        return NotStored("no_store")
    if b"private" in cc:   # also private="field": kept simple, and conservative
        return NotStored("private")
    if first(request_headers, b"authorization") is not None and not (
            b"public" in cc or b"s-maxage" in cc):
        return NotStored("authorization")   # RFC 9111 §3.5
    if first(response_headers, b"set-cookie") is not None:
        return NotStored("set_cookie")
    if first(response_headers, ORIGIN_EVENT) is not None:
        return NotStored("origin_event")
    vary = vary_names(response_headers)
    if b"*" in vary:
        return NotStored("vary_star")
    if PER_VISITOR_VARY.intersection(vary):
        return NotStored("vary_per_visitor")
    return _freshness(cc, response_headers, now, now if request_time is None else request_time)


def _freshness(cc: dict[bytes, bytes | None], headers: RawHeaders, now: float,
               request_time: float) -> Freshness | NotStored:
    date = http_date(first(headers, b"date"))
    if date is None:
        date = now
    lifetime: float | None
    if b"s-maxage" in cc:   # a shared cache: s-maxage wins (RFC 9111 §5.2.2.10)
        lifetime = _delta(cc[b"s-maxage"])
    elif b"max-age" in cc:
        lifetime = _delta(cc[b"max-age"])
    elif (expires := first(headers, b"expires")) is not None:
        at = http_date(expires)   # invalid ("0", "-1") means already expired
        lifetime = 0.0 if at is None else max(0.0, at - date)
    else:
        lifetime = None
    no_cache = b"no-cache" in cc or (
        b"cache-control" not in {n.lower() for n, _ in headers}
        and any(n.lower() == b"pragma" and b"no-cache" in v.lower() for n, v in headers))
    etag = first(headers, b"etag")
    last_modified = first(headers, b"last-modified")
    has_validator = etag is not None or last_modified is not None
    no_stale = (b"must-revalidate" in cc or b"proxy-revalidate" in cc or b"s-maxage" in cc
                or no_cache)
    swr = 0.0 if no_stale else _delta(cc.get(b"stale-while-revalidate"))
    sie = 0.0 if no_stale else _delta(cc.get(b"stale-if-error"))
    if no_cache:
        if not has_validator:   # revalidating without a validator is a full fetch: pointless
            return NotStored("no_validator")
        lifetime = 0.0
    elif lifetime is None:   # no heuristic freshness
        return NotStored("no_freshness")
    elif lifetime <= 0 and not has_validator and swr <= 0:
        return NotStored("no_validator")
    # RFC 9111 §4.2.3
    age_value = _delta(first(headers, b"age"))
    apparent_age = max(0.0, now - date)
    corrected_age = age_value + max(0.0, now - request_time)
    return Freshness(
        lifetime=lifetime,
        initial_age=max(apparent_age, corrected_age),
        response_time=now,
        stale_while_revalidate=swr,
        stale_if_error=sie,
        no_cache=no_cache,
        no_stale=no_stale,
        etag=etag,
        last_modified=last_modified,
    )


def decide_storable(
    method: str,
    request_headers: RawHeaders,
    status: int,
    response_headers: RawHeaders,
    now: float,
    request_time: float | None = None,
) -> Freshness | None:
    """:func:`decide`, with None for every reason not to store."""
    result = decide(method, request_headers, status, response_headers, now, request_time)
    return result if isinstance(result, Freshness) else None


def request_wants_validation(request_headers: RawHeaders, age: float) -> bool:
    """The visitor asked for an end-to-end check: ``no-cache`` (a hard reload), ``Pragma:
    no-cache`` from HTTP/1.0 clients, or ``max-age`` smaller than the stored page's age.
    Honoured with a conditional request, which costs the origin no more than no cache would.
    Other request directives (max-stale, min-fresh, only-if-cached) are ignored."""
    # One pass for both fields (cache_control() and a Pragma scan took two on every hit).
    lines: list[tuple[bytes, bytes]] = []
    pragma_no_cache = False
    for name, value in request_headers:
        lname = name if name.islower() else name.lower()
        if lname == b"cache-control":
            lines.append((lname, value))
        elif lname == b"pragma" and b"no-cache" in value.lower():
            pragma_no_cache = True
    if not lines:
        return pragma_no_cache   # Pragma counts only without Cache-Control (RFC 9111 §5.4)
    cc = cache_control(lines)
    if b"no-cache" in cc:
        return True
    if not cc:
        return pragma_no_cache
    return b"max-age" in cc and age > _delta(cc[b"max-age"])
