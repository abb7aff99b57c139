"""The server side of HTTP/1.1: uvicorn's httptools protocol, with bounds on the request head.

uvicorn bounds neither how long a request head may take to arrive nor how large it may grow:
a connection that sends nothing, or one header byte a second (slowloris), is held forever,
and a 10 MB Cookie header is buffered whole before Kairos sees a single field. A few
thousand such sockets take every file descriptor of a worker. This protocol closes a
connection whose head is not complete within ``server.header_timeout`` seconds of its first
byte (or of the connection, for a silent client) with 408, and one whose head grows past
``MAX_HEAD_BYTES`` with 431, before the request reaches the application. Once the head is
complete, the body has its own deadlines (the upstream's write timeout, P24).

It also sends a response's head and the start of its body in one system call
(:class:`HeadWithBody`): uvicorn writes the head as soon as ``http.response.start`` arrives,
so every response cost two sends, and on loopback each send also runs the receiver's TCP
processing.

Used by ``kairos serve`` (``http="proxy.http_server:ServedProtocol"``) and, with the timeout
bound in, by tests that run the app in-process (:func:`protocol_with`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .headers import MAX_REQUEST_HEADER_BYTES

log = logging.getLogger("kairos.server")

# The fields Kairos forwards at most, plus the request line and framing.
MAX_HEAD_BYTES = MAX_REQUEST_HEADER_BYTES + 16 * 1024
LINGER_SECONDS = 2.0
_CLOSE = b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class BoundedHeadProtocol(HttpToolsProtocol):
    head_timeout: float = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One timer per connection, re-armed only when it fires: arming and cancelling one
        # per request cost ~2.4 µs of every request (uvloop). A head in progress has a
        # deadline; the timer, when it fires, refuses a late head or waits for the rest.
        self._head_deadline: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_clock()   # a client that connects and says nothing

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:   # lingering after a refusal: read and drop (see _refuse)
            return
        if self._head_deadline is not None:   # still reading a head: count it
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(b"HTTP/1.1 431 Request Header Fields Too Large",
                             "request head over %d bytes", MAX_HEAD_BYTES)
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_head_clock()   # the next request on a kept-alive connection

    def on_headers_complete(self) -> None:
        self._stop_head_clock()
        super().on_headers_complete()
        cycle = self.cycle   # not started yet: its task runs on a later loop iteration
        if cycle is not None:
            cycle.transport = HeadWithBody(self.transport, self.loop)

    def _start_head_clock(self) -> None:
        if self._head_deadline is None:
            self._head_bytes = 0
            self._head_deadline = self.loop.time() + self.head_timeout
            if self._head_timer is None:   # else it fires before this deadline, and re-arms
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_clock)

    def _stop_head_clock(self) -> None:
        self._head_deadline = None   # the timer stays: it stops itself when it fires

    def _cancel_head_timer(self) -> None:
        self._head_deadline = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_clock(self) -> None:
        self._head_timer = None
        if self._head_deadline is None:   # no head in progress: the next one re-arms
            return
        left = self._head_deadline - self.loop.time()
        if left > 0:   # a later head than the one the timer was armed for
            self._head_timer = self.loop.call_later(left, self._head_clock)
            return
        self._refuse(b"HTTP/1.1 408 Request Timeout",
                     "request head not complete within %.1f s", self.head_timeout)

    def _refuse(self, status_line: bytes, why: str, arg: float) -> None:
        self._cancel_head_timer()
        if self.transport.is_closing():
            return
        log.info("closing connection from %s: " + why, self.client, arg)
        if self.cycle is not None and not self.cycle.response_complete:   # mid-response
            self.transport.close()
            return
        # Closing a socket with unread input makes the kernel send a reset, which can reach
        # the client before the answer does: answer, half-close, and keep reading (and
        # dropping) what the client still sends for a moment, as nginx's lingering close.
        self._refused = True
        self.transport.write(status_line + _CLOSE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


class HeadWithBody:
    """The transport one response cycle writes to: its first write (the head) is held until
    the next one (the body), and both go out in one ``writelines`` (one writev with uvloop).
    A head with no body straight behind it (HEAD, 304, a body the app is still waiting for)
    goes out on the next loop iteration at the latest, or before a close."""

    __slots__ = ("_flush", "_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._flush: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        if self._flush is None:   # the first write: hold it
            self._head = data
            self._flush = self._loop.call_soon(self._send_head)
            return
        head = self._head
        if head is None:
            self._transport.write(data)
            return
        self._head = None
        self._flush.cancel()
        self._transport.writelines((head, data))

    def _send_head(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._send_head()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:   # anything else a cycle might ask for
        self._send_head()
        return getattr(self._transport, name)


def protocol_with(head_timeout: float) -> type[BoundedHeadProtocol]:
    """The protocol class with this header timeout (for apps served in-process)."""
    return type("BoundedHeadProtocol", (BoundedHeadProtocol,), {"head_timeout": head_timeout})


class ServedProtocol(BoundedHeadProtocol):
    """What ``kairos serve`` workers run (importable by name, as uvicorn's worker processes
    need); ``app_from_environment`` sets its timeout from the worker's config before the
    first connection."""
