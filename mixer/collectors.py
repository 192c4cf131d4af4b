"""Self-metrics that adapters add to the server's ``/metrics``.

An adapter registers one Prometheus collector (once per process, idempotent) with
:func:`register_collector`; the server exports every registered collector through
:class:`AdapterCollectors`. Collectors read counters the adapter keeps anyway, at scrape time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

__all__ = ["AdapterCollectors", "register_collector"]

_LOCK = threading.Lock()
_COLLECTORS: dict[str, Collector] = {}


def register_collector(name: str, collector: Collector) -> None:
    """Export ``collector`` on ``/metrics`` under ``name`` (the first registration of a name stays)."""
    with _LOCK:
        _COLLECTORS.setdefault(name, collector)


class AdapterCollectors(Collector):
    """Every collector adapters registered, in registration order."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        with _LOCK:
            collectors = list(_COLLECTORS.values())
        for collector in collectors:
            yield from collector.collect()
