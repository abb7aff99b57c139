"""The results pages in a real headless Chromium, driven over the DevTools protocol.

The endpoints run in real uvicorn over a real Valkey holding simulated history (the demo's
own generator). Chromium is started with ``--remote-debugging-port=0``; the port is read
from its "DevTools listening on ws://..." line and the protocol spoken over ``websockets``.
A missing Chromium is a failure, not a skip: the page is only known to work when a browser
has rendered it (``make test`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect

from experiments.model import parse_experiment
from proxy.config import StoreConfig
from proxy.responses import respond
from proxy.results.demo import seed_demo_history
from proxy.results.endpoints import ResultsEndpoints
from proxy.store import Store
from tests.browser import Page, chromium_path, devtools
from tests.store_fixtures import embedded_valkey, store_url

__all__ = ["devtools", "embedded_valkey", "store_url"]  # fixtures, found by pytest

pytestmark = pytest.mark.timeout(60)
TOKEN = "browser-test-token"
EXPERIMENTS = {e.id: e for e in (
    parse_experiment({"id": "hero", "arms": [{"id": "control", "weight": 0.5},
                                             {"id": "B", "weight": 0.5}],
                      "goals": [{"id": "checkout", "kind": "page", "url": "/done",
                                 "primary": True},
                                {"id": "revenue", "kind": "revenue", "event": "buy"}]}, "t"),
    parse_experiment({"id": "banner", "allocation": "bandit",
                      "arms": [{"id": "control", "weight": 0.34},
                               {"id": "green", "weight": 0.33}, {"id": "red", "weight": 0.33}],
                      "goals": [{"id": "click", "kind": "click", "selector": "a",
                                 "primary": True}]}, "t"))}


class ResultsApp:
    """The endpoints behind uvicorn; the Store is opened in the server's own loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.endpoints: ResultsEndpoints | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            store = await Store.open(StoreConfig(), self.url)
            await seed_demo_history(store, list(EXPERIMENTS.values()),
                                    today=date(2026, 11, 22), days=7, visitors_per_day=400)
            self.endpoints = ResultsEndpoints(
                store, lambda: EXPERIMENTS, TOKEN, "/_kairos/",
                clock=lambda: datetime(2026, 11, 22, 12, tzinfo=UTC))
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await store.close()
            await send({"type": "lifespan.shutdown.complete"})
        elif self.endpoints is not None and self.endpoints.handles(scope["path"]):
            await self.endpoints(scope, receive, send)
        else:
            await respond(send, 404, b"text/plain", b"not found\n")


@pytest.fixture
def site(store_url: str) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(ResultsApp(store_url), lifespan="on",
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "results app did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


FACTS = """JSON.stringify({
  href: location.href, cookie: document.cookie, title: document.title,
  status: performance.getEntriesByType('navigation')[0].responseStatus,
  heading: document.querySelector('h1') && document.querySelector('h1').textContent,
  cells: [...document.querySelectorAll('td:first-child')].map(td => td.textContent),
  charts: [...document.querySelectorAll('svg.chart')].map(svg =>
    [...svg.querySelectorAll('g.series')].map(g => [g.dataset.series,
      g.querySelectorAll('path.line').length, g.querySelectorAll('path.band').length])),
  chartWidth: Math.max(0, ...[...document.querySelectorAll('svg.chart')].map(
    s => s.getBoundingClientRect().width)),
  overflow: document.documentElement.scrollWidth - window.innerWidth,
  experiments: [...document.querySelectorAll('[data-experiment]')].map(e => e.dataset.experiment),
  decision: document.querySelector('.decision') && document.querySelector('.decision').textContent,
  scripts: document.scripts.length,
})"""


async def facts(page: Page) -> dict[str, Any]:
    return json.loads(await page.evaluate(FACTS))


def test_results_page_renders_arms_and_charts_without_console_errors(
        devtools: str, site: str) -> None:
    async def body() -> None:
        async with connect(devtools, max_size=None) as ws:
            page = Page(ws)
            await page.open()
            await page.goto(f"{site}/_kairos/results/banner?token={TOKEN}")
            seen = await facts(page)
            assert seen["status"] == 200 and seen["heading"].startswith("banner")
            assert seen["href"] == f"{site}/_kairos/results/banner"  # token left the URL
            assert "kairos_admin" not in seen["cookie"]               # HttpOnly
            assert seen["cells"][:3] == ["control", "green", "red"]
            rates, share = seen["charts"]
            assert [s[0] for s in rates] == ["control", "green", "red"]
            assert all(lines == 1 and bands == 1 for _, lines, bands in rates)
            assert [s[0] for s in share] == ["control", "green", "red", "control weight",
                                             "green weight", "red weight"]
            assert 300 < seen["chartWidth"] <= 390 and seen["overflow"] <= 0  # fits a phone
            assert seen["scripts"] == 0 and seen["decision"]
            await page.goto(f"{site}/_kairos/results")  # the cookie carries the session
            listing = await facts(page)
            assert listing["status"] == 200 and listing["experiments"] == ["banner", "hero"]
            assert page.problems() == []

    asyncio.run(body())


def test_without_a_token_the_browser_gets_the_401_page(devtools: str, site: str) -> None:
    async def body() -> None:
        async with connect(devtools, max_size=None) as ws:
            page = Page(ws)
            await page.open()
            await page.goto(f"{site}/_kairos/results/banner")
            seen = await facts(page)
            assert seen["status"] == 401 and seen["heading"] == "Admin token needed"
            assert seen["charts"] == [] and seen["overflow"] <= 0
            text = await page.evaluate("document.body.innerText")
            assert "?token=" in text and "Authorization: Bearer" in text
            # The browser reports the 401 itself; nothing else may appear.
            assert all("status of 401" in p for p in page.problems()), page.problems()

    asyncio.run(body())


def test_chromium_path_is_explicit_about_what_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.delenv("KAIROS_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="Chromium is not installed"):
        chromium_path()
