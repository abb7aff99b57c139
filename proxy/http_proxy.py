"""Forward one HTTP request to the origin and relay the answer: the proxy's hot path.

Pure ASGI (no ``BaseHTTPMiddleware``, which hides disconnects and costs throughput, P30).
Bodies stream in both directions; only pages a transform wants are buffered (see
``page.py``). Redis is never awaited here: events go to the store's in-process buffer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import client_ip, codings, page
from .cache import CacheEntry, CacheState, EdgeCache, conditional_headers, served_headers
from .config import Config
from .errors import BadRequest, MethodNotAllowed, ProxyError, UpstreamError
from .experimentation import NOTHING, PREVIEW_PARAM, Experimentation
from .goal_events import EVENT_HEADER
from .headers import (
    ForwardingFacts,
    HeaderError,
    RawHeaders,
    check_request_headers,
    first,
    make_private,
    response_headers,
    rewrite_origin_urls,
    upstream_request_headers,
)
from .metrics import Metrics
from .page_cache import Preparer, Revalidator
from .page_memo import RepeatedPages
from .responses import http_date, respond
from .upstream import Upstream, UpstreamRequest, UpstreamResponse
from .visitor import Visitors, is_page_view
from .visitor_outcome import VisitorOutcome

log = logging.getLogger("kairos.proxy")

Scope = dict[str, Any]
Receive = Any
Send = Any

_REFUSED_METHODS = frozenset({"TRACE", "CONNECT"})
# P30: exchanges that live through a whole tick of this period (so 50-100 ms old) get a
# task that listens for the visitor's disconnect. Most exchanges end sooner and never pay for
# one: a task per request cost ~7% of a pass-through's CPU, a timer per request ~1%. A visitor
# who leaves early is noticed at most 100 ms after the request began.
WATCH_AFTER = 0.05


class ClientDisconnected(Exception):
    """The visitor went away while we were still reading their request body."""


class HttpProxy:
    def __init__(
        self,
        config: Config,
        upstream: Upstream,
        metrics: Metrics,
        transform: page.PageTransform | None = None,
        visitors: Visitors | None = None,
        experiments: Experimentation | None = None,
        record: Callable[[Any], None] | None = None,
    ) -> None:
        self.config = config
        self.upstream = upstream
        self.metrics = metrics
        self.transform = transform
        self.visitors = visitors
        self.experiments = experiments
        self.record = record   # the store's buffer: never awaited (Redis off the request path)
        self.cache: EdgeCache | None = None
        self.revalidator: Revalidator | None = None
        self.preparer: Preparer | None = None
        # Pages are prepared (decoded, compiled) one at a time, off the event loop.
        self.preparing = ThreadPoolExecutor(1, thread_name_prefix="kairos-prepare")
        if config.cache.enabled:
            self.cache = EdgeCache(config.cache.max_mb * 1024 * 1024,
                                   config.cache.serve_stale_seconds)
            self.revalidator = Revalidator(self.cache, upstream, config.upstream_origin,
                                           config.limits.max_rewrite_bytes, metrics)
            self.preparer = Preparer(transform, config.limits.max_rewrite_bytes, self.cache,
                                     self.preparing)
        self.repeated: RepeatedPages | None = None
        self.repeated_preparer: Preparer | None = None
        if config.cache.repeated_pages_mb and transform is not None:
            self.repeated = RepeatedPages(config.cache.repeated_pages_mb * 1024 * 1024)
            self.repeated_preparer = Preparer(transform, config.limits.max_rewrite_bytes,
                                              self.repeated, self.preparing)
            metrics.gauge_stats("repeated_pages", self.repeated.stats,
                                ("entries", "bytes", "hits", "remembered", "evictions"))
        self.trusted = client_ip.TrustedNetworks(config.server.trusted_proxies)
        self.via = f"1.1 {config.server.via_name}".encode()
        self.origin = config.upstream_origin   # parsed once, compared on every redirect
        self.buffered_pages = 0
        # Exchanges started since the last tick, and those that have seen one (P30).
        self._young: set[_Exchange] = set()
        self._old: set[_Exchange] = set()
        self._tick: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Relay one request; True when it was a page view (a document a browser asked for)."""
        if self.metrics.in_flight >= self.config.server.max_concurrent_requests:
            self.metrics.errors["overloaded"] += 1
            await self._send_error(send, 503, "Kairos is overloaded, retry shortly.",
                                   [(b"retry-after",
                                     str(self.config.server.retry_after_seconds).encode())])
            return False
        self.metrics.in_flight += 1
        exchange = _Exchange(self, scope, receive, send)
        self._young.add(exchange)
        if self._tick is None:
            self._tick = asyncio.get_running_loop().call_later(WATCH_AFTER, self._on_tick)
        try:
            await exchange.run()
        finally:
            self.metrics.in_flight -= 1
            self._young.discard(exchange)
            self._old.discard(exchange)
        return exchange.page_view

    def _on_tick(self) -> None:
        """Exchanges that lived through a whole tick get their disconnect watcher (P30)."""
        reading = set()
        for exchange in self._old:
            if exchange.body_done:
                exchange.start_watcher()
            else:   # still reading its body, which notices a disconnect itself
                reading.add(exchange)
        self._old, self._young = self._young | reading, set()
        self._tick = (asyncio.get_running_loop().call_later(WATCH_AFTER, self._on_tick)
                      if self._old else None)

    async def _send_error(self, send: Send, status: int, text: str,
                          extra: RawHeaders | None = None) -> None:
        self.metrics.count_response(status)
        await respond(send, status, b"text/plain; charset=utf-8", text.encode() + b"\n", extra)


class _Exchange:
    """One request/response pair; holds the per-request state the steps share."""

    def __init__(self, proxy: HttpProxy, scope: Scope, receive: Receive, send: Send) -> None:
        self.proxy = proxy
        self.scope = scope
        self.receive = receive
        self.send = send
        self.method: str = scope["method"]
        self.started = False
        self.finishing = False
        self.disconnected = False
        self.body_done = False       # the request body is read: receive() is free for P30
        self.page_view = is_page_view(scope)   # decided once: profiling and counting use it
        self.outcome = VisitorOutcome(proxy.visitors, proxy.experiments, proxy.metrics,
                                      proxy.record)
        self.upstream_ms = 0.0
        self.keyed: tuple[str, bytes, bytes, RawHeaders] | None = None   # the cache key
        self.generation: int | None = None   # the cache's purge generation at lookup
        self.origin: RawHeaders = []         # the origin's headers, before the visitor's
        self.request_time: float | None = None
        self.sent_bytes = 0
        self.status = 0
        self.task: asyncio.Task[Any] | None = None
        self.watcher: asyncio.Task[None] | None = None

    async def run(self) -> None:
        task = self.task = asyncio.current_task()
        assert task is not None
        try:
            await self._forward()
        except asyncio.CancelledError:
            if not self.disconnected:
                raise
            task.uncancel()
            self.proxy.metrics.errors["client_disconnected"] += 1
        except ClientDisconnected:
            self.proxy.metrics.errors["client_disconnected"] += 1
        except ProxyError as exc:
            self.proxy.metrics.errors[exc.kind] += 1
            if self.started:
                log.warning("aborting response after upstream failure: %s", exc.detail)
            else:
                log.info("%s %s -> %d: %s", self.method, self.scope["path"], exc.status,
                         exc.detail)
                self.status = exc.status
                await self.proxy._send_error(self.send, exc.status, _public_message(exc))
        finally:
            if self.watcher is not None:
                self.watcher.cancel()
            self.outcome.guardrails(self.status, self.upstream_ms, self.sent_bytes)

    def start_watcher(self) -> None:
        assert self.task is not None
        self.watcher = self.task.get_loop().create_task(self._watch_disconnect(self.task))

    async def _watch_disconnect(self, task: asyncio.Task[Any]) -> None:
        """P30: once the body is read, a disconnect cancels the upstream work."""
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                if not self.finishing:
                    self.disconnected = True
                    task.cancel()
                return

    async def _forward(self) -> None:
        proxy, scope = self.proxy, self.scope
        if self.method in _REFUSED_METHODS:
            raise MethodNotAllowed(f"{self.method} is not forwarded")
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        try:
            host = check_request_headers(headers)
        except HeaderError as exc:
            raise BadRequest(str(exc)) from None
        peer = (scope.get("client") or ("0.0.0.0", 0))[0]
        client = client_ip.resolve(peer, scope.get("scheme", "http"), headers, proxy.trusted)
        public_host = client.host or host
        recognition = None
        if proxy.visitors is not None and self.page_view:
            recognition = proxy.visitors.recognise(scope, client,
                                                   count_visit=self.method == "GET")
        self.outcome.recognised(recognition, client.scheme)
        host_text = public_host.decode("latin-1")
        query = scope.get("query_string", b"")
        decided = NOTHING
        if recognition is not None and self.method == "GET":
            decided = self.outcome.decide(recognition.context, host_text, scope["path"],
                                          query.decode("latin-1"))
            if decided.redirect is not None:
                await self._redirect(decided.redirect, query)
                return
        request = None   # built only when a transform may want the page
        if proxy.transform is not None and self.method == "GET":
            request = page.PageRequest(   # positional: keywords cost ~1.6 µs more a view
                self.method, host_text, scope["path"], query.decode("latin-1"),
                tuple(headers), recognition.context if recognition else None, decided)
            wants_page = proxy.transform.wants(request)
        else:
            wants_page = False
        facts = ForwardingFacts(peer_ip=peer, peer_trusted=client.peer_trusted,
                                scheme=client.scheme, host=public_host, via=proxy.via)
        up_headers = upstream_request_headers(headers, facts, strip_conditional=wants_page)
        body, length = self._request_body(headers)
        target = scope.get("raw_path") or scope["path"].encode()
        if query:
            if PREVIEW_PARAM.encode() in query:   # the origin never sees preview tokens
                query = without_param(query, PREVIEW_PARAM.encode())
            if query:
                target = target + b"?" + query
        cache, found = proxy.cache, None
        if cache is not None and request is not None and wants_page and body is None:
            self.keyed = (client.scheme, public_host, target, up_headers)
            found = cache.lookup(client.scheme, public_host, target, up_headers, time.time())
            if found.entry is not None and found.state is not CacheState.MUST_REVALIDATE:
                if found.start_revalidation and proxy.revalidator is not None:
                    proxy.revalidator.later(found.entry, *self.keyed)
                await self._send_cached(found.entry, request)
                return
            self.generation = found.generation
        sent_at = time.time()
        stale = found.entry if found is not None else None
        try:
            response = await self._send_upstream(target, up_headers, body, length, stale)
        except ProxyError:
            if stale is not None and cache is not None and cache.stale_on_error(stale,
                                                                                time.time()):
                await self._send_cached(stale, request)   # type: ignore[arg-type]
                return
            raise
        try:
            if stale is not None and cache is not None and request is not None:
                if response.status == 304:
                    origin = self._origin_headers(response, client.scheme, public_host)
                    entry = cache.refresh(stale, up_headers, origin, time.time(),
                                          request_time=sent_at)
                    if entry is not None:
                        await self._send_cached(entry, request)
                        return
                    await response.aclose()   # another validator: fetch the page afresh
                    response = await self._send_upstream(target, up_headers, None, None, None)
                elif response.status >= 500 and cache.stale_on_error(stale, time.time()):
                    await self._send_cached(stale, request)
                    return
            self.request_time = sent_at
            out = self._response_headers(response, client.scheme, public_host)
            if cache is not None and self.method not in ("GET", "HEAD"):
                cache.invalidate_after(self.method, response.status, client.scheme,
                                       public_host, target)
            if request is not None and wants_page and page.may_rewrite(
                    response.status, out, proxy.config.limits.max_rewrite_bytes):
                await self._send_page(response, out, request)
            else:
                await self._stream(response, out)
        finally:
            await response.aclose()

    async def _send_upstream(self, target: bytes, headers: RawHeaders,
                             body: AsyncIterator[bytes] | None, length: int | None,
                             stale: CacheEntry | None) -> UpstreamResponse:
        """The origin's answer; with ``stale``, a conditional request for that page."""
        if stale is not None:
            headers = [*headers, *conditional_headers(stale)]
        t0 = time.perf_counter()
        response = await self.proxy.upstream.send(UpstreamRequest(
            method=self.method, target=target, headers=headers, body=body,
            content_length=length,
        ))
        elapsed = time.perf_counter() - t0
        self.upstream_ms = elapsed * 1000.0
        self.proxy.metrics.upstream_latency.observe(elapsed)
        return response

    async def _send_cached(self, entry: CacheEntry, request: page.PageRequest) -> None:
        """A stored page, personalised for this visitor like a fresh one: decoded and
        compiled once per rule set, so a view is context, variants and a splice."""
        headers = self._for_visitor(served_headers(entry, time.time()), 200)
        ready = None
        if self.proxy.preparer is not None:
            ready = self.proxy.preparer.ready(entry, request.host, request.path)
        if ready is None:
            await self._deliver(200, headers, entry.body, request)
        else:
            await self._deliver(200, headers, entry.body,
                                request.with_compiled(ready.compiled),
                                ready.decoded)

    async def _redirect(self, target: str, query: bytes) -> None:
        """A split-URL arm: 302 to the file's target, keeping the visitor's query (S7)."""
        kept = without_param(query, PREVIEW_PARAM.encode()).decode("latin-1")
        location = target if not kept else target + ("&" if "?" in target else "?") + kept
        headers: RawHeaders = [(b"location", location.encode("latin-1")),
                               (b"cache-control", b"private, no-store"),
                               (b"content-length", b"0"), (b"date", http_date())]
        if self.outcome.set_cookie is not None:
            headers.append((b"set-cookie", self.outcome.set_cookie))
        await self._start(302, headers)
        await self._finish()

    def _request_body(self, headers: RawHeaders) -> tuple[AsyncIterator[bytes] | None, int | None]:
        """(stream, Content-Length): no body at all unless the client framed one (P13)."""
        length_value = first(headers, b"content-length")
        chunked = first(headers, b"transfer-encoding") is not None
        if length_value is None and not chunked:
            self.body_done = True
            return None, None
        length = int(length_value) if length_value is not None and not chunked else None
        if length == 0:
            self.body_done = True
            return None, 0
        return self._body_chunks(), length

    async def _body_chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise ClientDisconnected()
            if chunk := message.get("body", b""):
                yield chunk
            if not message.get("more_body", False):
                break
        self.body_done = True

    def _response_headers(self, response: UpstreamResponse, scheme: str,
                          public_host: bytes) -> RawHeaders:
        self.origin = self._origin_headers(response, scheme, public_host)
        return self._for_visitor(list(self.origin), response.status)

    def _origin_headers(self, response: UpstreamResponse, scheme: str,
                        public_host: bytes) -> RawHeaders:
        """The origin's headers as any visitor may get them (what the cache keeps)."""
        if response.dropped_headers:
            self.proxy.metrics.errors["upstream_invalid_header"] += response.dropped_headers
        out = response_headers(response.headers)
        out = rewrite_origin_urls(out, self.proxy.origin,
                                  scheme.encode() + b"://" + public_host)
        if first(out, b"date") is None:  # exactly one Date (P10); uvicorn adds none
            out.append((b"date", http_date()))
        return out

    def _for_visitor(self, out: RawHeaders, status: int) -> RawHeaders:
        """This visitor's response headers: the origin's goal events taken out (and
        counted), the visitor cookie in (and the page private)."""
        if first(out, EVENT_HEADER) is not None:
            values = [v for n, v in out if n == EVENT_HEADER]
            out = [(n, v) for n, v in out if n != EVENT_HEADER]
            if status < 500:
                self.outcome.origin_events(values, self.scope["headers"], self.page_view)
        self.outcome.on_status(status)   # an error page counts nothing
        if self.outcome.set_cookie is not None:
            out = make_private(out)
            out.append((b"set-cookie", self.outcome.set_cookie))   # its own line (P9)
        return out

    async def _start(self, status: int, headers: RawHeaders) -> None:
        self.started = True
        self.status = status
        self.outcome.count()
        self.proxy.metrics.count_response(status)
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def _finish(self, body: bytes = b"") -> None:
        self.finishing = True
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def _stream(self, response: UpstreamResponse, headers: RawHeaders) -> None:
        await self._start(response.status, headers)
        if self.method == "HEAD":  # P21: never a body
            await self._finish()
            return
        async for chunk in response.chunks():
            self.sent_bytes += len(chunk)
            await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        await self._finish()

    async def _send_page(self, response: UpstreamResponse, headers: RawHeaders,
                         request: page.PageRequest) -> None:
        proxy = self.proxy
        limit = proxy.config.limits.max_rewrite_bytes
        if proxy.buffered_pages >= proxy.config.limits.max_buffered_pages:
            proxy.metrics.errors["rewrite_skipped_busy"] += 1   # F9: memory budget
            await self._stream(response, headers)
            return
        proxy.buffered_pages += 1
        try:
            chunks: list[bytes] = []
            size = 0
            stream = response.chunks()
            async for chunk in stream:   # an upstream failure here is a 502, never short (P25)
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    proxy.metrics.errors["rewrite_skipped_size"] += 1
                    await self._start(response.status, headers)
                    await self.send({"type": "http.response.body", "body": b"".join(chunks),
                                     "more_body": True})
                    async for rest in stream:
                        await self.send({"type": "http.response.body", "body": rest,
                                         "more_body": True})
                    await self._finish()
                    return
        finally:
            proxy.buffered_pages -= 1
        body = b"".join(chunks)
        del chunks   # not held twice while the page is rewritten and sent (50 misses at once)
        entry = None
        if proxy.cache is not None and self.keyed is not None:
            entry = proxy.cache.store(*self.keyed, response.status, self.origin, body,
                                      time.time(), request_time=self.request_time,
                                      generation=self.generation)
            if entry is not None and proxy.preparer is not None:   # compile before it is hit
                proxy.preparer.ready(entry, request.host, request.path)
        if entry is None and proxy.repeated is not None:   # not kept: parsed once if repeated
            same = proxy.repeated.find(request.host, request.path, self.origin, body)
            ready = None if same is None or proxy.repeated_preparer is None else \
                proxy.repeated_preparer.ready(same, request.host, request.path)
            if ready is not None:
                await self._deliver(response.status, headers, body,
                                    request.with_compiled(ready.compiled),
                                    ready.decoded)
                return
        await self._deliver(response.status, headers, body, request)

    async def _deliver(self, status: int, headers: RawHeaders, body: bytes,
                       request: page.PageRequest, decoded: page.Decoded | None = None) -> None:
        """A complete page: personalised if the transform changes it, else as it is."""
        result = self._rewrite(body, headers, request, decoded)
        if result is None:
            self.sent_bytes = len(body)
            await self._start(status, headers)
            await self._finish(body)
        else:
            self.sent_bytes = len(result.body)
            await self._start(status, result.headers)
            await self._finish(result.body)

    def _rewrite(self, body: bytes, headers: RawHeaders, request: page.PageRequest,
                 decoded: page.Decoded | None = None) -> page.Rewritten | None:
        assert self.proxy.transform is not None
        try:
            return page.rewrite(body, headers, request, self.proxy.transform,
                                self.proxy.config.limits.max_rewrite_bytes, decoded)
        except (codings.DecodeError, codings.TooLarge, UnicodeError) as exc:
            self.proxy.metrics.errors["rewrite_skipped_undecodable"] += 1
            log.info("page %s passed through unchanged: %s", request.path, exc)
        except Exception:  # F5: a transform bug must never cost the visitor the page
            self.proxy.metrics.errors["rewrite_failed"] += 1
            log.exception("rewrite of %s failed; original page served", request.path)
        return None


def without_param(query: bytes, name: bytes) -> bytes:
    """``query`` without the ``name=...`` pairs, everything else byte for byte."""
    return b"&".join(p for p in query.split(b"&") if p.split(b"=", 1)[0] != name)


def _public_message(exc: ProxyError) -> str:
    """What the visitor reads: the status's meaning, never internals or tracebacks."""
    if isinstance(exc, UpstreamError):
        return {504: "The site did not answer in time."}.get(exc.status,
                                                             "The site could not be reached.")
    return exc.detail
