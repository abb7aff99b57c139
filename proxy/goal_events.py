"""Goals reported after the page view: the beacon endpoint and the origin's header.

- ``POST /_kairos/event`` takes what the goals script sends: ``{"token", "click": selector}``
  or ``{"token", "event": name, "value": number}`` (``kairos.track(name, value)`` on the
  site). ``GET /_kairos/goals.js`` serves the script.
- ``Kairos-Event: purchase; value=49.90, newsletter`` on an origin response reports goals
  for the visitor of that request (server-side: no script, no ad blocker in the way). The
  proxy removes the header, so visitors never see it, and ignores it on requests (a visitor
  cannot send it to us).

A beacon is counted only when all of these hold, else it is rejected with a named reason
and counted in the metrics (``beacon_rejected_<reason>``): same-origin request, a valid
visitor cookie, a token signed by this site for this visitor and not expired, not replayed
on this worker, not a bot, not opted out, and an exposure in an experiment with that goal
that the cookie has not already converted. Nothing is awaited: conversions go to the
store's buffer.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from experiments.model import GoalKind

from . import client_ip
from .context.device import classify
from .experiment_runtime import GoalHit
from .experimentation import Experimentation
from .goals_script import script_bytes
from .headers import first
from .metrics import Metrics
from .responses import respond
from .visitor import Visitors

EVENT_HEADER = b"kairos-event"
MAX_BEACON_BYTES = 4096
_EVENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


@dataclass(frozen=True, slots=True)
class ReportedEvent:
    kind: GoalKind
    name: str
    value: float | None = None


def parse_event_header(values: list[bytes]) -> tuple[ReportedEvent, ...]:
    """``name[; value=number]`` items, comma separated, over every header line; items that
    do not parse are skipped (the origin's mistake must not break its page)."""
    out: list[ReportedEvent] = []
    for raw in values:
        for item in raw.decode("latin-1").split(","):
            name, *params = (part.strip() for part in item.split(";"))
            if not _EVENT_NAME.fullmatch(name):
                continue
            value = None
            for param in params:
                key, _, text = param.partition("=")
                if key.strip().lower() == "value":
                    value = _number(text.strip().strip('"'))
            out.append(ReportedEvent(GoalKind.CUSTOM, name, value))
    return tuple(out)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class GoalEndpoints:
    def __init__(self, visitors: Visitors, experiments: Experimentation, metrics: Metrics,
                 record: Callable[[Any], None], trusted: client_ip.TrustedNetworks) -> None:
        self.visitors = visitors
        self.experiments = experiments
        self.metrics = metrics
        self.record = record
        self.trusted = trusted

    @property
    def routes(self) -> dict[str, Any]:
        return {"event": self.event, "goals.js": self.script}

    async def script(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/javascript; charset=utf-8"),
            (b"content-length", str(len(script_bytes())).encode()),
            (b"cache-control", b"public, max-age=3600"),
            (b"x-content-type-options", b"nosniff")]})
        await send({"type": "http.response.body", "body": script_bytes()})

    async def event(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["method"] != "POST":
            await respond(send, 405, b"text/plain; charset=utf-8",
                          b"POST a JSON beacon here\n", [(b"allow", b"POST")])
            return
        body = await _read_body(receive, MAX_BEACON_BYTES)
        if body is None:
            await self._reject(send, "too_large", 413)
            return
        now = time.time()
        counted, reason, cookie = self._count(scope, body, now)
        if reason:
            await self._reject(send, reason, 400 if reason == "malformed" else 403)
            return
        self.metrics.errors["beacon_conversions"] += counted   # counters, not errors
        extra = [(b"set-cookie", cookie)] if cookie else []
        await respond(send, 202, b"application/json",
                      json.dumps({"counted": counted}).encode(), extra)

    def _count(self, scope: dict[str, Any], body: bytes, now: float
               ) -> tuple[int, str, bytes | None]:
        headers = scope["headers"]
        site = first(headers, b"sec-fetch-site")
        if site is not None and site not in (b"same-origin", b"none"):
            return 0, "cross_site", None
        origin = first(headers, b"origin")
        host = first(headers, b"host") or b""
        if origin is not None and origin.split(b"://", 1)[-1] != host:
            return 0, "cross_site", None
        try:
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return 0, "malformed", None
        hit = _hit(message)
        if hit is None:
            return 0, "malformed", None
        if classify((first(headers, b"user-agent") or b"").decode("latin-1")).kind == "bot":
            return 0, "bot", None
        state = self.visitors.state_of(headers, now)
        if state is None:
            return 0, "no_visitor", None
        if state.opted_out:
            return 0, "opted_out", None
        reason = self.experiments.check_beacon(message.get("token"), state.visitor_id, now,
                                               f"{hit.kind}:{hit.target}")
        if reason:
            return 0, reason, None
        state, events, reason = self.experiments.hits(state, (hit,), now)
        if reason:
            return 0, reason, None
        for event in events:
            self.record(event)
        return len(events), "", self.visitors.cookie_for(
            state, client_ip.of_scope(scope, self.trusted).scheme)

    async def _reject(self, send: Any, reason: str, status: int) -> None:
        self.metrics.errors[f"beacon_rejected_{reason}"] += 1
        await respond(send, status, b"application/json",
                      json.dumps({"rejected": reason}).encode())


def _hit(message: Any) -> GoalHit | None:
    if not isinstance(message, dict) or not isinstance(message.get("token"), str):
        return None
    click, event = message.get("click"), message.get("event")
    if isinstance(click, str) and 0 < len(click) <= 500 and event is None:
        return GoalHit(GoalKind.CLICK, click)
    if isinstance(event, str) and _EVENT_NAME.fullmatch(event) and click is None:
        value = message.get("value")
        if value is None:
            return GoalHit(GoalKind.CUSTOM, event)
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            return None
        return GoalHit(GoalKind.CUSTOM, event, float(value))
    return None


async def _read_body(receive: Any, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
