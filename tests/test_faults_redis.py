"""F1/F2: Redis faults, through the real proxy (uvicorn in a thread) and a real Valkey.

Each test gets its own Valkey (the faults are destructive: stopped, frozen, paused, full,
password changed) reached through a ``FaultProxy`` on TCP, so that the network itself can
also be made slow or flaky. Kairos runs the real rules engine with one experiment, a small
event buffer and short Redis timeouts. For every fault the same things must hold:

* every page is served, each visitor keeps its arm, and new visitors get one;
* ``/_kairos/health`` says "degraded" while the fault lasts and "ok" after it;
* events wait in the buffer up to its cap, then the oldest are dropped, and every drop is
  counted in ``/_kairos/metrics``;
* after the fault, counting resumes and nothing is counted twice: the events Valkey holds
  are exactly the events Kairos reports flushed, and flushed + dropped is exactly what the
  pages recorded (one page view and one guardrail per page, one exposure per new visitor).

The frozen case (SIGSTOP) has its own test in test_experiments_proxy.py for the arms and the
exact count; here it also gets the health, the cap and the drop count.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from proxy.store.embedded import EmbeddedValkey
from proxy.store.events import utc_day
from proxy.store.keys import Keyspace

from .conftest import RunningKairos, start_kairos
from .fault_proxy import FaultProxy
from .test_experiments_proxy import PAGE, arm_of, experiment_toml, rules_folder
from .upstream_server import Upstream

BUFFER_CAP = 24        # store.event_buffer_size: small, so that a short fault overflows it
BATCH = 8              # store.flush_batch_size: the failed batch kept besides the buffer
KEYS = Keyspace()
PASSWORD = "kairos-valkey-password"


# -- a site: Kairos, its own Valkey, a fault proxy between them, some visitors -------------

@dataclass
class Visitor:
    client: httpx.Client
    arm: str | None = None


@dataclass
class Site:
    kairos: RunningKairos
    valkey: EmbeddedValkey
    network: FaultProxy
    exp_id: str
    password: str | None
    visitors: list[Visitor] = field(default_factory=list)
    pages: int = 0
    exposures: int = 0

    @property
    def recorded(self) -> int:
        """Events the pages so far handed to the store: a page view and a guardrail per
        page, an exposure per visitor's first page."""
        return 2 * self.pages + self.exposures

    def valkey_client(self) -> redis.Redis:
        """Straight to Valkey, not through the fault proxy, for the test's own reads."""
        return redis.Redis.from_url(self.valkey.url, password=self.password,
                                    decode_responses=True, socket_timeout=5)

    def new_visitors(self, n: int) -> list[Visitor]:
        fresh = [Visitor(httpx.Client(base_url=self.kairos.url, headers=PAGE, timeout=5))
                 for _ in range(n)]
        self.visitors += fresh
        return fresh

    def browse(self, visitors: list[Visitor]) -> None:
        """One page each: served, and with the visitor's arm, whatever Redis does."""
        for v in visitors:
            arm = arm_of(v.client.get("/html"))
            if v.arm is None:
                v.arm = arm
                self.exposures += 1
            assert arm == v.arm, "a visitor changed arm"
            self.pages += 1

    def counted_in_valkey(self) -> int:
        """Every event Valkey holds: page views, exposures (units per arm) and guardrails
        (requests per arm), read from the keys of proxy/store/KEYSPACE.md."""
        day = utc_day()
        with self.valkey_client() as client:
            pageviews = int(client.get(KEYS.pageviews(day)) or 0)
            units = client.hgetall(KEYS.units(self.exp_id, day))
            guardrails = client.hgetall(KEYS.guardrails(self.exp_id, day))
        exposures = sum(int(v) for k, v in units.items() if ":" not in k)
        requests = sum(int(v) for k, v in guardrails.items() if k.endswith(":requests"))
        return pageviews + exposures + requests


def store_metrics(site: Site) -> dict[str, int]:
    """events_buffered, events_dropped_total, events_flushed_total from /_kairos/metrics."""
    text = httpx.get(site.kairos.url + "/_kairos/metrics").text
    return {name: int(value) for name, value in
            re.findall(r"^kairos_(events_\w+)\{[^}]*\} (\d+)$", text, re.MULTILINE)}


def health(site: Site) -> str:
    body = httpx.get(site.kairos.url + "/_kairos/health").json()
    assert body["status"] == body["store"]["state"], body   # the origin is fine throughout
    return str(body["status"])


def wait_until(check: Callable[[], Any], what: str, timeout: float = 6.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def settled(site: Site) -> bool:
    """Health ok and nothing waiting: every recorded event is flushed or dropped."""
    numbers = store_metrics(site)
    return health(site) == "ok" and numbers["events_buffered"] == 0 and \
        numbers["events_flushed_total"] + numbers["events_dropped_total"] == site.recorded


@pytest.fixture()
def open_site(upstream: Upstream, tmp_path: Path) -> Iterator[Callable[..., Site]]:
    sites: list[Site] = []

    def open_site(password: str | None = None) -> Site:
        valkey = EmbeddedValkey(tmp_path / "valkey", tcp_port=0)
        valkey.start()
        port = int(valkey.url.rpartition(":")[2])
        if password:
            with redis.Redis(port=port) as client:
                client.config_set("requirepass", password)
        network = FaultProxy("127.0.0.1", port).start()
        exp_id = f"headline-{uuid.uuid4().hex[:8]}"
        folder = rules_folder(tmp_path, experiments=experiment_toml(exp_id))
        auth = f":{password}@" if password else ""
        kairos = start_kairos(upstream.url, f"redis://{auth}{network.address}", transform=None,
                              **{"rules.folder": str(folder),
                                 "store.socket_timeout": 0.2,
                                 "store.event_buffer_size": BUFFER_CAP,
                                 "store.flush_batch_size": BATCH})
        site = Site(kairos, valkey, network, exp_id, password)
        sites.append(site)
        return site

    yield open_site
    for site in sites:
        for v in site.visitors:
            v.client.close()
        site.kairos.stop()
        site.network.stop()
        site.valkey.stop()


# -- the faults: each a context manager, in force inside the block ------------------------

@contextmanager
def stopped(site: Site) -> Iterator[None]:
    port = int(site.valkey.url.rpartition(":")[2])
    site.valkey.stop()
    try:
        yield
    finally:   # same folder (the AOF keeps what was counted), same port
        site.valkey = EmbeddedValkey(site.valkey.data_dir, tcp_port=port)
        site.valkey.start()


@contextmanager
def frozen(site: Site) -> Iterator[None]:
    os.kill(site.valkey.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(site.valkey.pid, signal.SIGCONT)


@contextmanager
def slow(site: Site) -> Iterator[None]:
    """Every packet between Kairos and Valkey waits longer than Kairos's socket timeout: the
    batch reaches Valkey and runs, but the answer comes too late. The retry must not count
    it again."""
    site.network.delay(0.4)
    try:
        yield
    finally:
        site.network.passthrough()


@contextmanager
def paused(site: Site) -> Iterator[None]:
    """CLIENT PAUSE ALL holds every command of every client, CLIENT UNPAUSE included
    (Valkey 9), so the pause is given a length and the fault ends when it runs out."""
    with site.valkey_client() as client:
        client.execute_command("CLIENT", "PAUSE", 3000, "ALL")
        try:
            yield
        finally:
            client.ping()   # held until the pause is over


@contextmanager
def out_of_memory(site: Site) -> Iterator[None]:
    with site.valkey_client() as client:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
        try:
            yield
        finally:
            client.config_set("maxmemory", 0)


@contextmanager
def refusing_auth(site: Site) -> Iterator[None]:
    """Valkey's password changes under Kairos (set where there was none, or rotated):
    connected clients keep their login, so they are killed; Kairos's reconnects are
    refused (NOAUTH or WRONGPASS)."""
    with site.valkey_client() as client:
        client.config_set("requirepass", "not-what-kairos-has")
        client.client_kill_filter(_type="normal", skipme=True)
        try:
            yield
        finally:
            client.config_set("requirepass", site.password or "")


FAULTS: dict[str, tuple[Callable[[Site], AbstractContextManager[None]], str | None]] = {
    "stopped": (stopped, None),
    "frozen": (frozen, None),
    "slow": (slow, None),
    "paused": (paused, None),
    "out_of_memory": (out_of_memory, None),
    "requirepass_set_after_connect": (refusing_auth, None),
    "password_rotated": (refusing_auth, PASSWORD),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_pages_keep_their_arm_health_degrades_drops_are_counted_and_nothing_twice(
        open_site: Callable[..., Site], fault: str) -> None:
    begin, password = FAULTS[fault]
    site = open_site(password)
    regulars = site.new_visitors(4)
    site.browse(regulars)
    wait_until(lambda: settled(site), "the first pages are counted")
    before = store_metrics(site)
    assert before["events_dropped_total"] == 0
    assert site.counted_in_valkey() == site.recorded
    recorded_before = site.recorded

    with begin(site):
        for _ in range(4):                  # more events than the buffer holds
            site.browse(regulars)
        newcomers = site.new_visitors(4)    # get an arm without Redis, keep it after
        site.browse(newcomers)
        wait_until(lambda: health(site) == "degraded", "health says degraded")
        during = store_metrics(site)
        in_fault = site.recorded - recorded_before
        dropped = during["events_dropped_total"]
        assert in_fault > BUFFER_CAP + BATCH
        assert during["events_flushed_total"] == before["events_flushed_total"]
        assert BUFFER_CAP <= during["events_buffered"] <= BUFFER_CAP + BATCH   # full, capped
        assert dropped == in_fault - during["events_buffered"]   # the rest: dropped, counted
        assert health(site) == "degraded"

    wait_until(lambda: settled(site), "health ok and the buffer flushed after the fault")
    after = store_metrics(site)
    assert after["events_dropped_total"] == dropped          # nothing more lost on the way
    assert site.counted_in_valkey() == after["events_flushed_total"]   # none counted twice
    site.browse(regulars + newcomers)                         # counting goes on as before
    wait_until(lambda: settled(site), "pages after the fault are counted")
    assert site.counted_in_valkey() == store_metrics(site)["events_flushed_total"]
    assert site.counted_in_valkey() == site.recorded - dropped


def test_flapping_redis_loses_nothing_it_does_not_count_and_counts_nothing_twice(
        open_site: Callable[..., Site]) -> None:
    """The network to Valkey resets every connection for 2 s, works for 2 s, resets again.
    While it works it has 60 ms of latency each way (a Redis in another zone), so a flush is
    usually on the wire when the reset comes: a batch that ran but whose answer was cut off
    is retried, and must not count twice. Pages never notice."""
    site = open_site()
    regulars = site.new_visitors(3)
    site.browse(regulars)
    wait_until(lambda: settled(site), "the first pages are counted")
    seen_degraded = False
    for phase in ("pass", "reset", "pass", "reset"):
        site.network.reset() if phase == "reset" else site.network.delay(0.06)
        phase_ends = time.monotonic() + 2.0
        while time.monotonic() < phase_ends:
            site.browse(regulars)
            seen_degraded |= phase == "reset" and health(site) == "degraded"
            time.sleep(0.05)   # about 20 pages a second, not a load test
    site.network.passthrough()
    assert seen_degraded, "health never said degraded while connections were being reset"
    wait_until(lambda: settled(site), "health ok and the buffer flushed after the flapping")
    assert site.counted_in_valkey() == store_metrics(site)["events_flushed_total"]


def test_a_write_on_a_connection_uvloop_already_closed_is_redis_unavailable() -> None:
    """What the flapping test met: Valkey's connection reset right after the connect, and
    uvloop reports the next write as a RuntimeError, not a ConnectionError. The store must
    keep the batch and retry (transient), and the background readers must see
    StoreUnavailable, not a crash with a traceback."""
    import asyncio

    import uvloop

    from proxy.store.client import StoreUnavailable, is_transient, translated

    async def write_after_close() -> RuntimeError:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        async with server:
            _, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            writer.transport.abort()
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError) as raised:
                writer.writelines([b"PING\r\n"])
            return raised.value

    error = uvloop.run(write_after_close())
    assert is_transient(error)
    with pytest.raises(StoreUnavailable, match="connection lost"), translated("reading"):
        raise error
    with pytest.raises(RuntimeError), translated("reading"):   # other RuntimeErrors: bugs
        raise RuntimeError("something else")
