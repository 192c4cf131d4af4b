"""``mixer_kubernetesenv_*{handler}``: inventory lookups, evictions, relists and size, per live handler."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.kubernetesenv._cache import PodInventory
from mixer.collectors import register_collector

__all__ = ["InventoryCollector", "track"]

_LOCK = threading.Lock()
#: Live inventories by handler name (weakly: a dropped handler disappears from the metrics).
_LIVE: weakref.WeakValueDictionary[str, PodInventory] = weakref.WeakValueDictionary()


def track(handler: str, inventory: PodInventory) -> None:
    with _LOCK:
        _LIVE[handler] = inventory
    register_collector("kubernetesenv", InventoryCollector())


class InventoryCollector(Collector):
    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        with _LOCK:
            live = sorted(_LIVE.items())
        if not live:
            return
        lookups = CounterMetricFamily(
            "mixer_kubernetesenv_lookups", "Pod lookups by result (hit, miss)", labels=["handler", "result"]
        )
        evictions = CounterMetricFamily(
            "mixer_kubernetesenv_evictions",
            "Records evicted to stay within the cache bounds",
            labels=["handler"],
        )
        relists = CounterMetricFamily(
            "mixer_kubernetesenv_relists", "Lists after 410 Gone or a failed list/watch", labels=["handler"]
        )
        errors = CounterMetricFamily(
            "mixer_kubernetesenv_watch_errors", "Failed lists and watches", labels=["handler"]
        )
        invalid = CounterMetricFamily(
            "mixer_kubernetesenv_invalid_objects", "Objects that could not be parsed", labels=["handler"]
        )
        entries = GaugeMetricFamily(
            "mixer_kubernetesenv_cache_entries", "Records in the cache", labels=["handler", "kind"]
        )
        size = GaugeMetricFamily(
            "mixer_kubernetesenv_cache_bytes", "Estimated bytes of the cache", labels=["handler"]
        )
        for name, inventory in live:
            stats = inventory.stats
            lookups.add_metric([name, "hit"], stats.hits)
            lookups.add_metric([name, "miss"], stats.misses)
            evictions.add_metric([name], stats.evictions)
            relists.add_metric([name], stats.relists)
            errors.add_metric([name], stats.watch_errors)
            invalid.add_metric([name], stats.invalid)
            entries.add_metric([name, "pod"], inventory.pods)
            entries.add_metric([name, "replicaset"], inventory.replicasets)
            size.add_metric([name], inventory.bytes)
        yield from (lookups, evictions, relists, errors, invalid, entries, size)
