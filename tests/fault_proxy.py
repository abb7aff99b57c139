"""A TCP fault injector for tests: sits between a client and a server on loopback and
misbehaves on command.

Why it exists: the fault tests need a peer (Redis, the origin) that is slow, resets, goes
silent or disappears, and the usual tools are not on these machines: no toxiproxy, and no
``tc``/netem (no root, no kernel modules). An asyncio relay in a background thread is enough.

Modes, switched from the test's thread at any time; each call returns once the mode is in
force (existing connections included):

* ``passthrough()``: forward bytes both ways (the listener is reopened if it was closed).
* ``delay(seconds, first_byte_only=False, piece=None)``: sleep before forwarding each chunk
  (cut into ``piece``-byte pieces, to make a trickle), or only before the first byte the
  server sends back after each request (a slow time to first byte, keep-alive or not).
* ``reset()``: RST (SO_LINGER 0) every open connection, both sides, and every new one.
* ``blackhole()``: forward nothing more, either way; new connections are accepted and read
  but never answered, and never reach the server.
* ``refuse()``: close the listening socket (connects get ECONNREFUSED) and reset the open
  connections, as when the server's host goes away.

``open_connections`` counts client connections still open: a test can check that its client
closed what it gave up on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any

PASS, DELAY, RESET, BLACKHOLE, REFUSE = "pass", "delay", "reset", "blackhole", "refuse"
_SILENT = (RESET, BLACKHOLE, REFUSE)   # modes in which nothing is forwarded
_READ = 64 * 1024


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode = PASS
        self.open_connections = 0
        self._delay = 0.0
        self._first_byte_only = False
        self._piece = _READ
        self._writers: set[asyncio.StreamWriter] = set()   # both sides of every connection
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="fault-proxy")

    # -- the test's side --------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def passthrough(self) -> None:
        self._call(self._switch(PASS))

    def delay(self, seconds: float, *, first_byte_only: bool = False,
              piece: int | None = None) -> None:
        self._delay, self._first_byte_only, self._piece = seconds, first_byte_only, piece or _READ
        self._call(self._switch(DELAY))

    def reset(self) -> None:
        self._call(self._switch(RESET))

    def blackhole(self) -> None:
        self._call(self._switch(BLACKHOLE))

    def refuse(self) -> None:
        self._call(self._switch(REFUSE))

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(5)

    # -- the relay --------------------------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is None:   # SO_REUSEADDR (asyncio's default) lets the port be reused
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        await self._switch(REFUSE)
        if self._handlers:   # let every connection finish: no transport left for the GC
            _, pending = await asyncio.wait(self._handlers, timeout=2)
            for task in pending:
                task.cancel()

    async def _switch(self, mode: str) -> None:
        self.mode = mode
        if mode in (RESET, REFUSE):
            for writer in list(self._writers):
                _rst(writer)
        if mode == REFUSE and self._server is not None:
            self._server.close()
            self._server = None
        elif mode != REFUSE:
            await self._listen()

    async def _accept(self, client_reader: asyncio.StreamReader,
                      client: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        self._handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        self._writers.add(client)
        server = None
        try:
            if self.mode == RESET:
                _rst(client)
                return
            if self.mode == BLACKHOLE:   # accepted, read, never answered
                while await client_reader.read(_READ):
                    pass
                return
            server_reader, server = await asyncio.open_connection(*self.target)
            self._writers.add(server)
            answered = [True]   # has the server sent anything since the client last did?
            await asyncio.gather(self._pump(client_reader, server, answered, from_server=False),
                                 self._pump(server_reader, client, answered, from_server=True))
        except (OSError, RuntimeError):   # server down, or a side reset (uvloop: RuntimeError)
            _rst(client)
            if server is not None:
                _rst(server)
        finally:
            self.open_connections -= 1
            self._handlers.discard(asyncio.current_task())  # type: ignore[arg-type]
            for writer in (client, server):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    answered: list[bool], *, from_server: bool) -> None:
        while data := await source.read(_READ):
            for start in range(0, len(data), self._piece):
                if self.mode in _SILENT:
                    continue   # stop forwarding: bytes go nowhere
                first_of_reply = from_server and not answered[0]
                if self.mode == DELAY and (first_of_reply or not self._first_byte_only):
                    await asyncio.sleep(self._delay)
                answered[0] = from_server
                sink.write(data[start:start + self._piece])
                await sink.drain()
        if self.mode in _SILENT:
            sink.close()   # one side is gone and nothing goes through: end the connection
        elif sink.can_write_eof():
            with contextlib.suppress(OSError):
                sink.write_eof()   # pass the half-close on: HTTP bodies may end at the close


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset instead of a FIN: linger on, timeout 0."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
