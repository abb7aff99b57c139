"""Which HTTP client should Kairos use to talk to the upstream?

The design card names httpx, but httpx's own pool (httpcore) is reported to be
several times slower than aiohttp under concurrency (encode/httpx#3215,
encode/httpcore#1035), and slower still when `sniffio` is not installed. This
script settles it by measurement on this machine, in one run:

* speed: requests/s and p50/p99 latency at concurrency 1, 10 and 50 for
  10 KB / 100 KB / 1 MB static files from one nginx origin on loopback,
  streaming the raw body in chunks the way the proxy will (no decoding),
  under uvloop;
* correctness traits a transparent proxy needs, probed against nginx (gzip)
  and tiny raw asyncio TCP servers that send what real clients would reject
  or that echo the exact request bytes they received.

Clients: httpx.AsyncClient with its default transport, httpx.AsyncClient with
the httpx_aiohttp transport, aiohttp.ClientSession directly, and httpx's
default transport again with an importable `sniffio` (stub) to show what the
missing package costs.

Usage:  .venv/bin/python bench/upstream_clients.py [--duration 3]
Output: markdown tables on stdout and in bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import itertools
import os
import re
import sys
import time
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

import aiohttp
import httpx
import uvloop
from httpx_aiohttp import AiohttpTransport

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

SIZES = [10 * 1024, 100 * 1024, 1024 * 1024]
CONCURRENCY = [1, 10, 50]
POOL = 100  # connections per client; comfortably above the highest concurrency
CHUNK = 64 * 1024  # aiohttp iter_chunked size; httpx yields what httpcore reads (64 KiB)
TIMEOUT = 10.0
ROUNDS = 2  # per cell, each duration/ROUNDS long; the best counts
ORIGIN_CPU, CLIENT_CPU = "0", 1  # on a 2-core machine: one core each
NO_COOKIES = DefaultCookiePolicy(allowed_domains=[])  # accepts no cookie at all

Headers = list[tuple[bytes, bytes]]


# --------------------------------------------------------------------- clients


@dataclass
class Reply:
    status: int
    headers: Headers  # as exposed by the client, in its order
    body: bytes  # raw bytes as streamed, no decoding


class Client:
    """The operations the proxy needs: stream a GET's raw body; send raw header bytes."""

    name = "?"

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    def activate(self) -> None:
        """Called before this client's probes/measurements (clients take turns)."""

    def deactivate(self) -> None:
        """Undo activate(), so that other clients run unaffected."""

    async def fetch_len(self, url: str) -> int:
        """GET url, stream the raw body in chunks, return its length."""
        raise NotImplementedError

    async def get(self, url: str, headers: Headers) -> Reply:
        """GET url with these exact header bytes, returning everything as seen."""
        raise NotImplementedError


class HttpxClient(Client):
    name = "httpx (default transport)"

    def _transport(self) -> httpx.AsyncBaseTransport | None:
        return None  # httpx builds its own httpcore pool from `limits`

    async def open(self) -> None:
        self.c = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL),
            timeout=TIMEOUT,
            transport=self._transport(),
            trust_env=False,  # never route upstream traffic via $HTTP_PROXY
            cookies=CookieJar(NO_COOKIES),  # a proxy must not replay upstream Set-Cookie
        )
        self.c.headers.clear()  # no Accept-Encoding etc. the browser did not send

    async def close(self) -> None:
        await self.c.aclose()

    async def fetch_len(self, url: str) -> int:
        n = 0
        async with self.c.stream("GET", url) as r:
            async for chunk in r.aiter_raw():
                n += len(chunk)
        return n

    async def get(self, url: str, headers: Headers) -> Reply:
        async with self.c.stream("GET", url, headers=headers) as r:
            body = b"".join([c async for c in r.aiter_raw()])
            return Reply(r.status_code, list(r.headers.raw), body)


class HttpxAiohttpClient(HttpxClient):
    """httpx API over aiohttp's pool. Per its source (httpx_aiohttp/transport.py)
    it passes auto_decompress=False and allow_redirects=False per request and
    streams with iter_chunked(16 KiB), but builds its own ClientSession from
    httpx.Limits (max_connections, keepalive_expiry only) with aiohttp's default
    cookie jar, which replays cookies for hostname upstreams. So hand it our
    own session through `client=`."""

    name = "httpx + httpx_aiohttp transport"

    def _transport(self) -> httpx.AsyncBaseTransport:
        return AiohttpTransport(client=aiohttp_session)


class HttpxSniffioClient(HttpxClient):
    """httpcore does `import sniffio` when a lock/event is first used (twice per
    request); with the package absent that is a failed import, a sys.path scan,
    every time. A stub in sys.modules shows what installing sniffio would buy."""

    name = "httpx (default) + sniffio stub"
    stub = types.ModuleType("sniffio")
    stub.current_async_library = lambda: "asyncio"  # what sniffio answers under asyncio

    def activate(self) -> None:
        self.had = sys.modules.get("sniffio")
        sys.modules["sniffio"] = self.had or self.stub

    def deactivate(self) -> None:
        if self.had is None:
            del sys.modules["sniffio"]


def aiohttp_session() -> aiohttp.ClientSession:
    """aiohttp configured the way a transparent proxy needs it."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=POOL, limit_per_host=0, keepalive_timeout=75),
        auto_decompress=False,  # stream Content-Encoding'd bodies as they are
        cookie_jar=aiohttp.DummyCookieJar(),  # never store/replay upstream cookies
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
        timeout=aiohttp.ClientTimeout(total=TIMEOUT),
    )


class AiohttpClient(Client):
    name = "aiohttp.ClientSession"

    async def open(self) -> None:
        self.s = aiohttp_session()

    async def close(self) -> None:
        await self.s.close()

    async def fetch_len(self, url: str) -> int:
        n = 0
        async with self.s.get(url, allow_redirects=False) as r:
            async for chunk in r.content.iter_chunked(CHUNK):
                n += len(chunk)
        return n

    async def get(self, url: str, headers: Headers) -> Reply:
        # aiohttp only takes str headers and writes them as UTF-8; the best a
        # proxy can do is decode as UTF-8 where possible, else latin-1.
        def text(b: bytes) -> str:
            try:
                return b.decode("utf-8")
            except UnicodeDecodeError:
                return b.decode("latin-1")

        hdrs = [(text(k), text(v)) for k, v in headers]
        async with self.s.get(url, headers=hdrs, allow_redirects=False) as r:
            body = b"".join([c async for c in r.content.iter_chunked(CHUNK)])
            return Reply(r.status, list(r.raw_headers), body)


CLIENTS: list[type[Client]] = [AiohttpClient, HttpxAiohttpClient, HttpxClient, HttpxSniffioClient]


# --------------------------------------------------------------------- raw servers

RAW_RESPONSES = {
    b"/cookies": b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nX-Between: 1\r\n"
    b"Set-Cookie: b=2; Expires=Tue, 21 Oct 2036 07:28:00 GMT\r\nSet-Cookie: c=3\r\n"
    b"Content-Length: 2\r\nConnection: close\r\n\r\nok",
    b"/redirect": b"HTTP/1.1 302 Found\r\nLocation: /echo\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n",
    b"/status999": b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    b"/dupcl-same": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n"
    b"Connection: close\r\n\r\nhello",
    b"/dupcl-conflict": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 2\r\n"
    b"Connection: close\r\n\r\nhello",
}


async def raw_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer canned responses by path; /echo returns the request head verbatim."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        path = head.split(b" ", 2)[1]
        if path == b"/echo":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                         % len(head) + head)
        else:
            writer.write(RAW_RESPONSES.get(path, b"HTTP/1.1 404 Not Found\r\n"
                                           b"Content-Length: 0\r\nConnection: close\r\n\r\n"))
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


# --------------------------------------------------------------------- probes

OBS_UTF8 = "café ü".encode()  # obs-text that happens to be valid UTF-8
OBS_LATIN1 = b"caf\xe9 \xff\x80"  # obs-text that is not


async def probe(client: Client, origin: str, raw: str, gz_text: bytes) -> dict[str, str]:
    """Each trait as a short verdict string for the table."""
    out: dict[str, str] = {}

    async def attempt(key: str, fn: Callable[[], Awaitable[str]]) -> None:
        try:
            out[key] = await fn()
        except Exception as exc:  # the exception *is* the verdict
            first = re.split(r"\\n|\n", str(exc))[0][:50]
            out[key] = f"raises {type(exc).__name__}: {first}"

    async def raw_gzip() -> str:
        r = await client.get(origin + "/gz/10k.txt", [(b"Accept-Encoding", b"gzip")])
        ce = [v for k, v in r.headers if k.lower() == b"content-encoding"]
        if ce == [b"gzip"] and r.body[:2] == b"\x1f\x8b" and gzip.decompress(r.body) == gz_text:
            return f"yes ({len(r.body)} gzip bytes)"
        return f"no (CE={ce}, {len(r.body)} bytes, starts {r.body[:2]!r})"

    async def cookies() -> str:
        r = await client.get(raw + "/cookies", [])
        seen = [(k.lower(), v) for k, v in r.headers if k.lower() in (b"set-cookie", b"x-between")]
        want = [(b"set-cookie", b"a=1; Path=/"), (b"x-between", b"1"),
                (b"set-cookie", b"b=2; Expires=Tue, 21 Oct 2036 07:28:00 GMT"),
                (b"set-cookie", b"c=3")]
        return "yes" if seen == want else f"no: {seen}"

    def obs(value: bytes) -> Callable[[], Awaitable[str]]:
        async def run() -> str:
            r = await client.get(raw + "/echo", [(b"X-Obs", value)])
            lines = r.body.split(b"\r\n")
            got = [ln.split(b":", 1)[1].strip() for ln in lines if ln.lower().startswith(b"x-obs:")]
            return "unchanged" if got == [value] else f"changed to {got[0] if got else None!r}"
        return run

    async def replayed() -> str:
        await client.get(raw + "/cookies", [])
        r = await client.get(raw + "/echo", [])
        return "yes (leaks)" if b"\r\ncookie:" in r.body.lower() else "no"

    async def added() -> str:
        r = await client.get(raw + "/echo", [])
        names = [ln.split(b":", 1)[0].decode() for ln in r.body.split(b"\r\n")[1:] if b":" in ln]
        return ", ".join(n for n in names if n.lower() != "host") or "none"

    def status_of(path: str) -> Callable[[], Awaitable[str]]:
        async def run() -> str:
            r = await client.get(raw + path, [])
            return f"status {r.status}, body {r.body[:20]!r}"
        return run

    await attempt("raw gzip stream", raw_gzip)
    await attempt("Set-Cookie x3 separate, ordered", cookies)
    await attempt("obs-text (UTF-8 bytes)", obs(OBS_UTF8))
    await attempt("obs-text (non-UTF-8 bytes)", obs(OBS_LATIN1))
    await attempt("status 999", status_of("/status999"))
    await attempt("dup Content-Length, same", status_of("/dupcl-same"))
    await attempt("dup Content-Length, conflicting", status_of("/dupcl-conflict"))
    await attempt("Set-Cookie replayed (jar disabled)", replayed)
    await attempt("302 (not followed)", status_of("/redirect"))
    await attempt("headers it adds (auto headers off)", added)
    return out


# --------------------------------------------------------------------- load


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # client process CPU time per request
    errors: int


async def load(client: Client, url: str, size: int, conc: int, duration: float) -> Load:
    """`conc` workers each looping GETs until the deadline (and a count cap)."""
    lat: list[float] = []
    errors = 0
    cap = 2_000_000 // conc  # bound in count as well as time
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors
        for _ in range(cap):
            t0 = time.perf_counter()
            if t0 >= deadline:
                return
            try:
                ok = await client.fetch_len(url) == size
            except Exception:  # counted, not fatal
                ok = False
            lat.append(time.perf_counter() - t0)
            errors += not ok

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(conc)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3  # noqa: E731
    return Load(len(lat) / elapsed, pct(0.50), pct(0.99), cpu / len(lat) * 1e6, errors)


# --------------------------------------------------------------------- main


async def measure(client: Client, url: str, size: int, conc: int, duration: float,
                  warmup: float) -> Load:
    await load(client, url, size, conc, warmup)
    gc.collect()
    return await load(client, url, size, conc, duration)


async def run(duration: float, warmup: float) -> str:
    raw_server = await asyncio.start_server(raw_handler, "127.0.0.1", 0)
    raw = f"http://127.0.0.1:{raw_server.sockets[0].getsockname()[1]}"
    out = [f"Machine: {h.machine_summary()}; event loop: {type(asyncio.get_running_loop())}",
           f"python {sys.version.split()[0]}, httpx {httpx.__version__}, "
           f"aiohttp {aiohttp.__version__}, sniffio installed: {_has_sniffio()}",
           f"best of {ROUNDS} rounds of {duration / ROUNDS:g} s per cell, each after {warmup:g} s"
           f" warm-up; nginx origin worker_processes 1 on CPU {ORIGIN_CPU}, client on CPU "
           f"{CLIENT_CPU}; pool {POOL} connections per client",
           ""]
    traits: dict[str, dict[str, str]] = {}
    perf: dict[tuple[str, int, int], Load] = {}
    with h.temp_workdir() as wd:
        root = wd / "www"
        paths = h.make_payloads(root, SIZES)
        h.make_payloads(root / "gz", [10 * 1024], compressible=True)
        gz_text = (root / "gz" / "10k.txt").read_bytes()
        # Pinned apart so that nginx and the client under test never fight over a core.
        with h.nginx("origin.conf", wd, root=root, cpus=ORIGIN_CPU) as port:
            origin = f"http://127.0.0.1:{port}"
            clients = [cls() for cls in CLIENTS]
            for client in clients:
                await client.open()
            try:
                for client in clients:
                    client.activate()
                    try:
                        traits[client.name] = await probe(client, origin, raw, gz_text)
                    finally:
                        client.deactivate()
                # Clients take turns within each cell, ROUNDS times, and the best
                # round counts: other work on a shared machine only ever slows a run.
                for size in SIZES:
                    for conc in CONCURRENCY:
                        for _, client in itertools.product(range(ROUNDS), clients):
                            client.activate()
                            try:
                                r = await measure(client, origin + paths[size], size, conc,
                                                  duration / ROUNDS, warmup)
                            finally:
                                client.deactivate()
                            key = client.name, size, conc
                            if key not in perf or r.rps > perf[key].rps:
                                perf[key] = r
                            print(f"  {client.name:32} {h.size_label(size):>4} c={conc:<3}"
                                  f"{r.rps:7.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                                  f"p99 {r.p99_ms:6.2f} ms  cpu {r.cpu_us:5.0f} us/req  "
                                  f"err {r.errors}", file=sys.stderr)
            finally:
                for client in clients:
                    await client.close()
    raw_server.close()
    await raw_server.wait_closed()
    out += [render_perf(perf), "", render_traits(traits)]
    return "\n".join(out)


def render_perf(perf: dict[tuple[str, int, int], Load]) -> str:
    base = AiohttpClient.name
    rows = []
    for size in SIZES:
        for conc in CONCURRENCY:
            for name in (c.name for c in CLIENTS):
                r = perf[name, size, conc]
                ratio = r.rps / perf[base, size, conc].rps
                rows.append([h.size_label(size), conc, name, f"{r.rps:,.0f}", f"{r.p50_ms:.2f}",
                             f"{r.p99_ms:.2f}", f"{r.cpu_us:,.0f}", f"{ratio:.2f}", r.errors])
    return h.markdown_table(["size", "conc", "client", "req/s", "p50 ms", "p99 ms",
                             "client CPU µs/req", "req/s vs aiohttp", "errors"], rows)


def render_traits(traits: dict[str, dict[str, str]]) -> str:
    names = list(traits)
    keys = list(next(iter(traits.values())))
    rows = [[k, *(traits[n][k].replace("|", "\\|") for n in names)] for k in keys]
    return h.markdown_table(["trait", *names], rows)


def _has_sniffio() -> bool:
    try:
        import sniffio  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds of warm-up per measurement")
    args = ap.parse_args()
    if (os.cpu_count() or 1) > CLIENT_CPU:
        os.sched_setaffinity(0, {CLIENT_CPU})
    report = uvloop.run(run(args.duration, args.warmup))
    print(report)
    print(f"\nsaved to {h.write_result('upstream-clients', report + chr(10))}", file=sys.stderr)


if __name__ == "__main__":
    main()
