"""``build_context``: request facts + visitor state → :class:`VisitorContext`. Pure.

No I/O, no awaiting, no clock reads: the time, the open GeoIP reader and the current
signal snapshot are passed in, so the same inputs always give the same context (except a
new visitor's random id) and tests need no mocks.

Privacy (S10/S11) is decided here, once: ``Sec-GPC: 1``, ``DNT: 1`` when
``context.honour_dnt`` is set, an opted-out visitor cookie or a missing consent cookie
(when ``context.consent_cookie`` is configured) turn profiling off. The context then has
no visitor history (``visitor`` is None, journey history and interests are empty), the
state is not advanced and nothing is to be written to the visitor cookie; the
request-local facts — device, geo, source, time, language, this page's journey stage —
stay, because they describe the request, not the person.
"""

from __future__ import annotations

from proxy.context.device import classify
from proxy.context.geo import GeoReader, locate
from proxy.context.identity import VisitorState, advance, read_cookie
from proxy.context.journey import Journey, journey_for, page_of
from proxy.context.language import parse_accept_language
from proxy.context.localtime import local_time
from proxy.context.model import RequestFacts, VisitorContext
from proxy.context.settings import ContextSettings
from proxy.context.signals import NO_SIGNALS, SignalSnapshot
from proxy.context.source import classify_source

MAX_QUERY_CHARS = 2048


def privacy(facts: RequestFacts, state: VisitorState | None, settings: ContextSettings
            ) -> str:
    """Why profiling is not allowed ("opted_out", "gpc", "dnt", "no_consent"), or ""."""
    if state is not None and state.opted_out:
        return "opted_out"
    if facts.sec_gpc.strip() == "1":
        return "gpc"
    if settings.honour_dnt and facts.dnt.strip() == "1":
        return "dnt"
    if settings.consent_cookie and (
        read_cookie(facts.cookie, settings.consent_cookie) != settings.consent_value
    ):
        return "no_consent"
    return ""


def build_context(
    facts: RequestFacts,
    state: VisitorState | None,
    settings: ContextSettings,
    now: float,
    geo_reader: GeoReader | None,
    signals: SignalSnapshot = NO_SIGNALS,
) -> VisitorContext:
    """The context of one request.

    ``state`` is the visitor cookie as decoded (None: no or invalid cookie); when profiling
    is allowed it is advanced by this page view and the result is both ``visitor`` and
    ``cookie_state`` (to be encoded into Set-Cookie by the proxy).
    """
    device = classify(facts.user_agent)
    cdn_headers = dict(facts.geo_headers) if facts.geo_headers else None
    geo = locate(geo_reader, facts.client_ip, cdn_headers, peer_trusted=facts.peer_trusted,
                 trust_cdn_headers=settings.trust_cdn_headers)
    source = classify_source(facts.referer, facts.query_string, facts.host, settings.sources)
    reason = privacy(facts, state, settings)
    path = facts.path
    visitor: VisitorState | None = None
    if not reason:
        visitor = advance(state, now, path, settings,
                          entry_source=source.label, entry_campaign=source.campaign)
        journey = journey_for(path, settings, visitor.stage, visitor.interests)
    else:
        stage, current = page_of(path, settings)
        journey = Journey(stage=stage, current_interests=current)
    # Positional, in field order: keywords cost ~1 µs more here, on every page view.
    return VisitorContext(
        facts.method,
        facts.scheme,
        facts.host,
        path,
        facts.query_string[:MAX_QUERY_CHARS],   # query
        not reason,                             # profiling_allowed
        reason,                                 # privacy_reason
        visitor,
        visitor,                                # cookie_state
        device,
        geo,
        source,
        parse_accept_language(facts.accept_language),
        local_time(now, geo.time_zone, settings),
        journey,
        signals,
    )
