"""Building the Redis client, and the one place where Redis errors are explained.

redis-py's defaults suit a batch job, not a proxy: it retries a failed call with exponential
backoff (about 3.5 s per call with Redis down, more than 6 s with Redis frozen) and waits
without a socket timeout. Here every client has short connect/read timeouts and no retries:
the store's own loop retries on its schedule, and nothing ever waits on Redis per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

StoreClient = Redis | RedisCluster

# Reply prefixes of errors that go away by themselves or by an operator's fix, while the
# events wait: out of memory, failover in progress, loading, persistence failing, ACLs.
_TRANSIENT_REPLIES = ("OOM", "READONLY", "MASTERDOWN", "LOADING", "BUSY", "TRYAGAIN",
                      "CLUSTERDOWN", "NOAUTH", "WRONGPASS", "NOPERM", "MISCONF", "NOREPLICAS")

# redis-py reports some refused logins as a plain ConnectionError; recognise them by text.
_AUTH_WORDS = ("NOAUTH", "WRONGPASS", "NOPERM", "username-password", "invalid password",
               "Authentication required")


def closed_under_us(exc: BaseException) -> bool:
    """uvloop's report of a write on a connection that was already closed (a reset right
    after connecting, say): a RuntimeError, not the ConnectionError asyncio's own loop gives,
    and redis-py lets it through. It is a lost connection, nothing else."""
    return isinstance(exc, RuntimeError) and "handler is closed" in str(exc)


class StoreUnavailable(Exception):
    """Redis could not be reached or refused an operation; the message says what and where."""


def connect(url: str, *, timeout: float, cluster: bool = False) -> StoreClient:
    """A client for ``url`` (redis://, rediss://, unix://), or a cluster client when
    ``cluster`` is set or ``url`` lists several comma-separated nodes.

    Nothing is connected yet: connections are opened on first use, so this never fails
    because Redis is down. A malformed URL raises ValueError naming it.
    """
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise ValueError("store URL is empty: expected redis://, rediss:// or unix://")
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    try:
        if not cluster and len(urls) == 1:
            return Redis.from_url(urls[0], **common)
        return _cluster(urls, common)
    except (ValueError, RedisClusterException) as exc:
        raise ValueError(f"store URL {redact(url)} is not usable: {exc}") from None


def _cluster(urls: list[str], common: dict[str, Any]) -> RedisCluster:
    """Cluster client seeded with every listed node; credentials and TLS from the first."""
    nodes = []
    for u in urls:
        parts = parse_url(u)
        if "path" in parts:
            raise ValueError("a unix:// socket cannot be a Redis Cluster node")
        nodes.append(ClusterNode(parts.get("host", "localhost"), parts.get("port", 6379)))
    first = parse_url(urls[0])
    ssl = first.pop("connection_class", None) is SSLConnection
    first.pop("host", None)
    first.pop("port", None)
    first.pop("db", None)
    return RedisCluster(startup_nodes=nodes, ssl=ssl, **first, **common)


def forget_topology(client: StoreClient) -> None:
    """Make a cluster client read the cluster's slot map again before its next command.

    After a failover the slots of the dead master belong to its promoted replica, but
    redis-py's cluster *pipeline* does not notice: with retries off (see above) a pipeline
    to the dead master fails with a connection error without marking the slot map stale,
    and every later flush goes to the same dead address, forever (seen with redis-py 8.1
    against a real 3+3 Valkey cluster, tests/test_cluster.py). Single commands mark it
    stale themselves (redis-py sets ``_initialize`` on a connection error); this does the
    same for the store's pipelines. A no-op for a single-node client.
    """
    if isinstance(client, RedisCluster):
        client._initialize = True   # redis-py's own flag: initialize() before the next command


def being_cancelled() -> bool:
    """Is the current task being cancelled? redis-py can turn a task's cancellation into a
    connection error of its own, so a loop that catches errors must also ask this."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    out = []
    for u in url.split(","):
        parts = urlsplit(u.strip())
        if parts.password is not None:
            host = parts.netloc.rpartition("@")[2]
            user = parts.username or ""
            u = urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
        out.append(u.strip())
    return ",".join(out)


def is_transient(exc: BaseException) -> bool:
    """True when retrying later may succeed (Redis down, slow, full, failing over, or
    refusing our credentials until someone fixes them); False for errors that would fail
    the same way forever (a bug in a command or script)."""
    if isinstance(exc, ConnectionError | RedisTimeoutError | TimeoutError | OSError |
                  OutOfMemoryError | ReadOnlyError | ClusterDownError | TryAgainError |
                  NoPermissionError | BusyLoadingError | RedisClusterException) or \
            closed_under_us(exc):
        return True
    if isinstance(exc, ResponseError):
        return str(exc).lstrip("-").startswith(_TRANSIENT_REPLIES)
    return False


def explain(exc: BaseException, where: str) -> str:
    """One line saying what went wrong with Redis at ``where`` (a redacted URL and the
    operation), in words an operator can act on."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, AuthenticationError | AuthorizationError) or any(
        word in detail for word in _AUTH_WORDS
    ):
        hint = "credentials refused (check the user and password in store.url)"
    elif isinstance(exc, RedisTimeoutError | TimeoutError | socket.timeout):
        hint = "no answer in time (Redis frozen, overloaded or unreachable)"
    elif isinstance(exc, OutOfMemoryError) or detail.startswith("OOM"):
        hint = "Redis is out of memory (maxmemory reached, writes refused)"
    elif isinstance(exc, BusyLoadingError) or detail.startswith("LOADING"):
        hint = "Redis is still loading its data after a restart"
    elif isinstance(exc, ConnectionError | OSError):
        hint = "cannot connect (Redis down or wrong address)"
    elif closed_under_us(exc):
        hint = "connection lost (Redis restarted, or the network reset it)"
    elif isinstance(exc, RedisClusterException | ClusterDownError):
        hint = "cluster unavailable"
    else:
        hint = "Redis refused the command"
    return f"{where}: {hint}: {type(exc).__name__}: {detail}"


@contextlib.contextmanager
def translated(where: str) -> Iterator[None]:
    """Turn any Redis failure inside the block into StoreUnavailable with an explanation.

    For the read paths (results, weights) that are not on the request path and want one
    exception type to handle::

        with translated(f"reading results from {redact(url)}"):
            counts = await store.redis.mget(keys)
    """
    try:
        yield
    except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
        raise StoreUnavailable(explain(exc, where)) from exc
    except RuntimeError as exc:
        if not closed_under_us(exc):
            raise
        raise StoreUnavailable(explain(exc, where)) from exc
