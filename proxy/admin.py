"""Kairos's own endpoints under the admin prefix (default ``/_kairos/``).

``health`` and ``metrics`` are for load balancers and Prometheus; they say how the store and
the upstream are doing, never awaiting Redis (the store's state is kept fresh in the
background).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .metrics import Metrics
from .responses import respond


@dataclass
class UpstreamProbe:
    """Is the origin reachable? A TCP connect, at most once every few seconds."""

    host: str
    port: int
    timeout: float
    every: float = 5.0
    state: str = "unknown"
    detail: str = ""
    checked_at: float = field(default=0.0)

    async def check(self) -> None:
        if time.monotonic() - self.checked_at < self.every:
            return
        self.checked_at = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                _, writer = await asyncio.open_connection(self.host, self.port)
            writer.close()
            self.state, self.detail = "ok", ""
        except (OSError, TimeoutError) as exc:
            self.state, self.detail = "down", f"{type(exc).__name__}: {exc}"


class Admin:
    def __init__(self, prefix: str, metrics: Metrics, probe: UpstreamProbe,
                 store_status: Callable[[], dict[str, Any]],
                 rules_status: Callable[[], dict[str, Any]] = dict) -> None:
        self.prefix = prefix
        self.metrics = metrics
        self.probe = probe
        self.store_status = store_status
        self.rules_status = rules_status
        self.routes = {"health": self.health, "metrics": self.prometheus}

    def handles(self, path: str) -> bool:
        return path.startswith(self.prefix)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        name = scope["path"][len(self.prefix):].strip("/")
        handler = self.routes.get(name)
        if handler is None:
            await respond(send, 404, b"text/plain; charset=utf-8",
                           f"unknown Kairos endpoint; available: {', '.join(self.routes)}\n"
                           .encode())
            return
        await handler(scope, receive, send)

    async def health(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.probe.check()
        store = self.store_status()
        healthy = store.get("state") == "ok" and self.probe.state != "down"
        body = {
            "status": "ok" if healthy else "degraded",
            "store": store,
            "upstream": {"state": self.probe.state, "detail": self.probe.detail},
            # A broken rule file degrades nothing: its last good version stays in force.
            "rules": self.rules_status(),
        }
        # 200 even when degraded: pages are still served; a 503 would make a load balancer
        # take every proxy out together when the shared Redis blinks.
        await respond(send, 200, b"application/json",
                       json.dumps(body, indent=2).encode() + b"\n")

    async def prometheus(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await respond(send, 200, b"text/plain; version=0.0.4; charset=utf-8",
                       self.metrics.render().encode())
