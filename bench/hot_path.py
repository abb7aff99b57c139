"""CPU per request of Kairos's own pass-through code, without sockets.

Drives ``HttpProxy`` in-process with a stub upstream (answers at once with typical origin
headers and one body chunk) and no-op ASGI ``receive``/``send``, so what is timed is only
the proxy's Python: header rules, the P30 watcher, timers, allocations, metrics. Loopback
benchmarks cannot resolve a few µs on a shared 2-core machine; this can. Compare trees with
PYTHONPATH, e.g. a copy of ``proxy/`` from another revision:

  .venv/bin/python bench/hot_path.py                          # this checkout
  PYTHONPATH=/tmp/old .venv/bin/python bench/hot_path.py      # the tree in /tmp/old/proxy

Prints the best of --rounds rounds of --requests requests each, in µs per request.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator

import uvloop

import proxy
from proxy import config as config_module
from proxy.http_proxy import HttpProxy
from proxy.metrics import Metrics
from proxy.visitor import Visitors

# What wrk sends, plus what a browser adds; what nginx answers for a static file.
REQUEST_HEADERS = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"Mozilla/5.0 (X11; Linux)"),
                   (b"accept", b"*/*"), (b"accept-encoding", b"gzip, br"),
                   (b"accept-language", b"en-GB,en;q=0.9"), (b"cookie", b"sid=abc; theme=dark"),
                   (b"connection", b"keep-alive")]
RESPONSE_HEADERS = [(b"server", b"nginx/1.22.1"), (b"date", b"Sun, 22 Nov 2026 10:00:00 GMT"),
                    (b"content-type", b"application/octet-stream"),
                    (b"content-length", b"10240"),
                    (b"last-modified", b"Sun, 22 Nov 2026 09:00:00 GMT"),
                    (b"connection", b"keep-alive"), (b"etag", b'"6740-2800"'),
                    (b"accept-ranges", b"bytes")]
BODY = b"x" * 10240


class StubResponse:
    status = 200
    dropped_headers = 0

    def __init__(self) -> None:
        self.headers = list(RESPONSE_HEADERS)

    async def chunks(self) -> AsyncIterator[bytes]:
        yield BODY

    async def aclose(self) -> None:
        pass


class StubUpstream:
    async def send(self, request: object) -> StubResponse:
        return StubResponse()

    async def aclose(self) -> None:
        pass


async def main(requests: int, rounds: int) -> list[float]:
    config = config_module.load(None, environ={}, overrides={
        "cookies.secrets": ["bench-secret-0123456789abcdef"]})
    visitors = Visitors.open(config)
    http = HttpProxy(config, StubUpstream(), Metrics(), None, visitors)  # type: ignore[arg-type]
    scope = {"type": "http", "method": "GET", "path": "/10k.bin", "raw_path": b"/10k.bin",
             "query_string": b"", "headers": REQUEST_HEADERS, "scheme": "http",
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080),
             "http_version": "1.1"}
    idle = asyncio.Event()

    async def receive() -> dict:
        await idle.wait()          # as uvicorn: nothing until the visitor leaves
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        pass

    results = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(requests):
            await http(dict(scope), receive, send)
        results.append((time.process_time() - start) / requests * 1e6)
        await asyncio.sleep(0.06)  # let timers and watchers of the round settle
    visitors.close()
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    times = uvloop.run(main(args.requests, args.rounds))
    print(f"{proxy.__path__[0]}: {min(times):.1f} µs per request (best of {args.rounds}; "
          f"all: {', '.join(f'{t:.1f}' for t in times)})")
