"""The Redis counter store: counters shared by every process and host that uses one Redis.

One allocation is one round trip: every counter of a Check goes to one Lua script
(``lua/allocate.lua.txt``), which applies the same transitions as :mod:`mixer.quota._algorithms`
atomically, all or nothing, and records the answer under the deduplication id in the same step.

Time comes from the caller's clock (``clock``, epoch seconds), not from Redis's ``TIME``:
calendar windows are placed in a time zone on the client (the script gets the window's bounds),
and tests inject a fake clock. Processes that share counters must therefore keep their clocks in
step (NTP): a process whose clock is off by *d* seconds moves its window edges by *d*. Keys expire
``expiry_slack`` after the state they hold stops mattering, which also covers that skew.

The script is called by ``EVALSHA`` with the SHA1 computed locally; after ``SCRIPT FLUSH`` or a
Redis restart (``NOSCRIPT``) it is loaded with ``SCRIPT LOAD`` and the call is retried once. Every
round trip is bounded by ``timeout``. Nothing is retried after a connection or timeout error:
the script may have run, and running it again could spend twice.

A Redis Cluster is named by the scheme ``redis+cluster://`` (``rediss+cluster://`` with TLS) and
reached through redis-py's cluster client, which follows ``MOVED`` and ``ASK`` redirects (the
command was not run: safe) and refreshes its slot map after a failover. One script may only touch
keys of one hash slot, so every key of an allocation carries the same hash tag, its counters'
group (:attr:`~mixer.quota.CounterRequest.group`: for a plan, the plan and the subject):
``<prefix>{<group>}<key>`` and ``<prefix>{<group>}dedup/...``. ``NOSCRIPT`` is answered per node:
the script is loaded on the node that owns the slot, the one that answered.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from mixer.quota import _redis_metrics
from mixer.quota._algorithms import Algorithm, Decision
from mixer.quota._redis_conn import Discovery, in_flight_gate, is_cluster_url, redis_client
from mixer.quota._redis_metrics import RedisStoreStats
from mixer.quota._store import Allocation, CounterRequest

if TYPE_CHECKING:
    from mixer.quota._redis_conn import AnyRedis

__all__ = [
    "DEFAULT_EXPIRY_SLACK",
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_TIMEOUT",
    "RedisCounterStore",
    "allocate_script",
]

DEFAULT_KEY_PREFIX = "mixer:quota:"
DEFAULT_POOL_SIZE = 10
#: Seconds one round trip may take before the store counts it failed.
DEFAULT_TIMEOUT = 0.05
#: Seconds every key outlives the state it holds (clock skew between processes, slow clients).
DEFAULT_EXPIRY_SLACK = 2.0

_ALGORITHM_CODES = {Algorithm.FIXED_WINDOW: "f", Algorithm.ROLLING_WINDOW: "r", Algorithm.GCRA: "g"}


def allocate_script() -> str:
    """The Lua text of the allocation script."""
    return resources.files("mixer.quota.lua").joinpath("allocate.lua.txt").read_text("utf-8")


class RedisCounterStore:
    """A :class:`~mixer.quota.CounterStore` in Redis, the same semantics as the memory store.

    Keys are ``key_prefix`` + the counter key; deduplication records are ``key_prefix`` +
    ``dedup/`` + the id (``dedup/<dedup_scope>/`` + the id with a scope). On a cluster both get
    the allocation's hash tag after the prefix (``<prefix>{<group>}...``). Every key carries an
    expiry. Pass ``client`` to share a connection (tests); otherwise one is made from ``url`` on
    first use and closed by :meth:`close`. A :class:`~redis.asyncio.cluster.RedisCluster` client,
    or a ``redis+cluster://`` URL, makes it a cluster store.

    Its counters are exported by :class:`~mixer.quota.redis_store.RedisQuotaCollector` under
    the ``dedup_scope`` (the handler's name).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        client: AnyRedis | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        dedup_scope: str = "",
        pool_size: int = DEFAULT_POOL_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
        expiry_slack: float = DEFAULT_EXPIRY_SLACK,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        from redis.asyncio.cluster import RedisCluster

        #: Whether the counters live in a Redis Cluster (keys carry hash tags).
        self.cluster = isinstance(client, RedisCluster) if client is not None else is_cluster_url(url)
        if self.cluster and ("{" in key_prefix or "}" in key_prefix):
            raise ValueError("with a Redis Cluster the key prefix may not contain { or }")
        self.url = url
        self.key_prefix = key_prefix
        self.dedup_scope = dedup_scope
        self.pool_size = pool_size
        self.timeout = timeout
        self.expiry_slack = expiry_slack
        self.clock = clock
        self.stats = RedisStoreStats()
        self._client = client
        self._owns_client = client is None
        self._gate = in_flight_gate(self.cluster, pool_size)
        self._discovery = Discovery()
        self._script = allocate_script()
        self.script_sha = hashlib.sha1(self._script.encode("utf-8"), usedforsecurity=False).hexdigest()
        self._closed = False
        #: EVALSHAs of the current event-loop tick, sent together by _flush.
        self._pending: list[tuple[list[str], list[str], asyncio.Future[Any]]] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        _redis_metrics.track(self)

    @property
    def client(self) -> AnyRedis:
        if self._closed:
            raise RuntimeError("the Redis counter store is closed")
        if self._client is None:
            self._client = redis_client(self.url, pool_size=self.pool_size, timeout=self.timeout)
        return self._client

    async def allocate(
        self,
        requests: Sequence[CounterRequest],
        *,
        deduplication_id: str = "",
        dedup_seconds: float = 0.0,
    ) -> Allocation:
        now = self.clock()
        keys, args = self._arguments(requests, now, deduplication_id, dedup_seconds)
        try:
            reply = await self._run(keys, args)
        except Exception as exc:
            self.stats.failures += 1
            if isinstance(exc, TimeoutError):
                self.stats.timeouts += 1
            raise
        replayed, answer = _parse_reply(reply)
        if replayed:
            self.stats.dedup_hits += 1
        allocation = _decode(answer, replayed)
        if not replayed:
            self.stats.allocations += 1
            if not allocation.allowed:
                self.stats.denials += 1
        return allocation

    async def close(self) -> None:
        """Close the connections this store opened. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _redis_metrics.retire(self)
        if self._owns_client and self._client is not None:
            await self._client.aclose()

    def _arguments(
        self, requests: Sequence[CounterRequest], now: float, deduplication_id: str, dedup_seconds: float
    ) -> tuple[list[str], list[str]]:
        prefix = self.key_prefix
        slack_ms = max(math.ceil(self.expiry_slack * 1000), 1)
        dedup = bool(deduplication_id) and dedup_seconds > 0
        if self.cluster and requests:
            prefix += "{" + _slot_group(requests) + "}"
        keys = [prefix + request.key for request in requests]
        args = [
            repr(now),
            str(len(requests)),
            repr(now + dedup_seconds) if dedup else "",
            str(math.ceil(dedup_seconds * 1000) + slack_ms) if dedup else "0",
            str(slack_ms),
        ]
        for request in requests:
            args.extend(_request_args(request, now))
        if dedup:
            scope = f"{self.dedup_scope}/" if self.dedup_scope else ""
            keys.append(f"{prefix}dedup/{scope}{deduplication_id}")
        return keys, args

    async def _run(self, keys: list[str], args: list[str]) -> Any:
        from redis.exceptions import NoScriptError

        client = self.client
        await self._discovery.ensure(client, self.timeout)
        # The gate's wait counts against the timeout, as a single server's pool wait does.
        async with asyncio.timeout(self.timeout), self._gate:
            try:
                if self.cluster:
                    return await client.evalsha(self.script_sha, len(keys), *keys, *args)
                reply = await self._coalesced(keys, args)
                if isinstance(reply, Exception):
                    raise reply
                return reply
            except NoScriptError:
                # Not run at all: safe to load the script and send the call again, once.
                pass
        async with asyncio.timeout(self.timeout), self._gate:
            sha = await self._load_script(client, keys[0])
        self.stats.script_loads += 1
        if sha != self.script_sha:
            raise RuntimeError(
                f"Redis answered SHA1 {sha} for the allocation script, expected {self.script_sha}"
            )
        async with asyncio.timeout(self.timeout), self._gate:
            return await client.evalsha(self.script_sha, len(keys), *keys, *args)

    def _coalesced(self, keys: list[str], args: list[str]) -> asyncio.Future[Any]:
        """The reply to one EVALSHA, sent with every other one of this event-loop tick in one
        pipelined round trip (a single server only). Each script still runs atomically and in
        the order asked; a failed command's exception is its reply (the others stand)."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if self._pending is None:
            self._pending = []
            loop.call_soon(self._flush)
        self._pending.append((keys, args, reply))
        return reply

    def _flush(self) -> None:
        batch, self._pending = self._pending or [], None
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[list[str], list[str], asyncio.Future[Any]]]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                pipe = self.client.pipeline(transaction=False)
                for keys, args, _ in batch:
                    pipe.evalsha(self.script_sha, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for _, _, reply in batch:
                if not reply.done():
                    reply.set_exception(exc)
            return
        except asyncio.CancelledError:
            for _, _, reply in batch:
                reply.cancel()
            raise
        for (_, _, reply), answer in zip(batch, replies, strict=True):
            if not reply.done():
                reply.set_result(answer)

    async def _load_script(self, client: AnyRedis, key: str) -> Any:
        from redis.asyncio.cluster import RedisCluster

        if not isinstance(client, RedisCluster):
            return await client.script_load(self._script)
        # Each node has its own script cache: load it where the key lives (the node that
        # answered NOSCRIPT; a replica promoted since starts with an empty cache).
        node = client.get_node_from_key(key)
        if node is None:
            raise RuntimeError("no Redis Cluster node serves the allocation's slot")
        return await client.execute_command("SCRIPT LOAD", self._script, target_nodes=node)


def _slot_group(requests: Sequence[CounterRequest]) -> str:
    """The hash tag of an allocation on a cluster: its counters' group, which all must share."""
    groups = {request.group or request.key for request in requests}
    if len(groups) != 1:
        raise ValueError(
            "the counters of one allocation must share a group on a Redis Cluster "
            f"(one hash slot), got {len(groups)} groups"
        )
    group = groups.pop()
    if "}" in group:
        raise ValueError("a counter group may not contain }")
    return group


def _request_args(request: CounterRequest, now: float) -> list[str]:
    if request.algorithm is Algorithm.FIXED_WINDOW:
        if request.window is None:
            raise ValueError(f"counter {request.key}: a fixed window needs a window")
        start, end = request.window.bounds(now)
        params = (repr(float(start)), repr(float(end)))
    elif request.algorithm is Algorithm.ROLLING_WINDOW:
        if not 0 < request.bucket_seconds <= request.period:
            raise ValueError("bucket length must be positive and at most the window length")
        params = (repr(float(request.period)), repr(float(request.bucket_seconds)))
    else:
        if request.limit <= 0 or request.period <= 0 or request.burst <= 0:
            raise ValueError("limit, period and burst must be positive")
        params = (repr(float(request.period)), str(request.burst))
    if request.amount < 0:
        raise ValueError(f"counter {request.key}: negative amount {request.amount}")
    return [
        _ALGORITHM_CODES[request.algorithm],
        _shape_text(request),
        str(request.amount),
        str(request.limit),
        "1" if request.best_effort else "0",
        "1" if request.enforce else "0",
        *params,
    ]


def _shape_text(request: CounterRequest) -> str:
    return _shape_digest(request.shape)


@functools.lru_cache(maxsize=1024)
def _shape_digest(shape: tuple[object, ...]) -> str:
    # Short and the same in every process (reprs of the windows and enums carry no addresses).
    # Shapes come from the configured limits: few, and each is hashed once rather than per call.
    return hashlib.blake2b(repr(shape).encode("utf-8"), digest_size=8).hexdigest()


def _parse_reply(reply: Any) -> tuple[bool, str]:
    if not isinstance(reply, list) or len(reply) != 2:
        raise RuntimeError(f"unexpected reply from the allocation script: {reply!r}")
    answer = reply[1]
    text = answer.decode("utf-8") if isinstance(answer, bytes) else str(answer)
    return int(reply[0]) == 1, text


def _decode(answer: str, replayed: bool) -> Allocation:
    allowed, *parts = answer.split(";")
    decisions = []
    for part in parts:
        granted, limit, remaining, reset_after, retry_after = part.split(",")
        decisions.append(
            Decision(
                int(granted),
                int(limit),
                int(remaining),
                float(reset_after),
                float(retry_after) if retry_after else None,
            )
        )
    return Allocation(tuple(decisions), allowed == "1", replayed)
