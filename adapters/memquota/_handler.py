"""The memquota handler: Mixer quotas and plan checks against one in-memory counter store."""

from __future__ import annotations

import time
from collections.abc import Callable

from adapters.memquota._config import MemquotaConfig
from mixer import HandlerEnv
from mixer.quota import MemoryCounterStore
from mixer.quotahandler import CounterStoreHandler, RateLimitAlgorithm


class MemquotaHandler(CounterStoreHandler):
    """Counters in one :class:`MemoryCounterStore`, taken over from the handler a reload replaces,
    so counters survive config changes; only a restart of the process starts them afresh."""

    config: MemquotaConfig
    store: MemoryCounterStore
    default_algorithm = RateLimitAlgorithm.ROLLING_WINDOW
    mixer_memquota = True

    def __init__(
        self,
        config: MemquotaConfig,
        env: HandlerEnv,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        previous = env.previous
        store: MemoryCounterStore
        if isinstance(previous, MemquotaHandler):
            store = previous.store
            store.max_keys = config.max_counters
            store.max_dedup_entries = config.max_deduplication_entries
            store.max_dedup_bytes = config.max_deduplication_bytes
        else:
            store = MemoryCounterStore(
                max_keys=config.max_counters,
                max_dedup_entries=config.max_deduplication_entries,
                max_dedup_bytes=config.max_deduplication_bytes,
                clock=clock,
            )
        super().__init__(config, env, store, clock=clock)
