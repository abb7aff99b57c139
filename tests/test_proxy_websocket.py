"""P27: WebSocket upgrades are relayed; other Upgrade tokens are not."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .conftest import RunningKairos, raw_request, start_kairos, status_of


async def _origin_handler(ws: ServerConnection) -> None:
    request = ws.request
    assert request is not None
    if request.path.startswith("/ws/close"):
        await ws.close(code=4321, reason="origin says bye")
        return
    await ws.send(json.dumps({
        "path": request.path,
        "cookie": request.headers.get("Cookie"),
        "subprotocol": ws.subprotocol,
        "forwarded_for": request.headers.get("X-Forwarded-For"),
        "forwarded_proto": request.headers.get_all("X-Forwarded-Proto"),
        "keys": len(request.headers.get_all("Sec-WebSocket-Key")),
    }))
    async for message in ws:
        await ws.send(message)


def _process_request(connection: ServerConnection, request: object) -> object:
    if getattr(request, "path", "").startswith("/ws/forbidden"):
        return connection.respond(403, "no\n")
    return None


def _origin_and_kairos(valkey: object, **overrides: object) -> Iterator[RunningKairos]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def main() -> None:
        server = await serve(_origin_handler, "127.0.0.1", 0, subprotocols=["chat.v2", "chat.v1"],
                             process_request=_process_request)
        holder["server"] = server
        holder["port"] = server.sockets[0].getsockname()[1] if hasattr(server, "sockets") else \
            next(iter(server.server.sockets)).getsockname()[1]
        ready.set()
        await server.serve_forever()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    ready.wait(5)
    running = start_kairos(f"http://127.0.0.1:{holder['port']}",
                           valkey.connection_url, **overrides)  # type: ignore[attr-defined]
    yield running
    running.stop()
    loop.call_soon_threadsafe(holder["server"].close)  # type: ignore[attr-defined]
    thread.join(5)
    loop.close()


@pytest.fixture(scope="module")
def ws_kairos(valkey: object) -> Iterator[RunningKairos]:
    yield from _origin_and_kairos(valkey)


@pytest.fixture(scope="module")
def ws_kairos_behind_proxy(valkey: object) -> Iterator[RunningKairos]:
    yield from _origin_and_kairos(valkey, **{"server.trusted_proxies": ["127.0.0.1/32"]})


def test_p27_websocket_relays_path_query_subprotocol_cookies(ws_kairos: RunningKairos) -> None:
    async def scenario() -> tuple[dict, str, str | None]:
        async with connect(f"ws://127.0.0.1:{ws_kairos.port}/ws/chat?room=7",
                           subprotocols=["chat.v1"],  # type: ignore[list-item]
                           additional_headers={"Cookie": "session=abc"}) as ws:
            hello = json.loads(await ws.recv())
            await ws.send("ping ✓")
            echoed = await ws.recv()
            return hello, echoed, ws.subprotocol  # type: ignore[return-value]

    hello, echoed, subprotocol = asyncio.run(scenario())
    assert hello["path"] == "/ws/chat?room=7"
    assert hello["cookie"] == "session=abc"
    assert hello["subprotocol"] == "chat.v1"
    assert hello["forwarded_for"] == "127.0.0.1"
    assert hello["keys"] == 1   # the visitor's handshake fields are not sent on as well
    assert subprotocol == "chat.v1"
    assert echoed == "ping ✓"


def test_p27_close_code_from_origin_is_relayed(ws_kairos: RunningKairos) -> None:
    async def scenario() -> tuple[int | None, str | None]:
        async with connect(f"ws://127.0.0.1:{ws_kairos.port}/ws/close",
                           subprotocols=["chat.v2"]) as ws:  # type: ignore[list-item]
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason

    code, reason = asyncio.run(scenario())
    assert code == 4321
    assert reason == "origin says bye"


def test_p27_refused_upstream_handshake_refuses_the_visitor(ws_kairos: RunningKairos) -> None:
    async def scenario() -> None:
        async with connect(f"ws://127.0.0.1:{ws_kairos.port}/ws/forbidden"):
            pass

    with pytest.raises(InvalidStatus) as info:
        asyncio.run(scenario())
    assert info.value.response.status_code == 403   # the origin's own status, relayed


def test_p27_h2c_upgrade_is_not_performed(ws_kairos: RunningKairos) -> None:
    # The origin here is a WebSocket server; a plain GET gets its 426/4xx, never a 101.
    response = raw_request(ws_kairos.port, b"GET /plain HTTP/1.1\r\nHost: shop.test\r\n"
                                           b"Connection: Upgrade, HTTP2-Settings\r\n"
                                           b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
                                           b"\r\n")
    assert status_of(response) != 101


def test_p27_origin_refusal_status_is_relayed_not_replaced(ws_kairos: RunningKairos) -> None:
    async def scenario() -> None:   # no subprotocol offered: this origin answers 400
        async with connect(f"ws://127.0.0.1:{ws_kairos.port}/ws/chat"):
            pass

    with pytest.raises(InvalidStatus) as info:
        asyncio.run(scenario())
    assert info.value.response.status_code == 400


def test_p27_a_trusted_proxys_forwarding_fields_count_whatever_their_case(
        ws_kairos_behind_proxy: RunningKairos) -> None:
    """A load balancer's ``X-Forwarded-*`` fields, spelled as clients spell them, are read
    on the WebSocket path too (the handshake's names reach it lower-cased by uvicorn's
    websockets-sansio protocol, which ``kairos serve`` runs), and the visitor's handshake
    fields are not sent on beside the ones the upstream client writes."""
    async def scenario() -> dict:
        async with connect(f"ws://127.0.0.1:{ws_kairos_behind_proxy.port}/ws/chat",
                           subprotocols=["chat.v1"],  # type: ignore[list-item]
                           additional_headers={"X-Forwarded-For": "203.0.113.9",
                                               "X-Forwarded-Proto": "https"}) as ws:
            return json.loads(await ws.recv())  # type: ignore[no-any-return]

    hello = asyncio.run(scenario())
    assert hello["forwarded_for"] == "203.0.113.9, 127.0.0.1"
    assert hello["forwarded_proto"] == ["https"]   # one, from the trusted proxy
    assert hello["keys"] == 1
