"""Who is visiting: the edge between a request and the pure visitor-context package.

Per worker it holds what must be opened or resolved once (the GeoIP reader, the cookie
secrets, the latest copy of the outside signals) and turns a request into a
``VisitorContext`` plus the visitor cookie to send back. Only page views (a browser asking
for a document) are profiled: stylesheets and images must not count as pages.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client_ip import ClientAddress
from .config import Config
from .context import identity
from .context.build import build_context
from .context.geo import GeoReader, open_reader
from .context.model import RequestFacts, VisitorContext
from .context.signals import NO_SIGNALS, SignalSnapshot
from .values import quick_init

log = logging.getLogger("kairos.visitor")

SECRET_FILE = "cookie-secret"


@quick_init
@dataclass(frozen=True, slots=True)
class Recognition:
    context: VisitorContext
    # The state the visitor cookie should hold, None to leave the cookie alone; encoded
    # (HMAC) only once the response knows its final cookie (proxy.visitor_outcome).
    cookie: identity.VisitorState | None


class Visitors:
    def __init__(self, config: Config, geo_reader: GeoReader | None,
                 cookie_secrets: tuple[str, ...]) -> None:
        self.config = config
        self.settings = config.context
        self.geo_reader = geo_reader
        self.secrets = cookie_secrets
        self.cookie_name = config.cookies.visitor
        self.signals: SignalSnapshot = NO_SIGNALS   # replaced by the background refresh

    @classmethod
    def open(cls, config: Config) -> Visitors:
        return cls(config, open_reader(config.context.geo_database), cookie_secrets(config))

    def close(self) -> None:
        if self.geo_reader is not None:
            self.geo_reader.close()

    def recognise(self, scope: dict[str, Any], client: ClientAddress,
                  now: float | None = None, *, count_visit: bool = True) -> Recognition:
        """The context of this request; with ``count_visit`` the cookie advances by a page."""
        now = time.time() if now is None else now
        facts = RequestFacts.from_asgi(scope, client.ip, client.peer_trusted, client.scheme)
        state = identity.decode(identity.read_cookie(facts.cookie, self.cookie_name),
                                self.secrets, now,
                                max_age_days=self.config.cookies.max_age_days)
        context = build_context(facts, state, self.settings, now, self.geo_reader, self.signals)
        cookie = context.cookie_state if count_visit else None
        if context.device.kind == "bot":
            cookie = None   # crawlers get the page the rules give them but no identity (S8)
        return Recognition(context, cookie)

    def cookie_for(self, state: identity.VisitorState, scheme: str) -> bytes:
        """The Set-Cookie value that stores ``state`` (e.g. after experiment decisions)."""
        return self._cookie(identity.encode(state, self.secrets[0]), scheme)

    def state_of(self, headers: list[tuple[bytes, bytes]], now: float | None = None
                 ) -> identity.VisitorState | None:
        """The visitor cookie of a request, decoded and verified, not advanced: for requests
        that are not page views (a beacon, a form post whose answer reports a goal)."""
        cookie = b"; ".join(v for n, v in headers if n == b"cookie").decode("latin-1")
        return identity.decode(identity.read_cookie(cookie, self.cookie_name), self.secrets,
                               time.time() if now is None else now,
                               max_age_days=self.config.cookies.max_age_days)

    def opt_out_cookie(self, scheme: str, now: float | None = None) -> bytes:
        """The cookie that remembers only the objection: no id, no history (S11)."""
        state = identity.opt_out(time.time() if now is None else now)
        return self._cookie(identity.encode(state, self.secrets[0]), scheme)

    def forget_cookie(self, scheme: str) -> bytes:
        return identity.expire_cookie_header(self.cookie_name, scheme=scheme).encode()

    def _cookie(self, value: str, scheme: str) -> bytes:
        return identity.set_cookie_header(self.cookie_name, value, scheme=scheme,
                                          max_age_days=self.config.cookies.max_age_days
                                          ).encode("latin-1")


def is_page_view(scope: dict[str, Any]) -> bool:
    """A browser navigating to a document, not fetching a sub-resource or calling an API."""
    if scope["method"] not in ("GET", "HEAD"):
        return False
    accept = b""
    for name, value in scope["headers"]:
        if name == b"sec-fetch-dest":
            return value == b"document"
        if name == b"accept":
            accept = value
    return b"text/html" in accept


def cookie_secrets(config: Config) -> tuple[str, ...]:
    """The configured secrets, else one kept in a file beside the store's data folder.

    ``kairos serve`` creates that file before its workers start, so all of them agree;
    machines behind one load balancer must configure ``cookies.secrets`` instead.
    """
    if config.cookies.secrets:
        return config.cookies.secrets
    return (ensure_secret_file(Path(config.store.data_dir).parent / SECRET_FILE),)


def ensure_secret_file(path: Path) -> str:
    try:
        text = path.read_text().strip()
        if len(text) >= 32:
            return text
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(value + "\n")
    temporary.chmod(0o600)
    try:
        os.link(temporary, path)   # first writer wins; concurrent starters read its value
    except FileExistsError:
        value = path.read_text().strip()
    finally:
        temporary.unlink()
    log.warning("no cookies.secrets configured: using the key in %s (set cookies.secrets "
                "to the same value on every machine behind a load balancer)", path)
    return value
