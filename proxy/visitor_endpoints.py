"""``/_kairos/why``, ``/_kairos/opt-out`` and ``/_kairos/opt-in``: the visitor's own pages.

Public by design (no admin token): every visitor may see why they get what they get and
object at any time. They never cache (``no-store``) and never reach the origin.
"""

from __future__ import annotations

import time
from typing import Any

from . import client_ip, transparency
from .experimentation import Experimentation
from .page import PageRequest, PageTransform
from .responses import respond
from .visitor import Visitors


class VisitorEndpoints:
    def __init__(self, visitors: Visitors, trusted: client_ip.TrustedNetworks, prefix: str,
                 transform: PageTransform | None, experiments: Experimentation | None = None
                 ) -> None:
        self.visitors = visitors
        self.trusted = trusted
        self.prefix = prefix
        self.transform = transform
        self.experiments = experiments

    @property
    def routes(self) -> dict[str, Any]:
        return {"why": self.why, "opt-out": self.opt_out, "opt-in": self.opt_in}

    def _client(self, scope: dict[str, Any]) -> client_ip.ClientAddress:
        return client_ip.of_scope(scope, self.trusted)

    async def why(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path, query, fmt = transparency.target_path(scope)
        page_scope = {**scope, "path": path, "query_string": query.encode("latin-1")}
        recognition = self.visitors.recognise(page_scope, self._client(scope),
                                              count_visit=False)
        context = recognition.context
        decided, experiments = None, None
        if self.experiments is not None:
            decided = self.experiments.on_page(context, context.host, context.path,
                                               context.query, time.time())
            experiments = self.experiments.describe(context, decided)
        rules = self._describe(context, page_scope, decided)
        document = transparency.explain(context, rules, experiments)
        if fmt == "json":
            await respond(send, 200, b"application/json", transparency.render_json(document))
        else:
            await respond(send, 200, b"text/html; charset=utf-8",
                          transparency.render_html(document, self.prefix))

    def _describe(self, context: Any, scope: dict[str, Any], decided: Any
                  ) -> list[dict[str, Any]] | None:
        describe = getattr(self.transform, "describe", None)
        if describe is None:
            return None
        page = PageRequest(method="GET", host=context.host, path=context.path,
                           query=context.query, headers=tuple(scope["headers"]),
                           context=context, experiments=decided)
        result: list[dict[str, Any]] = describe(page)
        return result

    async def opt_out(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        scheme = self._client(scope).scheme
        await respond(send, 200, b"text/html; charset=utf-8", transparency.render_choice(True),
                      [(b"set-cookie", self.visitors.opt_out_cookie(scheme))])

    async def opt_in(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["method"] != "POST":   # a link (from anywhere) only asks; the form decides
            await respond(send, 200, b"text/html; charset=utf-8",
                          transparency.render_confirm_opt_in(scope["path"]))
            return
        scheme = self._client(scope).scheme
        await respond(send, 200, b"text/html; charset=utf-8", transparency.render_choice(False),
                      [(b"set-cookie", self.visitors.forget_cookie(scheme))])
