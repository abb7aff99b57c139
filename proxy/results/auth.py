"""Who may read results: whoever holds ``admin.token``.

Three ways to present it: ``Authorization: Bearer <token>`` (scripts, curl), the session
cookie (browsers), or ``?token=<token>`` once, which the endpoints answer with a redirect to
the same page without the token and the session cookie (HttpOnly, SameSite=Strict, limited
to the results paths), so the token leaves the address bar and the history.

The cookie holds an HMAC of the token, not the token: it opens the results pages only, and
changing ``admin.token`` ends every session. All comparisons hash both sides first and use
:func:`hmac.compare_digest`, so neither the content nor the length of the secret shows in
the time an answer takes. No token configured means no access at all, never open access.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

COOKIE_NAME = "kairos_admin"
COOKIE_MAX_AGE = 8 * 3600  # a working day; then ?token= again
_SESSION_LABEL = b"kairos results session v1"


class Access(StrEnum):
    GRANTED = "granted"
    NOT_CONFIGURED = "not_configured"   # admin.token is empty: results are switched off
    MISSING = "missing"                 # no token presented
    WRONG = "wrong"                     # a token (or an old session) that does not match


@dataclass(frozen=True, slots=True)
class Verdict:
    access: Access
    via: str = ""  # "query", "header" or "cookie": how the token came


def same(given: str, expected: str) -> bool:
    """Constant-time equality of two secrets of any lengths."""
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(),
                               hashlib.sha256(expected.encode()).digest())


def session_value(token: str) -> str:
    return hmac.new(token.encode(), _SESSION_LABEL, hashlib.sha256).hexdigest()


def check(token: str, headers: Iterable[tuple[bytes, bytes]],
          query_token: str | None) -> Verdict:
    """Whether a request may read results; ``query_token`` is ``?token=`` if given."""
    if not token:
        return Verdict(Access.NOT_CONFIGURED)
    if query_token is not None:
        return Verdict(Access.GRANTED if same(query_token, token) else Access.WRONG, "query")
    bearer, cookie = _presented(headers)
    if bearer is not None:
        return Verdict(Access.GRANTED if same(bearer, token) else Access.WRONG, "header")
    if cookie is not None:
        ok = same(cookie, session_value(token))
        return Verdict(Access.GRANTED if ok else Access.WRONG, "cookie")
    return Verdict(Access.MISSING)


def _presented(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    bearer = cookie = None
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer":
                bearer = credentials.strip()
        elif name.lower() == b"cookie":
            for pair in value.decode("latin-1").split(";"):
                key, _, val = pair.strip().partition("=")
                if key == COOKIE_NAME:
                    cookie = val.strip()
    return bearer, cookie


def session_cookie(token: str, path: str, secure: bool) -> bytes:
    """The Set-Cookie value that opens the results pages under ``path`` for a while."""
    flags = f"; Path={path}; Max-Age={COOKIE_MAX_AGE}; HttpOnly; SameSite=Strict"
    return f"{COOKIE_NAME}={session_value(token)}{flags}{'; Secure' if secure else ''}".encode()
