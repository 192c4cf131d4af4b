"""Every Redis counter store of the process, exported as ``mixer_redisquota_*{handler}`` when scraped.

Stores are tracked through weak references, so one dropped without :meth:`close` does not linger.
A store that closes hands its counters to its handler name's retired totals: when a reload
replaces a handler's store by a new one (its Redis settings changed), the counters keep growing
instead of starting again from zero. Retired totals are kept for at most
:data:`MAX_RETIRED_NAMES` handler names (the oldest go first, counted in ``retired_drops``).
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["MAX_RETIRED_NAMES", "RedisQuotaCollector", "RedisStoreStats", "retire", "totals", "track"]

MAX_RETIRED_NAMES = 1024

#: (family suffix, help, RedisStoreStats field)
_COUNTERS = (
    (
        "allocations",
        "Allocations Redis answered (retries replayed from a deduplication record excluded)",
        "allocations",
    ),
    ("denials", "Allocations denied because an enforced limit was exhausted", "denials"),
    ("dedup_hits", "Retried Checks answered from their deduplication record, spending nothing", "dedup_hits"),
    ("store_failures", "Allocations that failed: Redis unreachable, too slow or erroring", "failures"),
    ("store_timeouts", "Store failures that ran out of time", "timeouts"),
    (
        "fail_open_grants",
        "Requests granted uncounted because the store failed (failure_policy fail_open)",
        "fail_open_grants",
    ),
    ("script_loads", "SCRIPT LOAD after NOSCRIPT (a new or restarted Redis, SCRIPT FLUSH)", "script_loads"),
)


@dataclasses.dataclass(slots=True)
class RedisStoreStats:
    """Counters for self-metrics (``mixer_redisquota_*``). ``failures`` counts allocations that
    raised (``timeouts`` of them ran out of time); ``script_loads`` counts ``SCRIPT LOAD`` after
    ``NOSCRIPT``; ``fail_open_grants`` is kept by the handler that let failed allocations pass."""

    allocations: int = 0
    denials: int = 0
    dedup_hits: int = 0
    failures: int = 0
    timeouts: int = 0
    script_loads: int = 0
    fail_open_grants: int = 0


class _Store(Protocol):
    """What is tracked of a Redis counter store: its handler name and its counters."""

    @property
    def dedup_scope(self) -> str: ...

    @property
    def stats(self) -> RedisStoreStats: ...


class _Stores:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: weakref.WeakSet[_Store] = weakref.WeakSet()
        self._retired: OrderedDict[str, dict[str, int]] = OrderedDict()
        self.retired_drops = 0

    def track(self, store: _Store) -> None:
        with self._lock:
            self._live.add(store)

    def retire(self, store: _Store) -> None:
        with self._lock:
            if store not in self._live:
                return
            self._live.discard(store)
            into = self._retired.setdefault(store.dedup_scope, {})
            self._retired.move_to_end(store.dedup_scope)
            for name, value in _counts(store.stats).items():
                into[name] = into.get(name, 0) + value
            while len(self._retired) > MAX_RETIRED_NAMES:
                self._retired.popitem(last=False)
                self.retired_drops += 1

    def totals(self) -> dict[str, dict[str, int]]:
        with self._lock:
            result = {name: dict(counts) for name, counts in self._retired.items()}
            for store in list(self._live):
                into = result.setdefault(store.dedup_scope, {})
                for name, value in _counts(store.stats).items():
                    into[name] = into.get(name, 0) + value
        return result


def _counts(stats: RedisStoreStats) -> dict[str, int]:
    return {field.name: getattr(stats, field.name) for field in dataclasses.fields(stats)}


_STORES = _Stores()


def track(store: _Store) -> None:
    _STORES.track(store)


def retire(store: _Store) -> None:
    _STORES.retire(store)


def totals() -> dict[str, dict[str, int]]:
    """Counters by handler name, then by :class:`RedisStoreStats` field: live and retired stores."""
    return _STORES.totals()


class RedisQuotaCollector(Collector):
    """``mixer_redisquota_*_total{handler}`` for every handler with a Redis store in this process."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        by_handler = sorted(totals().items())
        if not by_handler:
            return
        for suffix, doc, field in _COUNTERS:
            family = CounterMetricFamily(f"mixer_redisquota_{suffix}", doc, labels=["handler"])
            for handler, counts in by_handler:
                family.add_metric([handler], counts.get(field, 0))
            yield family
