"""A response's head and body leave in one write (proxy.http_server.HeadWithBody).

The wrapper is tested against a transport that records what it is asked to do (the order
of writes is the whole point), and end to end through a real uvicorn server on loopback,
where a client must still receive every kind of response whole: with a body, without one
(HEAD, 304), and a head whose body comes much later (streaming)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from proxy.http_server import HeadWithBody, protocol_with


class Recorded:
    """A transport that keeps the calls made on it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, lines: Any) -> None:
        self.calls.append(("writelines", tuple(lines)))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", None))

    def get_extra_info(self, name: str) -> str:
        self.calls.append(("get_extra_info", name))
        return "info"


async def _the_head_waits_for_the_body_and_both_go_in_one_call() -> None:
    recorded = Recorded()
    transport = HeadWithBody(recorded, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HEAD")
    assert recorded.calls == []
    transport.write(b"BODY")
    transport.write(b"MORE")
    await asyncio.sleep(0)
    assert recorded.calls == [("writelines", (b"HEAD", b"BODY")), ("write", b"MORE")]


async def _a_head_without_a_body_behind_it_goes_out_on_the_next_loop_iteration() -> None:
    recorded = Recorded()
    transport = HeadWithBody(recorded, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HEAD")
    await asyncio.sleep(0)
    assert recorded.calls == [("write", b"HEAD")]
    transport.write(b"BODY")   # a body that came later goes out on its own
    assert recorded.calls[-1] == ("write", b"BODY")


async def _a_close_sends_the_held_head_first() -> None:
    recorded = Recorded()
    transport = HeadWithBody(recorded, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HEAD")
    transport.close()
    await asyncio.sleep(0)
    assert recorded.calls == [("write", b"HEAD"), ("close", None)]


async def _any_other_transport_call_sends_the_held_head_first() -> None:
    recorded = Recorded()
    transport = HeadWithBody(recorded, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HEAD")
    assert transport.get_extra_info("peername") == "info"
    assert recorded.calls == [("write", b"HEAD"), ("get_extra_info", "peername")]


async def _a_held_head_is_dropped_when_the_connection_is_already_closing() -> None:
    recorded = Recorded()
    transport = HeadWithBody(recorded, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HEAD")
    recorded.closing = True
    await asyncio.sleep(0)
    assert recorded.calls == []


BODY = b"x" * 99_996 + b"end!"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/304":
        await send({"type": "http.response.start", "status": 304, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/late":   # the head, then the body a while later (e.g. a slow origin)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"4")]})
        await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": b"late"})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


def served(scenario: Callable[[int], Awaitable[None]]) -> None:
    """Run ``scenario(port)`` against the app on a real uvicorn server with our protocol."""
    async def main() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, http=protocol_with(5.0),
                                               log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            for _ in range(500):
                if server.started:
                    break
                await asyncio.sleep(0.01)
            await scenario(sock.getsockname()[1])
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)
    asyncio.run(main())


async def exchange(port: int, request: bytes, until: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    received = b""
    try:
        while not received.endswith(until):
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            received += chunk
    finally:
        writer.close()
    return received


async def _a_served_response_arrives_whole(server: int) -> None:
    got = await exchange(server, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", BODY[-10:])
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == BODY


async def _head_and_304_responses_arrive_without_waiting_for_a_body(server: int) -> None:
    got = await exchange(server, b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n", b"\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200") and b"content-length: 100000" in got
    got = await exchange(server, b"GET /304 HTTP/1.1\r\nhost: x\r\n\r\n", b"\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 304")


async def _a_head_whose_body_comes_later_is_sent_at_once(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"GET /late HTTP/1.1\r\nhost: x\r\n\r\n")
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.25)  # before the body
        assert head.startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"late"
    finally:
        writer.close()


def test_the_head_waits_for_the_body_and_both_go_in_one_call() -> None:
    asyncio.run(_the_head_waits_for_the_body_and_both_go_in_one_call())


def test_a_head_without_a_body_behind_it_goes_out_on_the_next_loop_iteration() -> None:
    asyncio.run(_a_head_without_a_body_behind_it_goes_out_on_the_next_loop_iteration())


def test_a_close_sends_the_held_head_first() -> None:
    asyncio.run(_a_close_sends_the_held_head_first())


def test_any_other_transport_call_sends_the_held_head_first() -> None:
    asyncio.run(_any_other_transport_call_sends_the_held_head_first())


def test_a_held_head_is_dropped_when_the_connection_is_already_closing() -> None:
    asyncio.run(_a_held_head_is_dropped_when_the_connection_is_already_closing())


def test_a_served_response_arrives_whole() -> None:
    served(_a_served_response_arrives_whole)


def test_head_and_304_responses_arrive_without_waiting_for_a_body() -> None:
    served(_head_and_304_responses_arrive_without_waiting_for_a_body)


def test_a_head_whose_body_comes_later_is_sent_at_once() -> None:
    served(_a_head_whose_body_comes_later_is_sent_at_once)
