"""F8-F10, P23, P25, P27-P29: an origin that hangs, trickles, resets, goes away, sends a
gzip bomb or a huge page, or drops an event stream or a WebSocket; through the real proxy.

Already pinned in test_proxy_http.py, not repeated here: origin refused at start (502, then
recovery), slow headers (504), truncated bodies streamed and buffered, reset mid-body of a
streamed response, two Content-Lengths and Content-Length with chunked (502); and in
test_proxy_rewrite.py a 50 MB-inflating bomb. This file adds what those do not reach: a
hung origin and one vanishing under pooled connections (through a ``FaultProxy`` between
Kairos and the origin), silence and resets mid-body of a buffered page, a trickle longer
than the headers deadline, a 10 GB bomb, a 50 MB page, and abrupt ends of SSE and
WebSocket streams (from the test origin, with routes added for these tests).

Kairos here runs with short deadlines (0.5 s for headers and for each read) so that the
hangs end quickly; none of the tests measures time, the client timeout only bounds a hang.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .conftest import RunningKairos, start_kairos
from .fault_proxy import FaultProxy
from .upstream_server import ROUTES, Handler, Received, Upstream, _response, page_bytes

DEADLINE = 0.5            # upstream.headers_deadline and upstream.read_timeout of ``edge``
MiB = 1 << 20


# -- Kairos -> FaultProxy -> the test origin --------------------------------------------------

@pytest.fixture(scope="module")
def network(upstream: Upstream) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream.host, upstream.port).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def edge(network: FaultProxy, valkey: Any) -> Iterator[RunningKairos]:
    running = start_kairos(f"http://{network.address}", valkey.connection_url,
                           **{"upstream.headers_deadline": DEADLINE,
                              "upstream.read_timeout": DEADLINE,
                              "upstream.connect_timeout": DEADLINE})
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def healed_network(network: FaultProxy) -> Iterator[None]:
    yield
    network.passthrough()


@pytest.fixture()
def add_route(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Handler], None]:
    """Give the test origin a route for this test only (monkeypatch takes it away after)."""
    return lambda path, handler: monkeypatch.setitem(ROUTES, path, handler)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def rst(transport: asyncio.BaseTransport) -> None:
    """Close with a TCP reset, not a FIN: linger on, timeout 0."""
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


def query(request: Received) -> dict[str, str]:
    return dict(p.split("=", 1) for p in request.target.partition("?")[2].split("&") if "=" in p)


# -- a trickling origin: headers at once, then the body piece by piece ------------------------

TEXT = b"".join(b"line %03d of a plain text body\n" % i for i in range(40))


async def _trickle(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
    """/html-trickle or /text-trickle?pieces=N&gap=S[&cut=reset|stall]: the page in N pieces
    S seconds apart; with ``cut``, after the first piece the connection is reset (RST), or
    goes silent for longer than Kairos's read timeout."""
    q = query(request)
    html = request.target.startswith("/html")
    body = page_bytes() if html else TEXT
    kind = "text/html; charset=utf-8" if html else "text/plain"
    writer.write(_response("200 OK", [("Content-Type", kind), ("Cache-Control", "no-store"),
                                      ("Content-Length", str(len(body)))], content_length=False))
    step = -(-len(body) // int(q["pieces"]))
    for start in range(0, len(body), step):
        writer.write(body[start:start + step])
        await writer.drain()
        await asyncio.sleep(float(q["gap"]))
        if q.get("cut") == "reset":
            rst(writer.transport)
            return False
        if q.get("cut") == "stall":
            await asyncio.sleep(3 * DEADLINE)
            return False
    return True


@pytest.fixture()
def trickle(add_route: Callable[[str, Handler], None]) -> None:
    add_route("/html-trickle", _trickle)
    add_route("/text-trickle", _trickle)


@pytest.mark.usefixtures("trickle")
def test_a_page_trickling_past_the_headers_deadline_arrives_complete_and_personalised(
        edge: RunningKairos) -> None:
    # 10 pieces 0.1 s apart: the body takes twice the headers deadline, no gap reaches the
    # read timeout. Neither deadline may cut it; the buffered page is rewritten whole.
    response = httpx.get(edge.url + "/html-trickle?pieces=10&gap=0.1", timeout=10)
    assert response.status_code == 200
    assert response.text == page_bytes().decode().replace("<h1>Hello</h1>",
                                                          "<h1>Hello, Zoë</h1>")


@pytest.mark.usefixtures("trickle")
def test_a_streamed_body_trickling_past_the_headers_deadline_arrives_complete(
        edge: RunningKairos) -> None:
    response = httpx.get(edge.url + "/text-trickle?pieces=10&gap=0.1", timeout=10)
    assert response.status_code == 200
    assert response.content == TEXT


@pytest.mark.usefixtures("trickle")
@pytest.mark.parametrize("cut,status", [("reset", 502), ("stall", 504)])
def test_a_buffered_page_cut_mid_body_is_a_gateway_error_never_a_short_page(
        edge: RunningKairos, cut: str, status: int) -> None:
    """P25: reset (RST) or silence after part of the page: 502 or 504, not 200 with half."""
    response = httpx.get(edge.url + f"/html-trickle?pieces=4&gap=0.05&cut={cut}", timeout=10)
    assert response.status_code == status
    assert "Hello" not in response.text


@pytest.mark.usefixtures("trickle")
def test_a_streamed_body_that_goes_silent_mid_body_ends_visibly_incomplete(
        edge: RunningKairos) -> None:
    """The status is already sent when the origin stops: after the read timeout the visitor
    must see a broken body, not a clean end and not a hang. (A reset mid-body of a streamed
    response: test_proxy_http.py.)"""
    with pytest.raises(httpx.RemoteProtocolError), \
            httpx.stream("GET", edge.url + "/text-trickle?pieces=4&gap=0.05&cut=stall",
                         timeout=10) as response:
        assert response.status_code == 200
        response.read()


# -- an origin that hangs or goes away ----------------------------------------------------------

def test_a_hung_origin_gives_504_and_kairos_closes_the_hung_connection(
        edge: RunningKairos, network: FaultProxy) -> None:
    """F10: the origin accepts and never answers. 504, and no socket left open behind it."""
    network.reset()        # drop Kairos's pooled connections: the next one is a new connect
    wait_until(lambda: network.open_connections == 0, "the pooled connections are gone")
    network.blackhole()
    with ThreadPoolExecutor(1) as pool:
        got = pool.submit(httpx.get, edge.url + "/echo?hung", timeout=10)
        wait_until(lambda: network.open_connections == 1 or got.done(),
                   "Kairos connected to the hung origin")
        assert network.open_connections == 1
        response = got.result(10)
    assert response.status_code == 504
    assert "Traceback" not in response.text
    wait_until(lambda: network.open_connections == 0, "Kairos closed the hung connection")
    assert edge.app.metrics.in_flight == 0
    network.passthrough()
    assert httpx.get(edge.url + "/echo?after-hang").status_code == 200


def test_origin_vanishing_under_pooled_connections_gives_502_then_recovers(
        edge: RunningKairos, network: FaultProxy) -> None:
    """F10: keep-alive connections are in Kairos's pool when the origin's host goes away
    (connections reset, nothing listening). The next request must not hang or 500."""
    for _ in range(3):
        assert httpx.get(edge.url + "/echo?warm").status_code == 200
    network.refuse()
    down = httpx.get(edge.url + "/echo?gone", timeout=10)
    assert down.status_code == 502
    assert "Traceback" not in down.text
    network.passthrough()
    assert httpx.get(edge.url + "/echo?back").status_code == 200


# -- memory: a 10 GB gzip bomb and a 50 MB page ---------------------------------------------

@contextmanager
def peak_rss_growth() -> Iterator[Callable[[], int]]:
    """Sample this process's resident memory every 5 ms while the block runs (Kairos, the
    origin and the client all live in it); yields a function giving the peak growth."""
    page = 4096
    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * page

    baseline, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: max(0, peak[0] - baseline)
    finally:
        done.set()
        sampler.join()


def _zero_mib_deflated() -> tuple[bytes, bytes]:
    """Raw deflate of one MiB of zeros, repeatable back to back (a full flush resets the
    dictionary, so every MiB compresses to the same ~1 KB), and the final empty block."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    compressor.compress(bytes(MiB))
    compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block, compressor.flush()


def _crc32_of_zero_mibs(count: int) -> int:
    """CRC-32 of ``count`` MiB of zeros without running the CRC over 10 GB: appending a MiB
    of zeros is an affine map of the running CRC, measured with 33 probes."""
    zeros = bytes(MiB)
    shift = zlib.crc32(zeros, 0)
    columns = [zlib.crc32(zeros, 1 << bit) ^ shift for bit in range(32)]
    crc = 0
    for _ in range(count):
        crc = shift ^ _xor_of(columns, crc)
    return crc


def _xor_of(columns: list[int], bits: int) -> int:
    out = 0
    for bit, column in enumerate(columns):
        if bits >> bit & 1:
            out ^= column
    return out


BOMB_MIBS = 10 * 1024      # inflates to 10 GiB
BOMB_BLOCK, BOMB_END = _zero_mib_deflated()
BOMB_HEAD = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"   # gzip, no name, no mtime
BOMB_TAIL = BOMB_END + struct.pack("<II", _crc32_of_zero_mibs(BOMB_MIBS),
                                   (BOMB_MIBS * MiB) & 0xFFFFFFFF)
BOMB_WIRE = len(BOMB_HEAD) + BOMB_MIBS * len(BOMB_BLOCK) + len(BOMB_TAIL)   # about 10 MB


def bomb_pieces() -> Iterator[bytes]:
    """The bomb, produced piece by piece: 10 GiB of zeros in a valid gzip stream."""
    yield BOMB_HEAD
    for _ in range(BOMB_MIBS // 64):
        yield BOMB_BLOCK * 64
    yield BOMB_TAIL


async def _bomb(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                 b"Content-Encoding: gzip\r\nCache-Control: no-store\r\n"
                 b"Content-Length: %d\r\n\r\n" % BOMB_WIRE)
    for piece in bomb_pieces():
        writer.write(piece)
        await writer.drain()
    return True


def raw_body(url: str, headers: dict[str, str] | None = None
             ) -> tuple[httpx.Response, int, str]:
    """Status/headers, length and SHA-256 of the body as it came on the wire: never decoded
    (httpx would inflate the bomb), never held whole."""
    digest, size = hashlib.sha256(), 0
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        for chunk in response.iter_raw():
            digest.update(chunk)
            size += len(chunk)
    return response, size, digest.hexdigest()


def sha256_of(pieces: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return digest.hexdigest()


@pytest.mark.parametrize("rewrite_cap_mb", [2, 16])
def test_a_10_gb_gzip_bomb_passes_through_compressed_and_is_never_inflated_past_the_cap(
        upstream: Upstream, valkey: Any, add_route: Callable[[str, Handler], None],
        rewrite_cap_mb: int) -> None:
    """F8. With the default 2 MB cap the 10 MB bomb is over the wire cap: streamed as it
    is, never decoded. With a 16 MB cap it is buffered and decoding stops at 16 MB
    (codings.TooLarge): served unchanged, counted as rewrite_skipped_undecodable."""
    add_route("/html-bomb", _bomb)
    running = start_kairos(upstream.url, valkey.connection_url,
                           **{"limits.max_rewrite_bytes": rewrite_cap_mb * MiB})
    try:
        with peak_rss_growth() as growth:
            response, size, digest = raw_body(running.url + "/html-bomb",
                                              {"Accept-Encoding": "gzip"})
        undecodable = running.app.metrics.errors["rewrite_skipped_undecodable"]
    finally:
        running.stop()
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert (size, digest) == (BOMB_WIRE, sha256_of(bomb_pieces()))   # byte for byte
    assert undecodable == (1 if rewrite_cap_mb * MiB > BOMB_WIRE else 0)
    assert growth() < 100 * MiB   # wire copies + the 16 MB cap (about 50 MB); not 10 GB


HUGE_PAGE_MIBS = 50
_FILLER = b"<p>" + b"filler paragraph of a very long page. " * 25 + b"</p>\n"


def huge_page_pieces() -> Iterator[bytes]:
    """A 50 MiB HTML page whose headline the test transform would rewrite."""
    yield b"<!doctype html><html><head><title>t</title></head><body><h1>Hello</h1>\n"
    block = _FILLER * (MiB // len(_FILLER))
    for _ in range(HUGE_PAGE_MIBS):
        yield block
    yield b"</body></html>\n"


async def _huge_page(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
    """/html-huge?framing=length|chunked"""
    chunked = query(request).get("framing") == "chunked"
    length = sum(len(p) for p in huge_page_pieces())
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                 b"Cache-Control: no-store\r\n" +
                 (b"Transfer-Encoding: chunked\r\n\r\n" if chunked
                  else b"Content-Length: %d\r\n\r\n" % length))
    for piece in huge_page_pieces():
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_50_mb_page_streams_through_untouched_in_bounded_memory(
        kairos: RunningKairos, add_route: Callable[[str, Handler], None], framing: str) -> None:
    """F8/F9/P23: over the rewrite cap, a page is streamed, not buffered: with a length it
    is never buffered at all; chunked, Kairos buffers up to the cap, then gives up (counted
    as rewrite_skipped_size) and streams the rest."""
    add_route("/html-huge", _huge_page)
    skipped = kairos.app.metrics.errors["rewrite_skipped_size"]
    with peak_rss_growth() as growth:
        response, size, digest = raw_body(kairos.url + f"/html-huge?framing={framing}")
    assert response.status_code == 200
    assert (size, digest) == (sum(len(p) for p in huge_page_pieces()),
                              sha256_of(huge_page_pieces()))   # the headline not rewritten
    assert kairos.app.metrics.errors["rewrite_skipped_size"] == skipped + (
        framing == "chunked")
    assert growth() < 40 * MiB   # buffering the page would take 50 MiB, joining it 100


# -- abrupt ends of long-lived streams ------------------------------------------------------

async def _sse_then_reset(request: Received, writer: asyncio.StreamWriter,
                          up: Upstream) -> bool:
    """Two events, then the origin's connection is reset without the closing chunk."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                 b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(2):
        event = b"data: event %d\n\n" % i
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.sleep(0.05)
    rst(writer.transport)
    return False


def test_an_event_stream_reset_by_the_origin_delivers_its_events_then_ends_broken(
        kairos: RunningKairos, add_route: Callable[[str, Handler], None]) -> None:
    add_route("/sse-reset", _sse_then_reset)
    events = []
    with pytest.raises(httpx.RemoteProtocolError), \
            httpx.stream("GET", kairos.url + "/sse-reset", timeout=10) as response:
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():   # ends in an error, not a clean end of stream
            if line.startswith("data:"):
                events.append(line)
    assert events == ["data: event 0", "data: event 1"]


@pytest.fixture(scope="module")
def ws_origin() -> Iterator[str]:
    """A WebSocket origin that greets, then ends the connection in one of three ways:
    /ws/abort resets the TCP connection, /ws/vanish closes it (FIN), both without a close
    frame; /ws/nocode sends a close frame without a status code (legal, RFC 6455 5.5.1)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        await asyncio.sleep(0.05)
        path = ws.request.path if ws.request is not None else ""
        if path == "/ws/nocode":
            ws.transport.write(b"\x88\x00")   # FIN + close opcode, empty payload, unmasked
            await asyncio.sleep(0.5)           # the client answers and closes
            return
        if path == "/ws/abort":
            rst(ws.transport)
        else:
            ws.transport.close()
        await asyncio.sleep(0.5)   # the handler outlives the connection: no close frame

    async def main() -> None:
        server = await serve(handler, "127.0.0.1", 0)
        holder["server"] = server
        holder["port"] = next(iter(server.sockets)).getsockname()[1]
        ready.set()
        await server.serve_forever()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert ready.wait(5)
    yield f"http://127.0.0.1:{holder['port']}"
    loop.call_soon_threadsafe(holder["server"].close)
    thread.join(5)
    loop.close()


def ws_visit(ws_origin: str, valkey: Any, path: str) -> tuple[str, int | None]:
    """Through a Kairos in front of ``ws_origin``: the greeting, and the visitor's close
    code once the origin has ended the connection (1006: no close frame arrived)."""
    running = start_kairos(ws_origin, valkey.connection_url)

    async def visit() -> tuple[str, int | None]:
        async with asyncio.timeout(10):   # a relay that never ends would hang here
            async with connect(f"ws://127.0.0.1:{running.port}{path}") as ws:
                greeting = await ws.recv()
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                return str(greeting), ws.close_code

    try:
        return asyncio.run(visit())
    finally:
        running.stop()


@pytest.mark.parametrize("how", ["abort", "vanish"])
def test_a_websocket_dropped_by_the_origin_is_dropped_for_the_visitor_too(
        ws_origin: str, valkey: Any, how: str) -> None:
    """P27: the origin's TCP connection ends without a close frame (1006, which no close
    frame may carry). The visitor gets what was sent, then the same abnormal closure, never
    a close frame claiming a normal end, and never a hang."""
    assert ws_visit(ws_origin, valkey, f"/ws/{how}") == ("hello", 1006)


def test_a_websocket_closed_by_the_origin_without_a_code_closes_cleanly_for_the_visitor(
        ws_origin: str, valkey: Any) -> None:
    """P27: a close frame without a status code (reported as 1005, which no close frame may
    carry either) is still a clean close: the visitor must get a close frame, not a drop."""
    greeting, code = ws_visit(ws_origin, valkey, "/ws/nocode")
    assert greeting == "hello"
    assert code in (1000, 1005)   # 1005 is not sayable through ASGI; 1000 is its meaning
