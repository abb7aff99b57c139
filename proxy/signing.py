"""Short signed, expiring tokens: preview links and conversion-beacon tokens.

``<base64url payload>.<base64url HMAC-SHA256 truncated to 16 bytes>``, keyed with the
cookie secrets (the first signs, every one verifies, so rotating secrets keeps tokens
valid). The MAC covers a *purpose* too, so a token made for one use (a preview link) is
never accepted for another (a beacon), even with the same payload shape. Expiry is part of
the payload; the verifier takes the clock as an argument. Pure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from functools import lru_cache

TAG_BYTES = 16
MAX_TOKEN_CHARS = 512


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=16)
def _key(secret: str) -> bytes:
    """Derived once per secret: a token is signed on every page view with a beacon."""
    return hashlib.sha256(b"kairos-token|" + secret.encode("utf-8")).digest()


def _tag(secret: str, purpose: str, payload: bytes) -> bytes:
    message = purpose.encode("ascii") + b"|" + payload
    return hmac.digest(_key(secret), message, "sha256")[:TAG_BYTES]


def sign(secret: str, purpose: str, fields: Sequence[str], expires: int) -> str:
    """A token carrying ``fields`` (none may contain ``|``) until Unix time ``expires``."""
    if any("|" in f for f in fields):
        raise ValueError(f"token fields may not contain '|': {fields!r}")
    payload = "|".join((*fields, str(int(expires)))).encode("utf-8")
    return f"{_b64(payload)}.{_b64(_tag(secret, purpose, payload))}"


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
