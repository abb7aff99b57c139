"""Signed tokens: the MAC keyed once per secret and the base64 without the base64 module's
layers give exactly the bytes hmac and base64 give, so tokens never change."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from collections.abc import Sequence

import pytest

from proxy import signing

SECRET = "test-secret-0123456789abcdef"
# Made by the implementation before the MAC was keyed once per secret: they must not change.
PINNED = [
    ((SECRET, "beacon", ("0123456789abcdef0123456789abcdef", "3.7", "1763859123"), 1763945523),
     "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWZ8My43fDE3NjM4NTkxMjN8MTc2Mzk0NTUyMw"
     ".CfK3aLrWLW5qc12PK3mbYw"),
    (("k" * 100, "preview", ("hero", "bold"), 1763945523),
     "aGVyb3xib2xkfDE3NjM5NDU1MjM.WAgwIlWimB5yhFUVUR7pqA"),
]


def reference_sign(secret: str, purpose: str, fields: Sequence[str], expires: int) -> str:
    """The token as first written: hmac and base64 straight from the standard library."""
    key = hashlib.sha256(b"kairos-token|" + secret.encode("utf-8")).digest()
    payload = "|".join((*fields, str(int(expires)))).encode("utf-8")
    tag = hmac.new(key, purpose.encode("ascii") + b"|" + payload, hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    return f"{b64(payload)}.{b64(tag[:signing.TAG_BYTES])}"


@pytest.mark.parametrize("key_length", [0, 1, 31, 32, 63, 64, 65, 100, 300])
def test_the_prefixed_mac_is_hmac_sha256_of_prefix_and_message(key_length: int) -> None:
    rng = random.Random(key_length)
    key = rng.randbytes(key_length)
    prefix = rng.randbytes(rng.randint(0, 80))
    mac = signing.PrefixedMac(key, prefix)
    for size in (0, 1, 55, 56, 63, 64, 65, 200):   # around SHA-256's padding boundaries
        message = rng.randbytes(size)
        assert mac.digest(message) == hmac.digest(key, prefix + message, "sha256")
    assert mac.digest(b"again") == mac.digest(b"again")   # the keyed state is never consumed


def test_b64_is_base64url_without_padding() -> None:
    rng = random.Random(3)
    for size in range(70):
        data = rng.randbytes(size)
        assert signing.b64(data) == base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(("args", "token"), PINNED)
def test_tokens_are_the_ones_the_first_implementation_made(
        args: tuple[str, str, tuple[str, ...], int], token: str) -> None:
    assert signing.sign(*args) == token == reference_sign(*args)


def test_tokens_match_the_reference_for_any_fields_and_secret() -> None:
    rng = random.Random(11)
    alphabet = "abc.-_0123456789é€😀 "
    for i in range(300):
        secret = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 90)))
        fields = tuple("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
                       for _ in range(rng.randint(0, 4)))
        purpose = rng.choice(["beacon", "preview"])
        token = signing.sign(secret, purpose, fields, 1_700_000_000 + i)
        assert token == reference_sign(secret, purpose, fields, 1_700_000_000 + i)
        assert signing.verify(("other", secret), purpose, token, 1_600_000_000) == fields


def test_verify_refuses_other_purposes_forgeries_and_expired_tokens() -> None:
    token = signing.sign(SECRET, "beacon", ("a", "b"), 2_000)
    assert signing.verify((SECRET,), "beacon", token, 1_999) == ("a", "b")
    assert signing.verify((SECRET,), "preview", token, 1_999) == "forged"
    assert signing.verify(("another secret",), "beacon", token, 1_999) == "forged"
    assert signing.verify((SECRET,), "beacon", token, 2_000) == "expired"
    assert signing.verify((SECRET,), "beacon", token + ".x", 1_999) == "malformed"
    with pytest.raises(ValueError, match="may not contain"):
        signing.sign(SECRET, "beacon", ("a|b",), 2_000)


@pytest.mark.parametrize("fields", [("a|b",), ("|",), ("", "|x"), ("a", "b", "c|"), ("|", "|")])
def test_a_separator_in_any_field_is_refused(fields: tuple[str, ...]) -> None:
    # Wherever it stands, a separator inside a field would shift every field after it.
    with pytest.raises(ValueError, match="may not contain"):
        signing.sign(SECRET, "beacon", fields, 2_000)


@pytest.mark.parametrize("fields", [(), ("",), ("", ""), ("a", "", "b")])
def test_empty_and_no_fields_are_signed_as_the_reference_signs_them(
        fields: tuple[str, ...]) -> None:
    token = signing.sign(SECRET, "preview", fields, 2_000)
    assert token == reference_sign(SECRET, "preview", fields, 2_000)
    assert signing.verify((SECRET,), "preview", token, 1_999) == fields
