"""The request facts that go in and the :class:`VisitorContext` that comes out.

``VisitorContext`` is what rules and experiments match against and what ``/_kairos/why``
shows. Its attributes have dotted names (``geo.country``, ``visitor.returning``) defined
ONCE, in :data:`ATTRIBUTES`, which drives both ``to_dict()`` and ``get()``; README.md in
this folder documents each (a test keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.context.device import Device
from proxy.context.geo import CDN_HEADER_NAMES, Geo
from proxy.context.identity import VisitorState
from proxy.context.journey import Journey
from proxy.context.language import Languages
from proxy.context.localtime import LocalTime
from proxy.context.signals import SignalSnapshot
from proxy.context.source import UTM_KEYS, Source
from proxy.values import quick_init

# Every header from_asgi reads, by lower-case name: the index of the RequestFacts field it
# fills in order (the first such header wins), or how it is gathered. One dict lookup per
# header, most of which (Accept, Sec-Fetch-*, X-Forwarded-For, ...) are none of these.
_USER_AGENT, _REFERER, _ACCEPT_LANGUAGE, _SEC_GPC, _DNT = range(5)
_COOKIE, _HOST, _GEO = 5, 6, 7
_WANTED: dict[bytes, int] = {
    b"user-agent": _USER_AGENT, b"referer": _REFERER, b"accept-language": _ACCEPT_LANGUAGE,
    b"sec-gpc": _SEC_GPC, b"dnt": _DNT, b"cookie": _COOKIE, b"host": _HOST,
    **{name.encode("latin-1"): _GEO for name in CDN_HEADER_NAMES},
}


@quick_init
@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the proxy knows about the request, taken from the ASGI scope.

    ``client_ip`` is already resolved through the trusted proxies; ``peer_trusted`` says
    whether the direct peer is one of them (only then are CDN geo headers believed).
    ``cookie`` is the whole Cookie header (for the consent cookie); the visitor cookie
    itself is decoded by the proxy with :func:`proxy.context.identity.decode`.
    """

    client_ip: str
    peer_trusted: bool
    method: str
    scheme: str
    host: str
    path: str
    query_string: str = ""
    user_agent: str = ""
    referer: str = ""
    accept_language: str = ""
    sec_gpc: str = ""
    dnt: str = ""
    cookie: str = ""
    geo_headers: tuple[tuple[str, str], ...] = ()  # CDN geo headers, lower-case names

    @classmethod
    def from_asgi(
        cls, scope: Mapping[str, Any], client_ip: str, peer_trusted: bool,
        scheme: str | None = None,
    ) -> RequestFacts:
        """Pick the needed headers out of an HTTP scope in one pass. ``scheme`` overrides
        the scope's when the proxy resolved X-Forwarded-Proto from a trusted peer."""
        # ASGI servers give lower-case names: only a name with an upper-case letter, which
        # a hand-made scope may have, is lowered (~0.5 µs a view less than lowering all)
        single: list[str | None] = [None, None, None, None, None]
        cookies: list[str] = []
        geo: list[tuple[str, str]] = []
        host = ""
        wanted_of = _WANTED.get
        for raw_name, raw_value in scope.get("headers", ()):
            wanted = wanted_of(raw_name)
            if wanted is None:
                if raw_name.islower():
                    continue
                wanted = wanted_of(raw_name.lower())
                if wanted is None:
                    continue
            if wanted < _COOKIE:
                if single[wanted] is None:
                    single[wanted] = raw_value.decode("latin-1")
            elif wanted == _COOKIE:
                cookies.append(raw_value.decode("latin-1"))  # HTTP/2 may split it
            elif wanted == _HOST:
                host = host or raw_value.decode("latin-1")
            else:
                geo.append((raw_name.lower().decode("latin-1"), raw_value.decode("latin-1")))
        if not host and scope.get("server"):
            host = str(scope["server"][0])
        user_agent, referer, accept_language, sec_gpc, dnt = single
        return cls(  # positional, in field order: keywords cost ~0.5 µs more on every view
            client_ip,
            peer_trusted,
            str(scope.get("method", "GET")),
            scheme or str(scope.get("scheme", "http")),
            host.lower(),
            str(scope.get("path", "/")),
            bytes(scope.get("query_string", b"")).decode("latin-1"),
            "" if user_agent is None else user_agent,
            "" if referer is None else referer,
            "" if accept_language is None else accept_language,
            "" if sec_gpc is None else sec_gpc,
            "" if dnt is None else dnt,
            "; ".join(cookies),
            tuple(geo),
        )


@quick_init
@dataclass(frozen=True, slots=True)
class VisitorContext:
    """Everything rules can match for one request. Immutable; built by ``build_context``.

    ``visitor`` is the profile rules see — None when profiling is not allowed (Sec-GPC,
    DNT when honoured, opt-out, missing consent): then only request-local facts remain.
    ``cookie_state`` is the state the proxy should write back to the visitor cookie, None
    when the cookie must be left alone.
    """

    method: str
    scheme: str
    host: str
    path: str
    query: str
    profiling_allowed: bool
    privacy_reason: str  # "" when allowed, else "gpc", "dnt", "opted_out" or "no_consent"
    visitor: VisitorState | None
    cookie_state: VisitorState | None
    device: Device
    geo: Geo
    source: Source
    languages: Languages
    time: LocalTime
    journey: Journey
    signals: SignalSnapshot

    def get(self, name: str, default: Any = None) -> Any:
        """The value of one dotted attribute (``"geo.country"``, ``"signals.weather.x"``);
        ``default`` for an unknown name or a missing signal."""
        getter = ATTRIBUTES.get(name)
        if getter is not None:
            return getter(self)
        if name.startswith("signals."):
            return self.signals.get(name[8:], default)
        return default

    def to_dict(self) -> dict[str, Any]:
        """Every attribute by dotted name, JSON-able (sequences as lists), signals last."""
        out = {name: _plain(getter(self)) for name, getter in ATTRIBUTES.items()}
        for name, value in self.signals.items():
            out[f"signals.{name}"] = value
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _visitor(read: Callable[[VisitorState], Any]) -> Callable[[VisitorContext], Any]:
    """A visitor attribute: None when there is no profile (profiling not allowed)."""
    return lambda c: None if c.visitor is None else read(c.visitor)


def _history(read: Callable[[VisitorContext], Any]) -> Callable[[VisitorContext], Any]:
    """History kept outside VisitorState (journey, interests): None without a profile."""
    return lambda c: None if c.visitor is None else read(c)


def _counts(items: Iterable[tuple[str, int]]) -> dict[str, int]:
    return dict(items)


ATTRIBUTES: dict[str, Callable[[VisitorContext], Any]] = {
    "request.method": lambda c: c.method,
    "request.scheme": lambda c: c.scheme,
    "request.host": lambda c: c.host,
    "request.path": lambda c: c.path,
    "request.query": lambda c: c.query,
    "privacy.profiling_allowed": lambda c: c.profiling_allowed,
    "privacy.reason": lambda c: c.privacy_reason,
    "visitor.id": _visitor(lambda v: v.visitor_id),
    "visitor.new": _visitor(lambda v: v.visit_number == 1),
    "visitor.returning": _visitor(lambda v: v.returning),
    "visitor.visit_number": _visitor(lambda v: v.visit_number),
    "visitor.pages_this_visit": _visitor(lambda v: v.visit_pages),
    "visitor.landing_page": _visitor(lambda v: v.landing_page),
    "visitor.entry_source": _visitor(lambda v: v.entry_source),
    "visitor.entry_campaign": _visitor(lambda v: v.entry_campaign),
    "visitor.first_seen": _visitor(lambda v: v.first_seen),
    "visitor.days_since_first_visit": _visitor(lambda v: v.days_since_first_visit),
    "visitor.days_since_last_visit": _visitor(lambda v: v.days_since_last_visit),
    "device.kind": lambda c: c.device.kind,
    "device.browser": lambda c: c.device.browser,
    "device.os": lambda c: c.device.os,
    "device.bot": lambda c: c.device.bot,
    "geo.country": lambda c: c.geo.country,
    "geo.country_name": lambda c: c.geo.country_name,
    "geo.region": lambda c: c.geo.region,
    "geo.region_name": lambda c: c.geo.region_name,
    "geo.city": lambda c: c.geo.city,
    "geo.continent": lambda c: c.geo.continent,
    "geo.time_zone": lambda c: c.geo.time_zone,
    "geo.source": lambda c: c.geo.source,
    "source.class": lambda c: c.source.cls,
    "source.name": lambda c: c.source.name,
    "source.engine": lambda c: c.source.engine,
    "source.term": lambda c: c.source.term,
    "source.medium": lambda c: c.source.medium,
    "source.campaign": lambda c: c.source.campaign,
    "source.referrer_host": lambda c: c.source.referrer_host,
    "source.click_id": lambda c: c.source.click_id,
    **{f"utm.{key}": (lambda k: lambda c: c.source.utm_value(k))(key) for key in UTM_KEYS},
    "language.primary": lambda c: c.languages.primary,
    "language.locale": lambda c: c.languages.locale,
    "language.all": lambda c: c.languages.tags,
    "language.primaries": lambda c: c.languages.primaries,
    "time.zone": lambda c: c.time.time_zone,
    "time.hour": lambda c: c.time.hour,
    "time.minute": lambda c: c.time.minute,
    "time.part_of_day": lambda c: c.time.part_of_day,
    "time.weekday": lambda c: c.time.weekday,
    "time.weekday_number": lambda c: c.time.weekday_number,
    "time.weekend": lambda c: c.time.weekend,
    "time.date": lambda c: c.time.date,
    "time.month": lambda c: c.time.month,
    "time.day": lambda c: c.time.day,
    "time.ranges": lambda c: c.time.ranges,
    "journey.stage": lambda c: c.journey.stage,
    "journey.furthest": _history(lambda c: c.journey.furthest),
    "interest.current": lambda c: c.journey.current_interests,
    "interest.top": _history(lambda c: c.journey.top_interest),
    "interest.counts": _history(lambda c: _counts(c.journey.interests)),
}
ATTRIBUTE_NAMES = frozenset(ATTRIBUTES)  # for validating rule files at load time
