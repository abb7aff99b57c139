"""Short signed, expiring tokens: preview links and conversion-beacon tokens.

``<base64url payload>.<base64url HMAC-SHA256 truncated to 16 bytes>``, keyed with the
cookie secrets (the first signs, every one verifies, so rotating secrets keeps tokens
valid). The MAC covers a *purpose* too, so a token made for one use (a preview link) is
never accepted for another (a beacon), even with the same payload shape. Expiry is part of
the payload; the verifier takes the clock as an argument. Pure.

:class:`PrefixedMac` is the HMAC both this module and the visitor cookie
(:mod:`proxy.context.identity`) sign with on every page view.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from functools import lru_cache

TAG_BYTES = 16
MAX_TOKEN_CHARS = 512
_BLOCK = 64   # SHA-256's block size: HMAC pads (or hashes) the key to it
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class PrefixedMac:
    """HMAC-SHA256(key, prefix || message), the same bytes as ``hmac.digest(key, prefix +
    message, "sha256")`` for every message.

    Why not hmac.digest: it sets the key up again for every message (two SHA-256 blocks
    for K ^ ipad and K ^ opad, plus the prefix), and a page view signs twice (the cookie, a
    beacon token). RFC 2104's H((K ^ opad) || H((K ^ ipad) || prefix || message)) lets
    both key blocks and the prefix be hashed once per secret; a message then costs two
    copies of those hash states: ~0.9 µs against hmac.digest's ~2.2 (hmac.HMAC(...).copy()
    keeps the key set-up too, but its Python layers leave it at ~1.6). The construction is
    the hmac module's own pure-Python one; tests/test_signing.py holds it to hmac.digest.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, prefix: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._inner.update(prefix)
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def b64(data: bytes) -> str:
    """base64url without padding. binascii directly: base64.urlsafe_b64encode is two Python
    calls around the same C function."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode(
        "ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=16)
def _key(secret: str) -> bytes:
    """Derived once per secret: a token is signed on every page view with a beacon."""
    return hashlib.sha256(b"kairos-token|" + secret.encode("utf-8")).digest()


@lru_cache(maxsize=32)
def _mac(secret: str, purpose: str) -> PrefixedMac:
    """The MAC of one secret and purpose, keyed once (see PrefixedMac)."""
    return PrefixedMac(_key(secret), purpose.encode("ascii") + b"|")


def _tag(secret: str, purpose: str, payload: bytes) -> bytes:
    return _mac(secret, purpose).digest(payload)[:TAG_BYTES]


def sign(secret: str, purpose: str, fields: Sequence[str], expires: int) -> str:
    """A token carrying ``fields`` (none may contain ``|``) until Unix time ``expires``."""
    for f in fields:
        if "|" in f:
            raise ValueError(f"token fields may not contain '|': {fields!r}")
    payload = "|".join((*fields, str(int(expires)))).encode("utf-8")
    return f"{b64(payload)}.{b64(_tag(secret, purpose, payload))}"


def verify(secrets: Sequence[str], purpose: str, token: str, now: float
           ) -> tuple[str, ...] | str:
    """The fields of a valid token, or the reason it is not: "malformed", "forged",
    "expired"."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        return "malformed"
    body, _, tag = token.partition(".")
    try:
        payload, given = _unb64(body), _unb64(tag)
    except (ValueError, TypeError):
        return "malformed"
    if not any(hmac.compare_digest(given, _tag(s, purpose, payload)) for s in secrets):
        return "forged"
    try:
        *fields, expires = payload.decode("utf-8").split("|")
        deadline = int(expires)
    except ValueError:
        return "malformed"
    if now >= deadline:
        return "expired"
    return tuple(fields)
