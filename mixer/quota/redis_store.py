"""The Redis counter store, for handlers and key stores that keep their state in Redis.

A module of its own rather than part of :mod:`mixer.quota`, so that the in-process store does not
pull in the Redis client and its metrics collector. Every name here is public; the code lives in
private modules: the store (``_redis``), connections and URLs (``_redis_conn``, shared with the
API key store of :mod:`mixer.plans.redis_keys`) and the self-metrics (``_redis_metrics``).
"""

from typing import TYPE_CHECKING

from mixer.quota._redis import (
    DEFAULT_EXPIRY_SLACK,
    DEFAULT_KEY_PREFIX,
    DEFAULT_POOL_SIZE,
    DEFAULT_TIMEOUT,
    RedisCounterStore,
    allocate_script,
)
from mixer.quota._redis_conn import (
    CLUSTER_DISCOVERY_TIMEOUT,
    CLUSTER_SCHEMES,
    Discovery,
    check_cluster_prefix,
    check_redis_url,
    cluster_nodes,
    in_flight_gate,
    is_cluster_url,
    normalize_redis_url,
    redact_redis_url,
    redis_client,
)
from mixer.quota._redis_metrics import MAX_RETIRED_NAMES, RedisQuotaCollector, RedisStoreStats, totals

if TYPE_CHECKING:
    # A client of one server or of a cluster: for annotations only (not in __all__), as it
    # does not exist at run time (redis is imported on first use).
    from mixer.quota._redis_conn import AnyRedis as AnyRedis  # noqa: PLC0414

__all__ = [
    "CLUSTER_DISCOVERY_TIMEOUT",
    "CLUSTER_SCHEMES",
    "DEFAULT_EXPIRY_SLACK",
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_TIMEOUT",
    "MAX_RETIRED_NAMES",
    "Discovery",
    "RedisCounterStore",
    "RedisQuotaCollector",
    "RedisStoreStats",
    "allocate_script",
    "check_cluster_prefix",
    "check_redis_url",
    "cluster_nodes",
    "in_flight_gate",
    "is_cluster_url",
    "normalize_redis_url",
    "redact_redis_url",
    "redis_client",
    "totals",
]
