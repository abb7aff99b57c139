"""The Store: what the proxy calls. Recording never waits for Redis (F1, F2).

``record()`` appends to a bounded deque and returns: no I/O, no await, no exception. When the
deque is full the oldest event is dropped and counted. A background task takes up to
``flush_batch_size`` events every ``flush_interval``, merges them into a batch and applies it
(batch.py). A batch that fails is kept, unchanged, and retried before anything newer, so a
short outage loses nothing and a batch that did reach Redis is never counted twice.

Memory bound: ``event_buffer_size`` events, plus the one kept batch, which is merged and so
holds one entry per distinct counter (a handful), not one per event.

Health: ``state`` is "ok" when the last ping (every second) and the last flush both worked,
"degraded" otherwise. It is a plain attribute read; nothing awaits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from proxy.config import StoreConfig
from proxy.store import batch as batches
from proxy.store.client import (
    StoreClient,
    being_cancelled,
    connect,
    explain,
    forget_topology,
    is_transient,
    redact,
    translated,
)
from proxy.store.keys import DEFAULT_PREFIX, Keyspace

log = logging.getLogger("kairos.store")

OK = "ok"
DEGRADED = "degraded"
PING_INTERVAL = 1.0
DROP_REPORT_INTERVAL = 10.0


@dataclass(frozen=True, slots=True)
class StoreStats:
    """A snapshot for /_kairos/health and the logs."""

    buffered: int       # events waiting: in the buffer plus in the kept (failed) batch
    dropped: int        # events lost: buffer overflow, invalid events, refused batches
    flushed: int        # events counted in Redis
    flush_errors: int   # failed flush attempts
    state: str          # "ok" or "degraded"
    last_error: str     # what last went wrong, and where; "" if nothing yet
    replayed: int       # groups Redis had already applied when a batch was retried


class Store:
    """Buffered, never-blocking event counting in Redis. Create with ``await Store.open()``."""

    def __init__(self, config: StoreConfig, client: StoreClient, where: str,
                 keyspace: Keyspace) -> None:
        self._config = config
        self._client = client
        self._where = where
        self._keyspace = keyspace
        self._buffer: deque[Any] = deque(maxlen=config.event_buffer_size)
        self._writer = uuid.uuid4().hex[:16]
        self._seq = 0
        self._kept: batches.Batch | None = None
        self._lock = asyncio.Lock()
        # Generous enough for a pipeline that needs a connect and a reply, short enough
        # that a hung client never stalls the loop for long.
        self._deadline = max(1.0, 3 * config.socket_timeout)
        self._dropped = self._flushed = self._flush_errors = self._replayed = 0
        self._ping_ok = self._flush_ok = True
        self._last_error = ""
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._reported_drops = 0
        self._last_drop_report = 0.0

    @classmethod
    async def open(cls, config: StoreConfig, url: str, *,
                   prefix: str = DEFAULT_PREFIX) -> Store:
        """Connect and start the flusher and health tasks. Redis being down is not an error:
        the store starts "degraded" and catches up when Redis is back. A malformed URL or
        prefix raises ValueError."""
        client = connect(url, timeout=config.socket_timeout,
                         cluster=config.cluster or "," in url)
        store = cls(config, client, redact(url), Keyspace(prefix))
        await store._ping()
        if store.state == OK:
            log.info("store: connected to %s", store._where)
        flusher = store._forever(store._flush_tick, config.flush_interval)
        health = store._forever(store._ping, PING_INTERVAL)
        store._tasks = [asyncio.create_task(flusher, name="kairos-store-flush"),
                        asyncio.create_task(health, name="kairos-store-health")]
        return store

    # -- request path ---------------------------------------------------------------------

    def record(self, event: object) -> None:
        """Queue ``event`` for counting. O(1), never awaits, never raises."""
        try:
            if self._closed:
                self._dropped += 1
                return
            buffer = self._buffer
            if len(buffer) == buffer.maxlen:
                self._dropped += 1  # a full deque discards its oldest item on append
            buffer.append(event)
        except Exception:  # pragma: no cover - deque.append does not fail; belt and braces
            self._dropped += 1

    @property
    def state(self) -> str:
        return OK if self._ping_ok and self._flush_ok else DEGRADED

    def stats(self) -> StoreStats:
        kept = self._kept.events if self._kept is not None else 0
        return StoreStats(len(self._buffer) + kept, self._dropped, self._flushed,
                          self._flush_errors, self.state, self._last_error, self._replayed)

    @property
    def redis(self) -> StoreClient:
        """The client, for read paths off the request path (results, weights). Wrap calls in
        ``proxy.store.client.translated(...)`` to get StoreUnavailable with a clear message."""
        return self._client

    # -- lifecycle ------------------------------------------------------------------------

    async def read_signals(self) -> dict[Any, Any]:
        """The outside-signals hash; raises StoreUnavailable. Background use only."""
        with translated(f"reading signals from {self._where}"):
            return dict(await self._client.hgetall(self._keyspace.signals()))

    async def flush(self) -> bool:
        """Flush everything buffered now; False if Redis failed (events are kept)."""
        while self._kept is not None or self._buffer:
            if not await self._flush_once():
                return False
        self._recover(ping=False)  # nothing kept: no flush failure stands any more
        return True

    async def close(self, timeout: float = 2.0) -> None:
        """Stop the tasks, flush what is left within ``timeout`` (retrying while Redis fails),
        then close the client. Events still unflushed are counted as dropped and logged."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:   # bounded, whatever a task does with its cancellation
            await asyncio.wait(self._tasks, timeout=1.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not await self.flush():
                    await asyncio.sleep(0.05)
        left = self.stats().buffered
        if left:
            self._dropped += left
            log.warning("store: closing with %d events not counted: %s", left,
                        self._last_error or "flush did not finish in time")
        self._buffer.clear()
        self._kept = None
        with contextlib.suppress(Exception):
            await self._client.aclose()

    # -- background -----------------------------------------------------------------------

    async def _forever(self, step: Any, interval: float) -> None:
        """Run ``step`` every ``interval`` until cancelled; an exception is logged, never fatal.

        redis-py can turn the task's cancellation into a connection error of its own, which
        the step then records as Redis being away: without the check below the loop would go
        on sleeping and stepping, and ``close()`` (which cancels once and waits) would wait
        forever. Seen as a shutdown hanging in ``close()`` with a flush in flight."""
        while True:
            await asyncio.sleep(interval)
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                if not being_cancelled():
                    log.exception("store: background %s failed; continuing", step.__name__)
            if being_cancelled():
                return

    async def _flush_tick(self) -> None:
        await self.flush()
        self._report_drops()

    async def _flush_once(self) -> bool:
        async with self._lock:
            if self._kept is None:
                if not self._buffer:
                    return True
                self._kept = self._take()
            kept = self._kept
            try:
                async with asyncio.timeout(self._deadline):
                    applied = await batches.apply(self._client, kept, self._keyspace,
                                                  self._writer)
            except Exception as exc:
                self._flush_errors += 1
                if is_transient(exc):
                    forget_topology(self._client)   # a cluster may have failed over
                    self._degrade(exc, f"flush to {self._where} ({kept.events} events kept)",
                                  ping=False)
                else:
                    self._kept = None
                    self._dropped += kept.events
                    self._degrade(exc, f"flush to {self._where} (batch of {kept.events} "
                                       "events dropped: retrying cannot help)",
                                  ping=False, level=logging.ERROR)
                return False
            self._kept = None
            self._flushed += kept.events
            self._replayed += applied.replayed_groups
            if applied.failed_commands:
                log.error("store: Redis refused %d commands of batch %d at %s (wrong key type?)",
                          applied.failed_commands, kept.seq, self._where)
            self._recover(ping=False)
            return True

    def _take(self) -> batches.Batch:
        n = min(self._config.flush_batch_size, len(self._buffer))
        popleft = self._buffer.popleft
        events = [popleft() for _ in range(n)]
        self._seq += 1
        batch, invalid = batches.build(events, self._keyspace, self._seq)
        self._dropped += invalid
        return batch

    async def _ping(self) -> None:
        try:
            async with asyncio.timeout(self._deadline):
                await self._client.ping()
        except Exception as exc:
            self._degrade(exc, f"ping {self._where}", ping=True)
            return
        self._recover(ping=True)

    def _degrade(self, exc: BaseException, where: str, *, ping: bool,
                 level: int = logging.WARNING) -> None:
        """Record a failure; log it when it turns the state to degraded (not every second)."""
        was = self.state
        if ping:
            self._ping_ok = False
        else:
            self._flush_ok = False
        self._last_error = explain(exc, where)
        if was == OK or level >= logging.ERROR:
            log.log(level, "store degraded: %s", self._last_error)

    def _recover(self, *, ping: bool) -> None:
        was = self.state
        if ping:
            self._ping_ok = True
        else:
            self._flush_ok = True
        if was == DEGRADED and self.state == OK:
            log.info("store: %s works again", self._where)

    def _report_drops(self) -> None:
        now = time.monotonic()
        if self._dropped > self._reported_drops and now - self._last_drop_report > \
                DROP_REPORT_INTERVAL:
            log.warning("store: %d events dropped so far (buffer of %d full or events "
                        "refused); last error: %s", self._dropped, self._buffer.maxlen,
                        self._last_error or "none")
            self._reported_drops = self._dropped
            self._last_drop_report = now
