"""Relay WebSocket connections to the origin (P27).

The upstream handshake happens first; only when the origin accepts do we accept the visitor,
with the subprotocol the origin chose. Path, query, cookies and other end-to-end headers go
along; messages are relayed both ways until one side closes, and its close code is passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from . import client_ip
from .config import Config
from .headers import HOP_BY_HOP, ForwardingFacts, upstream_request_headers

log = logging.getLogger("kairos.websocket")

# Handshake fields the websockets client writes itself.
_HANDSHAKE = frozenset({b"sec-websocket-key", b"sec-websocket-version",
                        b"sec-websocket-extensions", b"sec-websocket-protocol", b"host"})


# Close codes that report what happened to the origin's connection and that no close frame
# may carry (RFC 6455 7.4.1); the websockets library refuses to send them.
_NO_CLOSE_FRAME = frozenset({1006, 1015})   # closed without a close frame; TLS failed
_SAYABLE = {1005: 1000}   # a close frame without a code: ASGI needs one, and 1000 is its meaning


class WebSocketProxy:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.trusted = client_ip.TrustedNetworks(config.server.trusted_proxies)
        base = config.upstream.url.rstrip("/")
        self.base = "ws" + base[len("http"):]   # http -> ws, https -> wss

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        try:
            upstream = await self._connect(scope)
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            log.info("websocket upstream refused %s: %s", scope["path"], exc)
            status = exc.response.status_code if isinstance(exc, InvalidStatus) else 502
            await _deny(scope, send, status)
            return
        async with upstream:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            await _relay(upstream, receive, send)

    async def _connect(self, scope: dict[str, Any]) -> ClientConnection:
        headers = scope["headers"]
        peer = (scope.get("client") or ("0.0.0.0", 0))[0]
        client = client_ip.resolve(peer, "https" if scope.get("scheme") == "wss" else "http",
                                   headers, self.trusted)
        host = next((v for n, v in headers if n == b"host"), b"")
        facts = ForwardingFacts(peer_ip=peer, peer_trusted=client.peer_trusted,
                                scheme=client.scheme, host=client.host or host,
                                via=f"1.1 {self.config.server.via_name}".encode())
        forwarded = [
            (n.decode("latin-1"), v.decode("latin-1"))
            for n, v in upstream_request_headers(headers, facts)
            if n not in _HANDSHAKE and n not in HOP_BY_HOP
        ]
        target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if qs := scope.get("query_string"):
            target += "?" + qs.decode("latin-1")
        return await connect(
            self.base + target,
            subprotocols=scope.get("subprotocols") or None,
            additional_headers=forwarded,
            user_agent_header=None,
            proxy=None,
            compression=None,
            open_timeout=self.config.upstream.connect_timeout,
            max_size=None,
            ping_interval=None,
        )


async def _deny(scope: dict[str, Any], send: Any, status: int) -> None:
    """Refuse the visitor's handshake with the origin's status where the server allows it."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = b"The site refused the WebSocket connection.\n"
        await send({"type": "websocket.http.response.start", "status": status, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1011 if status >= 500 else 1008})


async def _relay(upstream: ClientConnection, receive: Any, send: Any) -> None:
    async def visitor_to_origin() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(code=message.get("code", 1000))
                return
            data = message.get("bytes")
            await upstream.send(data if data is not None else message.get("text", ""))

    async def origin_to_visitor() -> None:
        try:
            async for data in upstream:
                key = "bytes" if isinstance(data, bytes) else "text"
                await send({"type": "websocket.send", key: data})
        except ConnectionClosed:
            pass
        code = upstream.close_code or 1000
        if code in _NO_CLOSE_FRAME:
            return   # the origin's connection broke: ours ends the same way (no close frame)
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": _SAYABLE.get(code, code),
                        "reason": upstream.close_reason or ""})

    tasks = [asyncio.create_task(visitor_to_origin()), asyncio.create_task(origin_to_visitor())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
