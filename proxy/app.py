"""The Kairos ASGI application: dispatch by scope type, long-lived clients in the lifespan.

Nothing happens at import time. ``create_app(config)`` builds the callable; the lifespan
opens the upstream client and the store and closes them (flushing buffered events) at
shutdown. uvicorn workers call :func:`app_from_environment`, which rebuilds the config the
``kairos serve`` parent resolved.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from typing import Any

from . import config as config_module
from . import http_server, worker_process
from .admin import Admin, UpstreamProbe
from .background import every
from .bandit_loop import BanditLoop
from .cache_purge import CachePurge
from .config import Config
from .context.signals import parse_signal_hash
from .experimentation import Experimentation, Weights
from .goal_events import GoalEndpoints
from .http_proxy import HttpProxy
from .metrics import Metrics
from .page import PageTransform
from .personalisation import Personalisation
from .rules import RuleLibrary
from .store import Store
from .store.events import PageView, utc_day
from .upstream import Upstream
from .visitor import Visitors
from .visitor_endpoints import VisitorEndpoints
from .websocket_proxy import WebSocketProxy

log = logging.getLogger("kairos")
NO_WEIGHTS = Weights()


class KairosApp:
    def __init__(self, config: Config, transform: PageTransform | None = None, *,
                 owns_process: bool = False) -> None:
        self.config = config
        self.owns_process = owns_process   # a server worker: may tune the process (gc)
        self.transform = transform
        self.metrics = Metrics()
        self.store: Store | None = None
        self.http: HttpProxy | None = None
        self.visitors: Visitors | None = None
        self.results: Any = None   # ResultsEndpoints, built at start-up (it loads scipy)
        self.library: RuleLibrary | None = None
        self.experiments: Experimentation | None = None
        self.bandits: BanditLoop | None = None
        self._published: Weights = NO_WEIGHTS   # the bandits' weights, as last handed out
        self.tasks: list[asyncio.Task[None]] = []
        self.websocket = WebSocketProxy(config)
        _, host, port = config.upstream_origin
        self.admin = Admin(config.admin.prefix, self.metrics,
                           UpstreamProbe(host, port, config.upstream.connect_timeout),
                           self._store_status, self._rules_status)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            assert self.http is not None, "lifespan has not run"
            if self.results is not None and self.results.handles(scope["path"]):
                await self.results(scope, receive, send)
                return
            if self.admin.handles(scope["path"]):
                await self.admin(scope, receive, send)
                return
            if await self.http(scope, receive, send):
                self._record()
        elif kind == "websocket":
            await self.websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def _record(self) -> None:
        if self.store is not None:
            self.store.record(PageView(day=utc_day()))

    def _record_event(self, event: Any) -> None:
        if self.store is not None:
            self.store.record(event)

    def _weights(self) -> Weights:
        """The bandits' weights in force (asked on every page view with experiments; a new
        Weights only when the loop has published new ones)."""
        bandits = self.bandits
        if bandits is None:
            return NO_WEIGHTS
        last = self._published
        if last.weights is not bandits.weights or last.periods is not bandits.periods:
            last = self._published = Weights(bandits.weights, bandits.periods)
        return last

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
        prefix = self.config.admin.prefix
        self.visitors = Visitors.open(self.config)
        if self.transform is None:
            library = self.library = RuleLibrary.load(self.config.rules.folder)
            self.transform = Personalisation(library, f"{prefix}goals.js", f"{prefix}event")
            self.tasks.append(asyncio.create_task(library.watch(1.0)))
            settings = self.config.experiments
            self.experiments = Experimentation(
                lambda: library.ruleset, self.visitors.secrets, holdout=settings.holdout,
                beacon_ttl=settings.beacon_ttl_seconds, weights=self._weights)
        upstream = Upstream(self.config.upstream)
        self.http = HttpProxy(self.config, upstream, self.metrics, self.transform,
                              self.visitors, self.experiments, self._record_event)
        endpoints = VisitorEndpoints(self.visitors, self.http.trusted, prefix,
                                     self.transform, self.experiments)
        self.admin.routes.update(endpoints.routes)
        if self.experiments is not None:
            goals = GoalEndpoints(self.visitors, self.experiments, self.metrics,
                                  self._record_event, self.http.trusted)
            self.admin.routes.update(goals.routes)
        self.store = await Store.open(self.config.store, self.config.store.url)
        if self.experiments is not None:
            experiments = self.experiments
            self.bandits = BanditLoop(
                self.store, lambda: {i: d.experiment for i, d in
                                     experiments.definitions.items()},
                interval=self.config.experiments.bandit_interval)
            self.tasks.append(asyncio.create_task(self.bandits.run()))
        self.tasks.append(asyncio.create_task(self._refresh_signals()))
        if self.http.cache is not None:
            purge = CachePurge(self.http.cache, self.store, self.config.admin.token)
            self.admin.routes.update(purge.routes)
            self.tasks.append(asyncio.create_task(purge.follow()))
        self.results = _LazyResults(self.config.admin.prefix, self._results_endpoints)
        self.metrics.gauges["events_buffered"] = lambda: self.store.stats().buffered  # type: ignore[union-attr]
        self.metrics.gauges["events_dropped_total"] = lambda: self.store.stats().dropped  # type: ignore[union-attr]
        self.metrics.gauges["events_flushed_total"] = lambda: self.store.stats().flushed  # type: ignore[union-attr]
        if self.owns_process:
            worker_process.freeze_startup_objects()
            self.metrics.gauges["gc_frozen_objects"] = gc.get_freeze_count

    def _results_endpoints(self) -> Any:
        from .results.endpoints import ResultsEndpoints  # scipy: only once results are read
        return ResultsEndpoints(self.store, self._experiment_definitions,
                                self.config.admin.token, self.config.admin.prefix)

    def _experiment_definitions(self) -> dict[str, Any]:
        if self.experiments is not None:   # the running rule set: hot-reloaded, validated
            return {i: d.experiment for i, d in self.experiments.definitions.items()}
        from .results.definitions import load_definitions
        try:
            return load_definitions(self.config.rules.folder)
        except ValueError as exc:
            log.warning("experiment definitions not loaded: %s", exc)
            return {}

    async def _refresh_signals(self) -> None:
        """Keep a local copy of the outside signals; the request path only reads the copy."""
        assert self.store is not None and self.visitors is not None
        store, visitors = self.store, self.visitors

        async def refresh() -> None:
            visitors.signals = parse_signal_hash(await store.read_signals(), time.time())

        await every(self.config.store.signals_interval, refresh, "signals refresh", log)

    async def shutdown(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:   # bounded: a background task must never hold up a shutdown
            _, pending = await asyncio.wait(self.tasks, timeout=2.0)
            for task in pending:
                log.warning("background task %s did not stop within 2 s", task.get_coro())
        if self.visitors is not None:
            self.visitors.close()
        if self.store is not None:
            await self.store.close()
        if self.http is not None:
            if self.http.revalidator is not None:
                await self.http.revalidator.close()
            for preparer in (self.http.preparer, self.http.repeated_preparer):
                if preparer is not None:
                    await preparer.close()
            self.http.preparing.shutdown(wait=False, cancel_futures=True)
            await self.http.upstream.aclose()

    def _rules_status(self) -> dict[str, Any]:
        return self.library.status() if self.library is not None else {"state": "not loaded"}

    def _store_status(self) -> dict[str, Any]:
        if self.store is None:
            return {"state": "starting"}
        stats = self.store.stats()
        return {"state": stats.state, "buffered": stats.buffered, "dropped": stats.dropped,
                "flushed": stats.flushed, "flush_errors": stats.flush_errors,
                "last_error": stats.last_error}


class _LazyResults:
    """The results pages, built on their first request: they load scipy and numpy (about
    70 MB per worker), which a proxy that nobody asks for results never needs."""

    def __init__(self, prefix: str, build: Any) -> None:
        self.base = f"{prefix}results"
        self._build = build
        self._endpoints: Any = None

    def handles(self, path: str) -> bool:   # the same paths as ResultsEndpoints.handles
        rest = path[len(self.base):] if path.startswith(self.base) else None
        return rest is not None and (rest in ("", ".json", ".csv") or rest.startswith("/"))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._endpoints is None:   # importing scipy takes ~1 s: not on the event loop
            self._endpoints = await asyncio.to_thread(self._build)
        await self._endpoints(scope, receive, send)


def create_app(config: Config, transform: PageTransform | None = None) -> KairosApp:
    return KairosApp(config, transform)


def app_from_environment() -> KairosApp:
    """uvicorn factory for worker processes (``--factory``)."""
    resolved = os.environ.get(config_module.RESOLVED_ENV)
    config = config_module.from_json(resolved) if resolved else config_module.load()
    worker_process.tune_allocator()
    http_server.ServedProtocol.head_timeout = config.server.header_timeout
    return KairosApp(config, owns_process=True)
