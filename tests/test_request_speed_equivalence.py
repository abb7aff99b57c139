"""The faster header checks, client address and request facts give the answers the plain
versions gave: each is compared with the plain version (kept here as the reference) on
generated requests, including the malformed ones that must stay errors."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import re

import pytest

from proxy import client_ip, headers
from proxy.client_ip import TrustedNetworks
from proxy.context import geo
from proxy.context.model import RequestFacts
from proxy.headers import ForwardingFacts, HeaderError

# -- the reference versions, as they were before the speed-up -----------------------------

_FORBIDDEN = re.compile(rb"[\x00\r\n]")


def _reference_check(fields: list[tuple[bytes, bytes]]) -> bytes:
    host = None
    size = 0
    for name, value in fields:
        size += len(name) + len(value)
        if _FORBIDDEN.search(value):
            raise HeaderError(f"header {name.decode('latin-1')!r} contains CR, LF or NUL")
        if name == b"transfer-encoding" and value.strip().lower() != b"chunked":
            raise HeaderError("Transfer-Encoding other than chunked is not supported")
        if name == b"host":
            if host is not None:
                raise HeaderError("more than one Host header")
            host = value
    if size > headers.MAX_REQUEST_HEADER_BYTES:
        raise HeaderError(f"request headers larger than {headers.MAX_REQUEST_HEADER_BYTES} bytes")
    if host is None:
        raise HeaderError("missing Host header")
    if not headers._HOST_RE.match(host) or not headers._valid_port(host):
        raise HeaderError(f"invalid Host header {host.decode('latin-1')!r}")
    return host


def _reference_tokens(fields: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    tokens: set[bytes] = set()
    for name, value in fields:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def _reference_upstream(fields: list[tuple[bytes, bytes]], facts: ForwardingFacts,
                        strip_conditional: bool) -> list[tuple[bytes, bytes]]:
    drop = headers.HOP_BY_HOP | _reference_tokens(fields)
    trusted_chain: list[bytes] = []
    kept = []
    for name, value in [(n, v) for n, v in fields if n.lower() not in drop]:
        lname = name.lower()
        if lname in headers.REQUEST_ONLY_LOCAL or (
            strip_conditional and lname in headers.CONDITIONAL
        ):
            continue
        if lname in headers.SPOOFABLE and not facts.peer_trusted:
            continue
        if lname in headers.FORWARDING:
            if facts.peer_trusted and lname == b"x-forwarded-for":
                trusted_chain.append(value)
            continue
        kept.append((name, value))
    peer = facts.peer_ip.encode("ascii")
    xff = b", ".join([*trusted_chain, peer]) if trusted_chain else peer
    return [*kept, (b"x-forwarded-for", xff), (b"x-forwarded-proto", facts.scheme.encode()),
            (b"x-forwarded-host", facts.host), (b"via", facts.via)]


def _reference_has_token(fields: list[tuple[bytes, bytes]], name: bytes, token: bytes) -> bool:
    return any(n.lower() == name and any(
        p.strip().split(b"=")[0].strip().lower() == token for p in v.split(b","))
        for n, v in fields)


def _reference_make_private(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    directives: list[bytes] = []
    rest = []
    for name, value in fields:
        if name.lower() != b"cache-control":
            rest.append((name, value))
            continue
        for part in value.split(b","):
            key = part.strip().split(b"=")[0].lower()
            if part.strip() and key not in {b"public", b"s-maxage", b"private"}:
                directives.append(part.strip())
    rest.append((b"cache-control", b", ".join([b"private", *directives])))
    return rest


# -- generated requests -----------------------------------------------------------------------

REQUEST_NAMES = [
    b"host", b"user-agent", b"accept", b"cookie", b"connection", b"keep-alive", b"te",
    b"upgrade", b"transfer-encoding", b"content-length", b"expect", b"x-forwarded-for",
    b"forwarded", b"x-real-ip", b"x-forwarded-proto", b"x-forwarded-host", b"x-original-url",
    b"x-forwarded-ssl", b"if-none-match", b"range", b"if-modified-since", b"x-custom",
    b"proxy-authorization", b"sec-websocket-key",
]
VALUES = [b"", b"shop.example", b"shop.example:8080", b"[::1]:443", b"bad host", b"h:99999",
          b"chunked", b" Chunked ", b"gzip, chunked", b"x-custom, X-Forwarded-For",
          b"keep-alive", b"Upgrade, x-original-url", b"203.0.113.9, 10.1.1.1", b"a\rb",
          b"a\nb", b"a\x00b", b"caf\xe9", b'"etag"', b"bytes=0-1"]


def _request(rng: random.Random, mixed_case: bool) -> list[tuple[bytes, bytes]]:
    fields = []
    for _ in range(rng.randint(0, 10)):
        name = rng.choice(REQUEST_NAMES)
        if mixed_case and rng.random() < 0.4:
            name = name.title() if rng.random() < 0.5 else name.upper()
        fields.append((name, rng.choice(VALUES)))
    if rng.random() < 0.7:
        fields.insert(rng.randint(0, len(fields)), (b"host", b"shop.example"))
    return fields


def _outcome(call: object, *args: object) -> object:
    try:
        return ("ok", call(*args))  # type: ignore[operator]
    except HeaderError as exc:
        return ("error", str(exc))


def test_check_request_headers_gives_the_same_answers_and_errors() -> None:
    rng = random.Random(5)
    requests = [_request(rng, mixed_case=False) for _ in range(4000)]
    big = b"x" * headers.MAX_REQUEST_HEADER_BYTES
    requests.append([(b"host", b"shop.example"), (b"x-big", big)])
    errors = set()
    for fields in requests:
        expected = _outcome(_reference_check, fields)
        assert _outcome(headers.check_request_headers, fields) == expected, fields
        errors.add(str(expected[1]).split(" ")[0] if expected[0] == "error" else "ok")
    assert len(errors) >= 5  # the generated requests reach every kind of answer


@pytest.mark.parametrize("trusted", [True, False])
@pytest.mark.parametrize("strip_conditional", [True, False])
def test_upstream_request_headers_are_the_same_in_any_case(
    trusted: bool, strip_conditional: bool
) -> None:
    rng = random.Random(6)
    facts = ForwardingFacts("198.51.100.7", trusted, "https", b"shop.example", b"1.1 kairos")
    for _ in range(3000):
        fields = _request(rng, mixed_case=True)   # WebSocket handshakes keep the client's case
        assert (headers.upstream_request_headers(fields, facts, strip_conditional=strip_conditional)
                == _reference_upstream(fields, facts, strip_conditional)), fields
        assert headers.connection_tokens(fields) == _reference_tokens(fields)


def test_the_request_field_kinds_do_not_overlap() -> None:
    kinds = [headers.HOP_BY_HOP | headers.REQUEST_ONLY_LOCAL, headers.FORWARDING,
             headers.SPOOFABLE, headers.CONDITIONAL]
    assert sum(map(len, kinds)) == len(frozenset().union(*kinds)) == len(headers._REQUEST_KIND)


RESPONSE_NAMES = [b"cache-control", b"vary", b"content-type", b"etag", b"set-cookie", b"age"]
CACHE_CONTROL = [b"public, max-age=3600", b"private", b"s-maxage=60, Public , no-transform",
                 b"", b" , ,max-age=0", b"no-cache=\"set-cookie\", PRIVATE", b"Accept-Encoding",
                 b"accept-encoding, User-Agent", b"max-age=1, " + b"x" * 300 + b", public"]


def test_response_helpers_agree_on_lower_case_names() -> None:
    rng = random.Random(8)
    for _ in range(3000):
        fields = [(rng.choice(RESPONSE_NAMES), rng.choice(CACHE_CONTROL))
                  for _ in range(rng.randint(0, 6))]
        assert headers.make_private(fields) == _reference_make_private(fields), fields
        for name in (b"cache-control", b"vary", b"etag"):
            expected = next((v for n, v in fields if n == name), None)
            assert headers.first(fields, name) == expected
            for token in (b"no-transform", b"accept-encoding", b"public", b"", b"x" * 300):
                assert (headers.has_token(fields, name, token)
                        == _reference_has_token(fields, name, token)), (fields, name, token)
        assert headers.without(fields, b"age", b"vary") == [
            (n, v) for n, v in fields if n not in (b"age", b"vary")]


def test_long_values_are_parsed_but_not_remembered() -> None:
    value = b"max-age=1, " + b"y" * headers.MAX_MEMO_VALUE + b", public"
    before = headers._remembered_directives.cache_info().currsize
    assert headers.make_private([(b"cache-control", value)]) == [
        (b"cache-control", b"private, max-age=1, " + b"y" * headers.MAX_MEMO_VALUE)]
    assert headers._remembered_directives.cache_info().currsize == before


# -- the client address --------------------------------------------------------------------

NETWORKS = [ipaddress.ip_network(n) for n in
            ("10.0.0.0/8", "127.0.0.1/32", "192.168.16.0/20", "::1/128", "::ffff:172.16.0.0/108")]
CHAIN_ENTRIES = ["203.0.113.9", "10.1.1.1", "10.2.2.2:8080", "192.168.17.1", "172.16.0.9",
                 "::ffff:10.9.9.9", "[2001:db8::7]:443", "::1", "unknown", "010.1.1.1", "",
                 "1.2.3.4 ", '"198.51.100.1"', "127.0.0.1", "::ffff:172.16.0.9"]


def _reference_rightmost(chain: list[str], peer: str, trusted: TrustedNetworks) -> str:
    candidate = peer
    for entry in reversed(chain):
        address = client_ip._strip_port(entry)
        try:
            ipaddress.ip_address(address)
        except ValueError:
            break
        candidate = address
        if not trusted.contains(address):
            break
    return candidate


def test_the_rightmost_untrusted_address_is_the_same() -> None:
    trusted = TrustedNetworks(NETWORKS)
    rng = random.Random(12)
    for _ in range(5000):
        chain = [rng.choice(CHAIN_ENTRIES) for _ in range(rng.randint(0, 5))]
        peer = rng.choice(("127.0.0.1", "10.0.0.1", "::1"))
        assert (client_ip._rightmost_untrusted(chain, peer, trusted)
                == _reference_rightmost(chain, peer, trusted)), chain


def test_visitor_addresses_are_not_kept_in_the_trust_cache() -> None:
    trusted = TrustedNetworks(NETWORKS)
    fields = [(b"x-forwarded-for", b"203.0.113.77, 10.1.1.1")]
    assert client_ip.resolve("127.0.0.1", "http", fields, trusted).ip == "203.0.113.77"
    assert trusted.contains.cache_info().currsize == 1   # the peer only


# -- request facts and geo records ----------------------------------------------------------


def test_from_asgi_lowers_only_names_that_need_it() -> None:
    scope = {"type": "http", "headers": [
        (b"1-2", b"x"), (b"User-Agent", b"ua"), (b"user-agent", b"second"),
        (b"CF-IPCountry", b"DE"), (b"dnt", b""), (b"DNT", b"1"), (b"\xc9", b"e")]}
    facts = RequestFacts.from_asgi(scope, "203.0.113.7", True)
    assert (facts.user_agent, facts.dnt, facts.geo_headers) == ("ua", "", (("cf-ipcountry", "DE"),))


def test_geo_records_read_as_by_keyword() -> None:
    record = {"country": {"iso_code": "DE", "names": {"en": "Germany"}},
              "subdivisions": [{"iso_code": "BE", "names": {"en": "Berlin"}}],
              "city": {"names": {"en": "Berlin"}}, "continent": {"code": "EU"},
              "location": {"time_zone": "Europe/Berlin"}}
    expected = geo.Geo(country="DE", country_name="Germany", region="BE", region_name="Berlin",
                       city="Berlin", continent="EU", time_zone="Europe/Berlin",
                       source="database")
    assert geo._from_record(record) == expected
    assert dataclasses.astuple(geo._from_record({})) == ("",) * 7 + ("database",)
