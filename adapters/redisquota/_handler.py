"""The redisquota handler: memquota's quota and plancheck logic over a Redis counter store."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from adapters.redisquota._config import RedisquotaConfig
from mixer import HandlerEnv
from mixer.quota.redis_store import RedisCounterStore
from mixer.quotahandler import CounterStoreHandler

if TYPE_CHECKING:
    from redis.asyncio import Redis


class _StoreLease:
    """One store shared by the handlers a reload chains together; closed when the last lets go.

    A reload builds the new handler while the old one still serves, and a reload that fails
    keeps the old one: neither may close connections the other still uses.
    """

    def __init__(self, store: RedisCounterStore) -> None:
        self.store = store
        self.holders = 0

    def acquire(self) -> _StoreLease:
        self.holders += 1
        return self

    async def release(self) -> None:
        self.holders -= 1
        if self.holders <= 0:
            await self.store.close()


def _store_settings(config: RedisquotaConfig) -> tuple[object, ...]:
    """What a store is made from: a reload that keeps these keeps the store (and its connections)."""
    return (
        config.redis_server_url,
        config.connection_pool_size,
        config.timeout,
        config.key_prefix,
        config.key_expiry_slack,
    )


class RedisquotaHandler(CounterStoreHandler):
    """Counters in Redis, so every process and replica with the same Redis and ``key_prefix``
    shares them. A store failure is answered per ``failure_policy`` and counted."""

    config: RedisquotaConfig
    store: RedisCounterStore
    released: bool
    _lease: _StoreLease

    def __init__(
        self,
        config: RedisquotaConfig,
        env: HandlerEnv,
        *,
        clock: Callable[[], float] = time.time,
        client: Redis | None = None,
    ) -> None:
        previous = env.previous
        lease: _StoreLease
        if (
            client is None
            and isinstance(previous, RedisquotaHandler)
            and _store_settings(previous.config) == _store_settings(config)
            and not previous.released
        ):
            lease = previous._lease
        else:
            lease = _StoreLease(
                RedisCounterStore(
                    config.redis_server_url,
                    client=client,
                    key_prefix=config.key_prefix,
                    dedup_scope=env.handler_name,
                    pool_size=config.connection_pool_size,
                    timeout=config.timeout.total_seconds(),
                    expiry_slack=config.key_expiry_slack.total_seconds(),
                    clock=clock,
                )
            )
        self.failure_policy = config.failure_policy
        self.released = False
        super().__init__(config, env, lease.store, clock=clock)
        # Only once the build can no longer fail: a failed build must not hold the store.
        self._lease = lease.acquire()

    async def shutdown(self, timeout: float) -> None:
        await super().shutdown(timeout)
        if not self.released:
            self.released = True
            await self._lease.release()

    def _store_failed(self, exc: Exception) -> bool:
        grant = super()._store_failed(exc)
        if grant:
            # On the store too: it outlives this handler across reloads, and the server exports it.
            self.store.stats.fail_open_grants += 1
        return grant

    def stats(self) -> dict[str, int]:
        """Counters for self-metrics, by name (the server exports the store's as
        ``mixer_redisquota_*_total{handler}``; these are this handler's own)."""
        store = self.store.stats
        return {
            "allocations": store.allocations,
            "denials": store.denials,
            "dedup_hits": store.dedup_hits,
            "store_failures": self.store_failures,
            "store_timeouts": store.timeouts,
            "fail_open_grants": self.fail_open_grants,
            "script_loads": store.script_loads,
        }
