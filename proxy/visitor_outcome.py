"""What one request does to the visitor's cookie and to the counts.

The hot path (:mod:`proxy.http_proxy`) owns bytes and framing; this object owns the rest of
an exchange's bookkeeping: the cookie to send (with the experiments' memberships and
goals), the exposures and conversions to count, and the guardrail samples of the arms
shown. Events are handed to the store's buffer only when the response starts with a status
below 500, and the cookie then remembers them; an error page shows nothing and counts
nothing, so the cookie goes out as it was before this request's counts (never awaited,
Redis is off the request path).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .context.identity import VisitorState
from .experiment_runtime import GoalHit
from .experimentation import NOTHING, Experimentation, PageExperiments
from .goal_events import parse_event_header
from .metrics import Metrics
from .store.events import Guardrail, utc_day
from .visitor import Recognition, Visitors

log = logging.getLogger("kairos.proxy")


class VisitorOutcome:
    def __init__(self, visitors: Visitors | None, experiments: Experimentation | None,
                 metrics: Metrics, record: Callable[[Any], None] | None) -> None:
        self.visitors = visitors
        self.experiments = experiments
        self.metrics = metrics
        self.record = record
        self.cookie: VisitorState | None = None   # what the visitor cookie will hold
        self.base_cookie: VisitorState | None = None   # ... without this request's counts
        self._encoded: tuple[VisitorState, bytes] | None = None
        self.scheme = "http"
        self.state: VisitorState | None = None   # what the cookie will hold
        self.decided: PageExperiments = NOTHING
        self.pending: tuple[Any, ...] = ()       # counted once the response starts (< 500)

    @property
    def set_cookie(self) -> bytes | None:
        """The Set-Cookie value, signed once however often the state changed before."""
        cookie = self.cookie
        if cookie is None or self.visitors is None:
            return None
        if self._encoded is None or self._encoded[0] is not cookie:
            self._encoded = (cookie, self.visitors.cookie_for(cookie, self.scheme))
        return self._encoded[1]

    def recognised(self, recognition: Recognition | None, scheme: str) -> None:
        self.scheme = scheme
        if recognition is not None:
            self.cookie = self.base_cookie = recognition.cookie
            self.state = recognition.context.cookie_state

    def decide(self, context: Any, host: str, path: str, query: str) -> PageExperiments:
        """The experiments of a page view: arms, exposures, page goals, the new cookie."""
        if self.experiments is None or self.visitors is None:
            return NOTHING
        try:
            decided = self.experiments.on_page(context, host, path, query, time.time())
        except Exception:   # F5: an experiment bug must never cost the visitor the page
            self.metrics.errors["experiments_failed"] += 1
            log.exception("experiments of %s failed; page served without them", path)
            return NOTHING
        self.decided = decided
        self.pending = decided.events
        if decided.state is not None and decided.state is not context.cookie_state \
                and self.base_cookie is not None:
            self.state = self.cookie = decided.state
        return decided

    def origin_events(self, values: list[bytes], request_headers: list[tuple[bytes, bytes]],
                      page_view: bool) -> None:
        """Goals the origin reported in ``Kairos-Event`` for this visitor (a purchase, a
        sign-up): converted with the visitor's cookie like a beacon, never trusted from the
        visitor (the header is removed from what the visitor sends and receives)."""
        if self.experiments is None or self.visitors is None:
            return
        hits = parse_event_header(values)
        state = self.state
        if state is None and not page_view:
            state = self.visitors.state_of(request_headers)
        if not hits or state is None or state.opted_out:
            return
        state, events, reason = self.experiments.hits(
            state, (GoalHit(h.kind, h.name, h.value) for h in hits), time.time())
        if reason:
            self.metrics.errors[f"origin_event_{reason}"] += 1
            return
        self.pending = (*self.pending, *events)
        self.state = self.cookie = state

    def on_status(self, status: int) -> None:
        """Before the response headers go out: an error page counts nothing."""
        if status >= 500:
            self.cookie, self.pending = self.base_cookie, ()

    def count(self) -> None:
        """When the response starts: hand the events to the store's buffer."""
        if self.pending and self.record is not None:
            for event in self.pending:
                self.record(event)
        self.pending = ()

    def guardrails(self, status: int, upstream_ms: float, sent_bytes: int) -> None:
        """What each arm shown on this page cost the site (latency, errors, bytes)."""
        if self.record is None or not status or not self.decided.outcomes:
            return
        day = utc_day()
        for outcome in self.decided.outcomes:
            if outcome.arm is not None and outcome.reason == "":
                self.record(Guardrail(outcome.experiment, outcome.arm, day,
                                      round(upstream_ms, 3), status >= 500, sent_bytes))
