"""The results under the admin prefix, for people (HTML) and tools (JSON, CSV).

``<prefix>results``                  every experiment: status, arms, the decision
``<prefix>results.json`` / ``.csv``  the same as JSON (kairos.results/1) / daily counts
``<prefix>results/<id>``             one experiment with its charts (``.html`` optional)
``<prefix>results/<id>.json``        its JSON
``<prefix>results/<id>.csv``         its daily counts

``?since=YYYY-MM-DD&until=YYYY-MM-DD`` narrow the days. Every path needs ``admin.token``
(auth.py). Reading the store happens here, on an admin request, never on a visitor's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from experiments.model import Experiment
from experiments.results import SummaryOptions
from proxy.responses import respond
from proxy.results import auth, export, page
from proxy.results.service import UnknownExperiment, read_reports
from proxy.results.summary import DEFAULT_OPTIONS
from proxy.store.client import StoreUnavailable
from proxy.store.events import check_day
from proxy.store.experiment_counts import CountsReader

HTML = b"text/html; charset=utf-8"
JSON = b"application/json"
CSV = b"text/csv; charset=utf-8"
TEXT = b"text/plain; charset=utf-8"
# No script at all; inline styles and the inline SVG only; never framed.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; "
     b"img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
FORMATS = {".json": JSON, ".csv": CSV, ".html": HTML}


class ResultsEndpoints:
    """ASGI handler for every path under ``<prefix>results``.

    ``store`` is the running Store (or a CountsReader); ``definitions`` is called on every
    request so that reloaded rules show at once; ``clock`` gives the time statuses are judged
    by (tests pin it).
    """

    def __init__(self, store: Any, definitions: Callable[[], Mapping[str, Experiment]],
                 token: str, prefix: str, *, options: SummaryOptions = DEFAULT_OPTIONS,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.reader = store if isinstance(store, CountsReader) else CountsReader.of(store)
        self.definitions = definitions
        self.token = token
        self.prefix = prefix
        self.base = f"{prefix}results"
        self.options = options
        self.clock = clock
        # For proxy.admin.Admin: names it matches exactly; handles() covers the sub-paths.
        self.routes: dict[str, Any] = {"results": self, "results.json": self,
                                       "results.csv": self}

    def handles(self, path: str) -> bool:
        rest = path[len(self.base):] if path.startswith(self.base) else None
        return rest is not None and (rest in ("", ".json", ".csv") or rest.startswith("/"))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        experiment, content = self._target(scope["path"])
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                               keep_blank_values=True))
        verdict = auth.check(self.token, scope.get("headers", []), query.get("token"))
        if verdict.access is not auth.Access.GRANTED:
            await self._unauthorised(send, verdict, content)
            return
        if verdict.via == "query":
            await self._start_session(scope, send, query)
            return
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            await self._error(send, 405, content, "results are read-only: use GET",
                              [(b"allow", b"GET, HEAD")])
            return
        try:
            since, until = self._window(query)
            await self._answer(send, experiment, content, since, until)
        except UnknownExperiment as exc:
            await self._error(send, 404, content, str(exc))
        except ValueError as exc:
            await self._error(send, 400, content, str(exc))
        except StoreUnavailable as exc:
            await self._error(send, 503, content, f"the store cannot be read: {exc}")

    def _target(self, path: str) -> tuple[str | None, bytes]:
        """(experiment id or None for all, content type) of a results path."""
        rest = path[len(self.base):]
        if rest in ("", "/"):
            return None, HTML
        if rest in (".json", ".csv"):
            return None, FORMATS[rest]
        name = rest.strip("/")  # ASGI paths arrive percent-decoded
        for suffix, content in FORMATS.items():
            if name.endswith(suffix):
                return name[:-len(suffix)], content
        return name, HTML

    @staticmethod
    def _window(query: Mapping[str, str]) -> tuple[str | None, str | None]:
        since, until = query.get("since") or None, query.get("until") or None
        for name, day in (("since", since), ("until", until)):
            if day is not None:
                check_day(day, f"?{name}")
        return since, until

    async def _answer(self, send: Any, experiment: str | None, content: bytes,
                      since: str | None, until: str | None) -> None:
        now = self.clock()
        reports = await read_reports(self.reader, self.definitions(), now, only=experiment,
                                     since=since, until=until, options=self.options)
        if content == JSON:
            body = export.to_json(reports, now, since=since, until=until).encode()
            await respond(send, 200, JSON, body)
        elif content == CSV:
            name = experiment or "experiments"
            disposition = f'attachment; filename="{name}-daily.csv"'.encode()
            await respond(send, 200, CSV, export.daily_csv(reports).encode(),
                          [(b"content-disposition", disposition)])
        elif experiment is None:
            html = page.render_index(reports, self.prefix, now, since, until)
            await respond(send, 200, HTML, html.encode(), SECURITY_HEADERS)
        else:
            html = page.render_detail(reports[0], self.prefix, now)
            await respond(send, 200, HTML, html.encode(), SECURITY_HEADERS)

    async def _start_session(self, scope: dict[str, Any], send: Any,
                             query: Mapping[str, str]) -> None:
        """Answer ``?token=`` with the cookie and a redirect to the page without the token."""
        rest = urlencode([(k, v) for k, v in query.items() if k != "token"])
        location = scope["path"] + (f"?{rest}" if rest else "")
        cookie = auth.session_cookie(self.token, self.base, scope.get("scheme") == "https")
        await respond(send, 303, TEXT, b"signed in; continue to the results page\n",
                      [(b"location", location.encode("latin-1")), (b"set-cookie", cookie)])

    async def _unauthorised(self, send: Any, verdict: auth.Verdict, content: bytes) -> None:
        if verdict.access is auth.Access.NOT_CONFIGURED:
            message = ("results are switched off: no admin token is configured. Set "
                       "admin.token in config.toml ([admin] token = \"...\") or the "
                       "KAIROS_ADMIN_TOKEN environment variable, then restart Kairos")
        elif verdict.access is auth.Access.WRONG:
            message = f"the admin token given ({verdict.via}) is not the configured one"
        else:
            message = (f"results need the admin token: open {self.base}?token=<admin.token> "
                       "once in a browser, or send the header Authorization: Bearer "
                       "<admin.token>")
        await self._error(send, 401, content, message,
                          [(b"www-authenticate", b'Bearer realm="Kairos results"')])

    async def _error(self, send: Any, status: int, content: bytes, message: str,
                     extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = list(extra or [])
        if content == JSON:
            body = json.dumps({"error": message, "status": status}).encode() + b"\n"
            await respond(send, status, JSON, body, headers)
        elif content == CSV:
            await respond(send, status, TEXT, f"{message}\n".encode(), headers)
        else:
            titles = {400: "Bad request", 401: "Admin token needed", 404: "Not found",
                      405: "Method not allowed", 503: "Store unavailable"}
            html = page.render_message(titles.get(status, "Error"), message)
            await respond(send, status, HTML, html.encode(), headers + SECURITY_HEADERS)
