"""Headless Chromium for the tests, driven over the DevTools protocol (CDP).

Chromium is started with ``--remote-debugging-port=0``; the port is read from its "DevTools
listening on ws://..." line and the protocol spoken over ``websockets``. A missing Chromium is
a failure, not a skip: a page meant for people is only known to work when a browser has
rendered it (``make test`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    path = os.environ.get("KAIROS_CHROMIUM") or shutil.which("chromium") or \
        shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed, and the results page is tested in a real "
                    "browser: install Debian's chromium (`make test` runs "
                    "scripts/system-packages.sh chromium) or set KAIROS_CHROMIUM to its path",
                    pytrace=False)
    return path


@pytest.fixture(scope="module")
def devtools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A headless Chromium for this module; yields its browser DevTools WebSocket URL."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen([chromium_path(), *FLAGS, f"--user-data-dir={profile}",
                             "--remote-debugging-port=0", "about:blank"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    stderr = proc.stderr
    assert stderr is not None

    def read() -> None:  # keeps reading, so Chromium never blocks writing to a full pipe
        for line in stderr:
            lines.put(line)

    drain = threading.Thread(target=read, daemon=True)
    drain.start()
    try:
        yield _listening(lines, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        drain.join(5)
        stderr.close()


def _listening(lines: queue.Queue[str], proc: subprocess.Popen[str]) -> str:
    deadline, seen = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if line.startswith("DevTools listening on "):
            return line.split(" on ", 1)[1].strip()
    pytest.fail(f"Chromium did not open its DevTools port within 30 s (exit "
                f"{proc.poll()}); its output:\n{''.join(seen[-20:])}", pytrace=False)


class Page:
    """One tab, in its own browser context (its own cookies), spoken to over CDP."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws, self.ids, self.session = ws, 0, ""
        self.events: list[dict[str, Any]] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        message: dict[str, Any] = {"id": self.ids, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        await self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == self.ids:
                if "error" in reply:
                    raise AssertionError(f"CDP {method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    async def open(self) -> None:
        context = (await self.send("Target.createBrowserContext"))["browserContextId"]
        target = (await self.send("Target.createTarget", url="about:blank",
                                  browserContextId=context))["targetId"]
        self.session = (await self.send("Target.attachToTarget", targetId=target,
                                        flatten=True))["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            await self.send(f"{domain}.enable")
        await self.send("Emulation.setDeviceMetricsOverride", width=390, height=844,
                        deviceScaleFactor=2, mobile=True)  # a phone

    async def goto(self, url: str) -> None:
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        await self.send("Page.navigate", url=url)
        async with asyncio.timeout(15):
            while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
                self.events.append(json.loads(await self.ws.recv()))

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, and browser log errors."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params["exceptionDetails"])[:300])
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning"):
                out.append(json.dumps(params["args"])[:300])
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                out.append(f"{params['entry']['source']}: {params['entry']['text']}")
        return out
