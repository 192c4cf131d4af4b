"""Connections to Redis, shared by the counter store and the API key store: URLs (single server or
cluster), a client that retries nothing, and the cluster discovery and in-flight gate every call
goes through."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    #: A client of one server or of a cluster: callers use only commands both have.
    AnyRedis = Redis | RedisCluster

__all__ = [
    "CLUSTER_DISCOVERY_TIMEOUT",
    "CLUSTER_SCHEMES",
    "Discovery",
    "check_cluster_prefix",
    "check_redis_url",
    "cluster_nodes",
    "in_flight_gate",
    "is_cluster_url",
    "normalize_redis_url",
    "redact_redis_url",
    "redis_client",
]

#: Seconds the first call to a cluster may take to learn its nodes and slots (after that, a
#: refresh after a failover or a redirect counts against the call's own ``timeout``).
CLUSTER_DISCOVERY_TIMEOUT = 1.0
#: URL schemes that name a Redis Cluster (any of its nodes; the client finds the others).
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def normalize_redis_url(url: str) -> str:
    """``host:port`` (how Istio's redisquota wrote it) becomes ``redis://host:port``."""
    url = url.strip()
    return url if "://" in url else f"redis://{url}"


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return urlsplit(normalize_redis_url(url)).scheme in CLUSTER_SCHEMES


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The ``host:port`` startup nodes of a cluster URL (``redis+cluster://h1:p1,h2:p2``).

    :raises ValueError: no node, a node without a port, or a database other than 0.
    """
    parts = urlsplit(normalize_redis_url(url))
    if parts.path not in ("", "/", "/0"):
        raise ValueError("a Redis Cluster has only database 0")
    nodes = []
    for node in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = node.strip().rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"a Redis Cluster URL lists host:port nodes, got {node!r}")
        nodes.append((host, int(port)))
    return nodes


def check_redis_url(url: str) -> str:
    """``url`` as given when it names a Redis server (``redis``, ``rediss``, ``unix`` or ``host:port``)
    or a Redis Cluster (``redis+cluster://host:port[,host:port...]``, ``rediss+cluster://...``).

    :raises ValueError: another scheme, or no host.
    """
    parts = urlsplit(normalize_redis_url(url))
    if parts.scheme in CLUSTER_SCHEMES:
        cluster_nodes(url)
        return url
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            "a Redis URL starts with redis://, rediss://, unix://, redis+cluster:// or "
            f"rediss+cluster://, got scheme {parts.scheme!r}"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("a Redis URL needs a host")
    return url


def check_cluster_prefix(url: str, key_prefix: str) -> None:
    """A key prefix for a cluster may not hold a brace: it would change the keys' hash tag.

    :raises ValueError: it does.
    """
    if is_cluster_url(url) and ("{" in key_prefix or "}" in key_prefix):
        raise ValueError("with a Redis Cluster the key prefix may not contain { or }")


def redact_redis_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for the effective config and logs)."""
    parts = urlsplit(normalize_redis_url(url))
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def redis_client(url: str, *, pool_size: int, timeout: float) -> AnyRedis:
    """A client over its own pool of at most ``pool_size`` connections (per node for a cluster).

    Waiting for a free connection is bounded by ``timeout`` too (for a cluster, callers hold
    :func:`in_flight_gate` instead: its pools refuse rather than wait). The client retries
    nothing: callers decide what may be sent again.
    """
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # The caller bounds each round trip; these only keep a forgotten socket from hanging.
    socket_timeout = max(timeout, 5.0)
    if is_cluster_url(url):
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        parts = urlsplit(normalize_redis_url(url))
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in cluster_nodes(url)],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ssl=parts.scheme == "rediss+cluster",
            # No retry after a connection error or a timeout: the script may have run there.
            # Redirects (MOVED, ASK) are followed apart from this: the command was not run.
            retry=Retry(NoBackoff(), 0),
            # Topology refreshes take a connection too, beside the pool_size calls in flight.
            max_connections=pool_size + 2,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
        )
    pool = BlockingConnectionPool.from_url(
        normalize_redis_url(url),
        max_connections=pool_size,
        timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
    )
    return Redis.from_pool(pool)


class Discovery:
    """Learns a cluster's nodes and slot map once, before the first call (a single server needs
    nothing). Bounded by ``max(timeout, CLUSTER_DISCOVERY_TIMEOUT)``: it takes several round trips.
    Calls that arrive meanwhile wait for it; it is tried once, answered or not, and after that
    redis-py's client refreshes the map within each call's own ``timeout``."""

    def __init__(self) -> None:
        self._done = False
        self._lock = asyncio.Lock()

    async def ensure(self, client: AnyRedis, timeout: float) -> None:
        from redis.asyncio.cluster import RedisCluster

        if self._done:
            return
        async with self._lock:
            if not self._done:
                self._done = True
                if isinstance(client, RedisCluster):
                    async with asyncio.timeout(max(timeout, CLUSTER_DISCOVERY_TIMEOUT)):
                        await client.initialize()


def in_flight_gate(cluster: bool, pool_size: int) -> contextlib.AbstractAsyncContextManager[object]:
    """What a call holds while it runs: for a cluster, one of ``pool_size`` places (a cluster
    node's pool refuses a call beyond its size where a single server's pool waits); for a single
    server nothing (its blocking pool waits)."""
    if cluster:
        return asyncio.Semaphore(pool_size)
    return contextlib.nullcontext()
