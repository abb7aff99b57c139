"""The Kairos ASGI application: dispatch by scope type, long-lived clients in the lifespan.

Nothing happens at import time. ``create_app(config)`` builds the callable; the lifespan
opens the upstream client and the store and closes them (flushing buffered events) at
shutdown. uvicorn workers call :func:`app_from_environment`, which rebuilds the config the
``kairos serve`` parent resolved.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from . import config as config_module
from .admin import Admin, UpstreamProbe
from .config import Config
from .http_proxy import HttpProxy
from .metrics import Metrics
from .page import PageTransform
from .store import Store
from .store.events import PageView, utc_day
from .upstream import Upstream
from .websocket_proxy import WebSocketProxy

log = logging.getLogger("kairos")


class KairosApp:
    def __init__(self, config: Config, transform: PageTransform | None = None) -> None:
        self.config = config
        self.transform = transform
        self.metrics = Metrics()
        self.store: Store | None = None
        self.http: HttpProxy | None = None
        self.websocket = WebSocketProxy(config)
        _, host, port = config.upstream_origin
        self.admin = Admin(config.admin.prefix, self.metrics,
                           UpstreamProbe(host, port, config.upstream.connect_timeout),
                           self._store_status)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            assert self.http is not None, "lifespan has not run"
            if self.admin.handles(scope["path"]):
                await self.admin(scope, receive, send)
                return
            await self.http(scope, receive, send)
            self._record(scope)
        elif kind == "websocket":
            await self.websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def _record(self, scope: dict[str, Any]) -> None:
        if self.store is not None and scope["method"] == "GET":
            self.store.record(PageView(day=utc_day()))

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("Kairos failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        upstream = Upstream(self.config.upstream)
        self.http = HttpProxy(self.config, upstream, self.metrics, self.transform)
        self.store = await Store.open(self.config.store, self.config.store.url)
        self.metrics.gauges["events_buffered"] = lambda: self.store.stats().buffered  # type: ignore[union-attr]
        self.metrics.gauges["events_dropped_total"] = lambda: self.store.stats().dropped  # type: ignore[union-attr]
        self.metrics.gauges["events_flushed_total"] = lambda: self.store.stats().flushed  # type: ignore[union-attr]

    async def shutdown(self) -> None:
        if self.store is not None:
            await self.store.close()
        if self.http is not None:
            await self.http.upstream.aclose()

    def _store_status(self) -> dict[str, Any]:
        if self.store is None:
            return {"state": "starting"}
        stats = self.store.stats()
        return {"state": stats.state, "buffered": stats.buffered, "dropped": stats.dropped,
                "flushed": stats.flushed, "flush_errors": stats.flush_errors,
                "last_error": stats.last_error}


def create_app(config: Config, transform: PageTransform | None = None) -> KairosApp:
    return KairosApp(config, transform)


def app_from_environment() -> KairosApp:
    """uvicorn factory for worker processes (``--factory``)."""
    resolved = os.environ.get(config_module.RESOLVED_ENV)
    config = config_module.from_json(resolved) if resolved else config_module.load()
    return create_app(config)
