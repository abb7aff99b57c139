"""The edge cache's one-pass request checks give the answers the plain versions gave.

``keys.matches`` reads Accept-Encoding once where ``vary_key(...) == vary`` and
``coding_acceptable`` read it twice; ``request_wants_validation`` finds Cache-Control and
Pragma in one pass. Each is compared with the plain version (kept here as the reference)
on generated requests: mixed-case names, repeated fields, odd spellings.
"""

from __future__ import annotations

import random

import pytest

from proxy.cache import keys
from proxy.cache.freshness import _delta, cache_control, request_wants_validation

# -- the reference versions, as they were before the speed-up -----------------------------


def _reference_field_value(name: bytes, request_headers: list[tuple[bytes, bytes]]
                           ) -> bytes | None:
    values = [v for n, v in request_headers if n.lower() == name]
    if not values:
        return None
    if name == b"accept-encoding":
        return keys.accept_encoding_key(values)
    parts = [part.strip() for value in values for part in value.split(b",")]
    return b",".join(part for part in parts if part)


def _reference_matches(vary: keys.VaryKey, coding: bytes | None,
                       request_headers: list[tuple[bytes, bytes]]) -> bool:
    names = tuple(name for name, _ in vary)
    if tuple((n, _reference_field_value(n, request_headers)) for n in names) != vary:
        return False
    value = _reference_field_value(b"accept-encoding", request_headers)
    if value is None:
        return True
    coding = (coding or b"identity").strip().lower()
    return {b"x-gzip": b"gzip"}.get(coding, coding) in value.split(b",")


def _reference_wants_validation(request_headers: list[tuple[bytes, bytes]], age: float
                                ) -> bool:
    cc = cache_control(request_headers)
    if b"no-cache" in cc:
        return True
    if not cc and any(n.lower() == b"pragma" and b"no-cache" in v.lower()
                      for n, v in request_headers):
        return True
    return b"max-age" in cc and age > _delta(cc[b"max-age"])


# -- generated requests ---------------------------------------------------------------------

_NAMES = [b"accept-encoding", b"Accept-Encoding", b"ACCEPT-ENCODING", b"accept-language",
          b"Accept-Language", b"cookie", b"user-agent", b"cache-control", b"Cache-Control",
          b"pragma", b"Pragma", b"host", b"x-device"]
_VALUES = {
    b"accept-encoding": [b"gzip, deflate, br", b"br;q=1.0, gzip;q=0.8", b"identity",
                         b"gzip;q=0", b"*", b"*;q=0, gzip", b"x-gzip", b"", b"zstd, br",
                         b"gzip;q=abc"],
    b"accept-language": [b"en-GB,en;q=0.9", b"de", b" fr , en ", b""],
    b"cache-control": [b"no-cache", b"max-age=0", b"max-age=10", b"max-stale=5",
                       b"max-age=abc", b"", b" , ", b"MAX-AGE=3, no-store",
                       b'no-cache="set-cookie"'],
    b"pragma": [b"no-cache", b"No-Cache", b"x"],
}
_CODINGS = [None, b"gzip", b"x-gzip", b"br", b"identity", b" GZIP ", b"zstd"]
_VARY_NAMES = [(), (b"accept-encoding",), (b"accept-language",),
               (b"accept-encoding", b"accept-language"), (b"x-device",), (b"cookie",)]


def _request(rng: random.Random) -> list[tuple[bytes, bytes]]:
    fields = []
    for _ in range(rng.randint(0, 7)):
        name = rng.choice(_NAMES)
        choices = _VALUES.get(name.lower(), [b"a", b"b, c", b"A"])
        fields.append((name, rng.choice(choices)))
    return fields


@pytest.mark.parametrize("seed", range(4))
def test_matches_gives_the_plain_answer(seed: int) -> None:
    rng = random.Random(seed)
    agreed = {True: 0, False: 0}
    for _ in range(3_000):
        stored_with = _request(rng)
        names = rng.choice(_VARY_NAMES)
        vary = tuple((n, _reference_field_value(n, stored_with)) for n in names)
        asked = stored_with if rng.random() < 0.4 else _request(rng)
        coding = rng.choice(_CODINGS)
        expected = _reference_matches(vary, coding, asked)
        assert keys.matches(vary, coding, asked) is expected, (vary, coding, asked)
        agreed[expected] += 1
    assert min(agreed.values()) > 300   # both answers were exercised


@pytest.mark.parametrize("seed", range(4))
def test_request_wants_validation_gives_the_plain_answer(seed: int) -> None:
    rng = random.Random(100 + seed)
    agreed = {True: 0, False: 0}
    for _ in range(3_000):
        request = _request(rng)
        age = rng.choice([0.0, 2.0, 5.0, 20.0])
        expected = _reference_wants_validation(request, age)
        assert request_wants_validation(request, age) is expected, (request, age)
        agreed[expected] += 1
    assert min(agreed.values()) > 300
