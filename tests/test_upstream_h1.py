"""Kairos's own HTTP/1.1 client (proxy/upstream_h1.py) against the raw test origin.

The proxy-level suite runs through it with KAIROS_UPSTREAM_CLIENT=h1; these tests pin what
only the client can show: which connection was used, pool limits, idle closes, timeouts,
framing, and what goes on the wire.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from proxy.config import UpstreamConfig
from proxy.errors import BadRequest, UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable
from proxy.upstream import Upstream, UpstreamRequest
from proxy.upstream_h1 import H1Upstream

from .upstream_server import Upstream as Origin


def run(origin: Origin, test: Callable[[H1Upstream], Awaitable[Any]], **config: Any) -> Any:
    """Run ``test`` with a fresh client in a fresh event loop, closing the client after."""
    async def main() -> Any:
        client = Upstream(UpstreamConfig(url=origin.url, client="h1", **config))
        assert isinstance(client, H1Upstream)
        try:
            return await test(client)
        finally:
            await client.aclose()
    return asyncio.run(main())


async def fetch(client: H1Upstream, target: str, method: str = "GET",
                headers: list[tuple[bytes, bytes]] | None = None,
                body: AsyncIterator[bytes] | None = None,
                length: int | None = None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    response = await client.send(UpstreamRequest(method, target.encode(), headers or [], body,
                                                 length))
    try:
        data = b"".join([chunk async for chunk in response.chunks()])
    finally:
        await response.aclose()
    return response.status, response.headers, data


async def stream(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def received(origin: Origin, target: str) -> list:
    return [r for r in origin.received if r.target == target]


# -- connections ------------------------------------------------------------------------------

def test_keep_alive_reuses_one_connection(upstream: Origin) -> None:
    async def test(client: H1Upstream) -> list[bytes]:
        return [(await fetch(client, "/peer"))[2] for _ in range(3)]
    ports = run(upstream, test)
    assert len(set(ports)) == 1


def test_connection_is_not_reused_after_head_or_an_aborted_body(upstream: Origin) -> None:
    async def test(client: H1Upstream) -> tuple[bytes, ...]:
        status, headers, body = await fetch(client, "/peer", method="HEAD")
        assert (status, body) == (200, b"")
        assert (b"content-length", b"5") in headers or any(n == b"content-length"
                                                            for n, _ in headers)
        after_head = (await fetch(client, "/peer"))[2]
        response = await client.send(UpstreamRequest("GET", b"/big", [], None))
        await response.aclose()                 # 5 MB left unread: never reused
        after_abort = (await fetch(client, "/peer"))[2]
        return after_head, after_abort, (await fetch(client, "/peer"))[2]
    after_head, after_abort, again = run(upstream, test)
    assert after_head != after_abort
    assert after_abort == again


def test_idle_connection_closed_by_the_origin_is_not_used(upstream: Origin) -> None:
    async def test(client: H1Upstream) -> int:
        await fetch(client, "/close-idle?s=0")
        await asyncio.sleep(0.2)                # the close has arrived
        status, _, _ = await fetch(client, "/echo?after-idle-close")
        return status
    assert run(upstream, test) == 200


def test_idempotent_request_on_a_connection_closing_under_it_is_sent_again(
        upstream: Origin) -> None:
    async def test(client: H1Upstream) -> int:
        await fetch(client, "/close-idle?s=0.3")
        status, _, _ = await fetch(client, "/echo?raced-get")   # sent, never read, closed
        return status
    assert run(upstream, test) == 200
    assert len(received(upstream, "/echo?raced-get")) == 1


def test_non_idempotent_request_is_never_sent_again(upstream: Origin) -> None:
    async def test(client: H1Upstream) -> None:
        await fetch(client, "/close-idle?s=0.3")
        with pytest.raises(UpstreamProtocolError, match="before responding"):
            await fetch(client, "/echo?raced-post", method="POST")
    run(upstream, test)
    assert received(upstream, "/echo?raced-post") == []   # one try, which the origin dropped


def test_idle_connections_expire(upstream: Origin) -> None:
    async def test(client: H1Upstream) -> tuple[bytes, bytes]:
        first = (await fetch(client, "/peer"))[2]
        await asyncio.sleep(0.15)
        return first, (await fetch(client, "/peer"))[2]
    first, second = run(upstream, test, keepalive_expiry=0.1)
    assert first != second


def test_pool_exhausted_is_a_pool_timeout(upstream: Origin) -> None:
    async def test(client: H1Upstream) -> float:
        slow = asyncio.create_task(fetch(client, "/slow?s=0.6"))
        await asyncio.sleep(0.05)
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="no free upstream connection"):
            await fetch(client, "/echo?pool")
        waited = time.monotonic() - start
        assert (await slow)[0] == 200
        return waited
    waited = run(upstream, test, max_connections=1, pool_timeout=0.2)
    assert 0.15 < waited < 0.5


def test_a_waiter_gets_the_connection_released_before_its_pool_timeout(upstream: Origin) -> None:
    async def test(client: H1Upstream) -> list[int]:
        results = await asyncio.gather(*(fetch(client, f"/slow?n={i}&s=0.1") for i in range(4)))
        assert client._count == 1
        return [status for status, _, _ in results]
    assert run(upstream, test, max_connections=1, pool_timeout=2) == [200] * 4


def test_refused_connection_is_unavailable() -> None:
    origin = Origin().start()
    origin.stop()                               # nothing listens on that port any more
    async def test(client: H1Upstream) -> None:
        with pytest.raises(UpstreamUnavailable):
            await fetch(client, "/echo")
    run(origin, test)


def test_cancelled_exchange_drops_its_connection(upstream: Origin) -> None:
    async def test(client: H1Upstream) -> tuple[bytes, bytes]:
        before = (await fetch(client, "/peer"))[2]
        task = asyncio.create_task(fetch(client, "/slow?s=0.5"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return before, (await fetch(client, "/peer"))[2]
    before, after = run(upstream, test)
    assert before != after                      # the cancelled one was closed, not pooled


# -- timeouts ---------------------------------------------------------------------------------

def test_headers_deadline(upstream: Origin) -> None:
    async def test(client: H1Upstream) -> float:
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout, match=r"no response headers within 0\.3"):
            await fetch(client, "/slow?s=2")
        return time.monotonic() - start
    assert run(upstream, test, headers_deadline=0.3) < 1


def test_read_timeout_mid_body(upstream: Origin) -> None:
    async def test(client: H1Upstream) -> bytes:
        response = await client.send(UpstreamRequest("GET", b"/stall", [], None))
        got = b""
        with pytest.raises(UpstreamTimeout, match=r"sent nothing for 0\.3"):
            async for chunk in response.chunks():
                got += chunk
        await response.aclose()
        return got
    assert run(upstream, test, read_timeout=0.3) == b"x" * 10


def test_write_timeout_when_the_origin_does_not_read() -> None:
    async def main() -> None:
        async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await asyncio.sleep(5)
            finally:
                writer.close()
        server = await asyncio.start_server(never_read, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = H1Upstream(UpstreamConfig(url=f"http://127.0.0.1:{port}", write_timeout=0.3))
        body = stream(*[b"x" * 1_000_000] * 64)
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="took no request body bytes"):
            await client.send(UpstreamRequest("PUT", b"/", [], body, 64_000_000))
        assert time.monotonic() - start < 3
        await client.aclose()
        server.close()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()                       # the origin's handler: closes its side
        await asyncio.sleep(0.05)
    asyncio.run(main())


# -- what comes back --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/status999", "/dupcl", "/clte", "/badcl", "/garbage"])
def test_framing_and_status_errors_are_protocol_errors(upstream: Origin, path: str) -> None:
    async def test(client: H1Upstream) -> None:
        with pytest.raises(UpstreamProtocolError):
            await fetch(client, path)
    run(upstream, test)


@pytest.mark.parametrize("path", ["/early-hints", "/continue"])
def test_interim_responses_are_skipped(upstream: Origin, path: str) -> None:
    status, _, body = run(upstream, lambda client: fetch(client, path))
    assert status == 200
    assert body in (b"hints", b"ok")


def test_truncated_and_reset_bodies_raise_after_what_arrived(upstream: Origin) -> None:
    async def test(client: H1Upstream) -> None:
        for path in ("/truncated", "/reset"):
            response = await client.send(UpstreamRequest("GET", path.encode(), [], None))
            got = b""
            with pytest.raises(UpstreamProtocolError, match="cut short"):
                async for chunk in response.chunks():
                    got += chunk
            await response.aclose()
            assert got in (b"x" * 100, b"hello"), path
    run(upstream, test)


def test_body_without_length_ends_at_the_close(upstream: Origin) -> None:
    assert run(upstream, lambda client: fetch(client, "/eof-body"))[2] == b"until the close"


def test_response_headers_raw_lowercase_in_order_bad_lines_dropped(upstream: Origin) -> None:
    async def test(client: H1Upstream) -> tuple[list, int]:
        _, headers, _ = await fetch(client, "/cookies")
        response = await client.send(UpstreamRequest("GET", b"/badheader", [], None))
        await response.aclose()
        return headers, response.dropped_headers, response.headers
    headers, dropped, bad = run(upstream, test)
    assert [v for n, v in headers if n == b"set-cookie"] == [
        b"a=1; Path=/", b"b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/", b"c=3; HttpOnly"]
    assert [v for n, v in headers if n == b"x-repeat"] == [b"one", b"two"]
    assert (dropped, [n for n, _ in bad]) == (1, [b"x-good", b"content-length"])


# -- what goes out ----------------------------------------------------------------------------

def test_request_head_is_the_visitors_headers_plus_host_and_framing(upstream: Origin) -> None:
    async def test(client: H1Upstream) -> list[dict]:
        out = []
        for method in ("GET", "DELETE"):
            _, _, body = await fetch(client, "/echo?wire", method=method,
                                     headers=[(b"x-one", b"1"), (b"cookie", b"a=1"),
                                              (b"x-one", b"2")])
            out.append(json.loads(body))
        return out
    get, delete = run(upstream, test)
    assert get["headers"] == [["host", f"127.0.0.1:{upstream.port}"], ["x-one", "1"],
                              ["cookie", "a=1"], ["x-one", "2"]]
    assert delete["headers"][-1] == ["content-length", "0"]    # as aiohttp sends it


def test_request_bodies_with_length_or_chunked(upstream: Origin) -> None:
    async def test(client: H1Upstream) -> tuple[dict, dict]:
        _, _, known = await fetch(client, "/echo?cl", "POST", body=stream(b"ab", b"cd"),
                                  length=4)
        _, _, unknown = await fetch(client, "/echo?te", "POST", body=stream(b"ab", b"", b"cd"))
        return json.loads(known), json.loads(unknown)
    known, unknown = run(upstream, test)
    assert known["body"] == unknown["body"] == "abcd"
    assert ["content-length", "4"] in known["headers"]
    assert ["transfer-encoding", "chunked"] in unknown["headers"]
    assert received(upstream, "/echo?te")[0].header(b"content-length") == []


def test_large_upload_and_download_stream_intact(upstream: Origin) -> None:
    payload = bytes(range(256)) * 4096          # 1 MB

    async def test(client: H1Upstream) -> tuple[int, int]:
        _, _, echoed = await fetch(client, "/echo?upload", "PUT",
                                   body=stream(*[payload[i:i + 65536]
                                                 for i in range(0, len(payload), 65536)]),
                                   length=len(payload))
        response = await client.send(UpstreamRequest("GET", b"/big", [], None))
        size = 0
        async for chunk in response.chunks():
            size += len(chunk)
            await asyncio.sleep(0)              # a slow consumer: reading pauses and resumes
        await response.aclose()
        return len(json.loads(echoed)["body"]), size
    assert run(upstream, test) == (len(payload), 5 * 1024 * 1024)


@pytest.mark.parametrize("value", [b"a\r\nx-injected: 1", b"a\nb", b"a\x00b"])
def test_cr_lf_nul_in_a_value_is_refused(upstream: Origin, value: bytes) -> None:
    async def test(client: H1Upstream) -> None:
        with pytest.raises(BadRequest):
            await fetch(client, "/echo?crlf", headers=[(b"x-a", value)])
    run(upstream, test)
    assert received(upstream, "/echo?crlf") == []


def test_obs_text_utf8_forwarded_as_bytes_other_refused(upstream: Origin) -> None:
    name = "José Müller 東京".encode()

    async def test(client: H1Upstream) -> None:
        await fetch(client, "/echo?utf8", headers=[(b"x-name", name)])
        with pytest.raises(BadRequest, match="not UTF-8"):
            await fetch(client, "/echo?latin1", headers=[(b"x-name", b"Jos\xe9")])
    run(upstream, test)
    assert received(upstream, "/echo?utf8")[0].header(b"x-name") == [name]
    assert received(upstream, "/echo?latin1") == []
