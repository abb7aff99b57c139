"""A real HTTP/1.1 origin on loopback that can also misbehave on purpose.

Written on raw asyncio streams instead of an HTTP framework so that tests can send what no
framework would: status 999, two Content-Lengths, a body cut short, headers that arrive late,
a reset mid-body. Every request it receives is recorded (raw header bytes included) so tests
can check exactly what the proxy forwarded.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import struct
import threading
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import unquote_plus

import brotli
import zstandard


@dataclass
class Received:
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name]


Handler = Callable[[Received, asyncio.StreamWriter, "Upstream"], Awaitable[bool]]


@dataclass
class Upstream:
    host: str = "127.0.0.1"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    open_connections: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.AbstractServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Upstream:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._connection, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="test-upstream")
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        assert self._loop is not None and self._server is not None

        async def close() -> None:
            self._server.close()  # type: ignore[union-attr]
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(5)
        self._loop.close()

    def last(self, path_prefix: str = "") -> Received:
        for item in reversed(self.received):
            if item.target.startswith(path_prefix):
                return item
        raise AssertionError(f"upstream received no request for {path_prefix!r}")

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.received.append(request)
                path = request.target.split("?")[0]
                # (a target without "/" is the "*" of OPTIONS *: echoed)
                top = "/" + path.split("/")[1] if path.startswith("/") else path
                handler = ROUTES.get(path) or ROUTES.get(top) or _echo
                out = _HeadWriter(writer) if request.method == "HEAD" else writer
                if not await handler(request, out, self):  # type: ignore[arg-type]
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.open_connections -= 1
            writer.close()


class _HeadWriter:
    """A correct origin answers HEAD with the headers of GET and no body."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._headers_done = False
        self.transport = writer.transport

    def write(self, data: bytes) -> None:
        if self._headers_done:
            return
        head, sep, _ = data.partition(b"\r\n\r\n")
        self._writer.write(head + sep)
        self._headers_done = bool(sep)

    async def drain(self) -> None:
        await self._writer.drain()

    def get_extra_info(self, name: str) -> object:
        return self._writer.get_extra_info(name)


async def _read_request(reader: asyncio.StreamReader) -> Received | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head[:-4].split(b"\r\n")
    method, target, _ = lines[0].split(b" ", 2)
    headers = [(n.strip().lower(), v.strip()) for n, v in
               (line.split(b":", 1) for line in lines[1:] if line)]
    body = b""
    values = dict(headers)
    if b"content-length" in values:
        body = await reader.readexactly(int(values[b"content-length"]))
    elif values.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    return Received(method.decode(), target.decode("latin-1"), headers, body)


def _response(status: str, headers: list[tuple[str, str]], body: bytes = b"",
              content_length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    lines += [f"{n}: {v}" for n, v in headers]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _echo(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
    body = json.dumps({
        "method": request.method, "target": request.target,
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in request.headers],
        "body": request.body.decode("latin-1"),
    }).encode()
    writer.write(_response("200 OK", [("Content-Type", "application/json"),
                                      ("Date", "Sun, 22 Nov 2026 10:00:00 GMT"),
                                      ("Server", "test-origin")], body))
    await writer.drain()
    return True


async def _cookies(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
    writer.write(_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Date", "Sun, 22 Nov 2026 10:00:00 GMT"),
        ("Server", "test-origin"),
        ("Set-Cookie", "a=1; Path=/"),
        ("Set-Cookie", "b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/"),
        ("Set-Cookie", "c=3; HttpOnly"),
        ("X-Repeat", "one"),
        ("X-Repeat", "two"),
        ("Alt-Svc", 'h3=":443"; ma=86400'),
        ("Connection", "X-Hop-Secret"),
        ("X-Hop-Secret", "must not pass"),
        ("Keep-Alive", "timeout=5"),
    ], b"cookies"))
    await writer.drain()
    return True


def _raw(data: bytes, keep: bool = False) -> Handler:
    async def handler(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
        writer.write(data.replace(b"{port}", str(up.port).encode()))
        await writer.drain()
        return keep
    return handler


async def _truncated(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
    kind = "text/html" if "html" in request.target else "application/octet-stream"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + kind.encode() +
                 b"\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
    await writer.drain()
    await asyncio.sleep(0.05)
    return False


async def _reset(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    return False


async def _slow(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
    await asyncio.sleep(float(request.target.split("=")[-1]) if "=" in request.target else 3)
    return await _echo(request, writer, up)


async def _sse(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                 b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(3):
        event = f"data: event {i}\n\n".encode()
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.sleep(0.3)
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


async def _big(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
    size = 5 * 1024 * 1024
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                 b"Content-Length: %d\r\n\r\n" % size)
    block = bytes(range(256)) * 256
    for _ in range(size // len(block)):
        writer.write(block)
        await writer.drain()
    return True


async def _peer(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
    """The client's port on this connection: tells a test which connection was used."""
    port = str(writer.get_extra_info("peername")[1]).encode()
    writer.write(_response("200 OK", [("Content-Type", "text/plain")], port))
    await writer.drain()
    return True


async def _close_idle(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
    """/close-idle?s=0.3: answer with keep-alive, then close the connection after s seconds
    without reading what came meanwhile, as an origin whose keep-alive timeout ran out."""
    writer.write(_response("200 OK", [("Content-Type", "text/plain")], b"ok"))
    await writer.drain()
    await asyncio.sleep(float(request.target.split("=")[-1]) if "=" in request.target else 0)
    return False


async def _stall(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
    """Headers and part of the body, then silence: a read timeout mid-body."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    await writer.drain()
    await asyncio.sleep(3)
    return False


PAGE = ("<!doctype html><html><head><meta charset=\"{charset}\"><title>t</title></head>"
        "<body><h1>Hello</h1><p>Café crème</p></body></html>")


def page_bytes(charset: str = "utf-8") -> bytes:
    return PAGE.format(charset=charset).encode(charset)


_ENCODERS = {"gzip": lambda b: gzip.compress(b, mtime=0),   # the same bytes every time
             "deflate": zlib.compress, "br": brotli.compress,
             "zstd": zstandard.ZstdCompressor().compress, "identity": lambda b: b}


async def _html(request: Received, writer: asyncio.StreamWriter, up: Upstream) -> bool:
    """/html?enc=gzip&charset=windows-1252&cc=no-transform&status=206&ct=...
    &event=<Kairos-Event header value, URL-encoded>&nonce=<CSP nonce of an inline script>"""
    query = dict(p.split("=", 1) for p in request.target.partition("?")[2].split("&") if "=" in p)
    charset = query.get("charset", "utf-8")
    body = page_bytes(charset)
    if "nonce" in query:
        body = body.replace(b"</body>", f'<script nonce="{query["nonce"]}">var n = 1;</script>'
                            "</body>".encode())
    enc = query.get("enc", "identity")
    headers = [("Content-Type", query.get("ct", f"text/html; charset={charset}")
                .replace("+", " ")),
               ("ETag", '"abc123"'), ("Content-MD5", "Q2hlY2sgSW50ZWdyaXR5IQ=="),
               ("Cache-Control", query.get("cc", "public, max-age=60").replace("+", " ")),
               ("Date", formatdate(usegmt=True)), ("Server", "test-origin")]
    if "event" in query:
        headers.append(("Kairos-Event", unquote_plus(query["event"])))
    if enc != "identity":
        headers.append(("Content-Encoding", enc))
        headers.append(("Vary", "Accept-Encoding"))
    if "bomb" in query:
        body = gzip.compress(b"<html>" + b" " * int(query["bomb"]))
        headers = [h for h in headers if h[0] != "Content-Encoding"]
        headers.append(("Content-Encoding", "gzip"))
    else:
        body = _ENCODERS[enc](body)
    if "etag304" in query and request.header(b"if-none-match") == [b'"abc123"']:
        writer.write(_response("304 Not Modified", [h for h in headers if h[0] in (
            "ETag", "Cache-Control", "Date")], content_length=False))   # unchanged page
        await writer.drain()
        return True
    status = "206 Partial Content" if query.get("status") == "206" else "200 OK"
    data = _response(status, headers, body)
    if "truncate" in query:   # Content-Length promises more than arrives
        writer.write(data[:-20])
        await writer.drain()
        return False
    writer.write(data)
    await writer.drain()
    return True


ROUTES: dict[str, Handler] = {
    "/echo": _echo,
    "/cookies": _cookies,
    "/html": _html,
    "/status999": _raw(b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok"),
    "/dupcl": _raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk"),
    "/clte": _raw(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"2\r\nok\r\n0\r\n\r\n"),
    "/badcl": _raw(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok"),
    "/garbage": _raw(b"this is not http\r\n\r\n"),
    "/truncated": _truncated,
    "/reset": _reset,
    "/slow": _slow,
    "/sse": _sse,
    "/big": _big,
    "/redirect": _raw(
        b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/target?x=1\r\n"
        b"Content-Location: http://127.0.0.1:{port}/here\r\n"
        b"Refresh: 0; url=http://127.0.0.1:{port}/refreshed\r\n"
        b"Content-Length: 0\r\n\r\n", keep=True),
    "/elsewhere": _raw(b"HTTP/1.1 302 Found\r\nLocation: https://example.org/x\r\n"
                       b"Content-Length: 0\r\n\r\n", keep=True),
    "/early-hints": _raw(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                         b"\r\nhints", keep=True),
    "/peer": _peer,
    "/close-idle": _close_idle,
    "/stall": _stall,
    "/continue": _raw(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                      b"\r\nok", keep=True),
    "/eof-body": _raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close"),
    "/nodate": _raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", keep=True),
    "/badheader": _raw(b"HTTP/1.1 200 OK\r\nX-Bad: a\x7fb\r\nX-Good: yes\r\nContent-Length: 2"
                       b"\r\n\r\nok", keep=True),
}
