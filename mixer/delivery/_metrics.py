"""Every live Delivery of the process, exported as ``mixer_delivery_*{handler}`` at scrape time.

Deliveries are tracked through weak references, so one that is dropped without a shutdown does
not linger. A Delivery that shuts down hands its counters to the handler name's retired totals:
when a reload replaces a handler by a new one of the same name, its counters keep growing instead
of starting again from zero. Gauges are the sum over the live Deliveries of a name.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from mixer.delivery._stats import SEND_DURATION_BUCKETS, DeliveryStats

__all__ = ["DeliveryCollector", "live_deliveries", "retire", "track"]


class _Tracked(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def stats(self) -> DeliveryStats: ...


@dataclass(slots=True)
class _Totals:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    spooled: int = 0
    written_ahead: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    duration_count: int = 0
    duration_sum: float = 0.0
    duration_buckets: list[int] = field(default_factory=lambda: [0] * (len(SEND_DURATION_BUCKETS) + 1))
    queued_records: int = 0
    queued_bytes: int = 0
    spool_records: int = 0
    spool_bytes: int = 0
    in_flight: int = 0
    circuit_open: int = 0

    def add_counters(self, stats: DeliveryStats) -> None:
        self.sent += stats.sent
        self.failed += stats.failed
        self.retried += stats.retried
        self.spooled += stats.spooled
        self.written_ahead += stats.written_ahead
        self.replayed += stats.replayed
        self.dead_lettered += stats.dead_lettered
        for reason, count in stats.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + count
        self.duration_count += stats.send_duration_count
        self.duration_sum += stats.send_duration_sum
        for i, count in enumerate(stats.send_duration_buckets):
            self.duration_buckets[i] += count

    def add_gauges(self, stats: DeliveryStats) -> None:
        self.queued_records += stats.queued_records
        self.queued_bytes += stats.queued_bytes
        self.spool_records += stats.spool_records
        self.spool_bytes += stats.spool_bytes
        self.in_flight += stats.in_flight
        self.circuit_open += int(stats.circuit_open)


class _Deliveries:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: weakref.WeakSet[_Tracked] = weakref.WeakSet()
        self._retired: dict[str, _Totals] = {}

    def track(self, delivery: _Tracked) -> None:
        with self._lock:
            self._live.add(delivery)

    def retire(self, delivery: _Tracked) -> None:
        with self._lock:
            if delivery not in self._live:
                return
            self._live.discard(delivery)
            self._retired.setdefault(delivery.name, _Totals()).add_counters(delivery.stats)

    def live(self) -> list[_Tracked]:
        with self._lock:
            return list(self._live)

    def totals(self) -> dict[str, _Totals]:
        with self._lock:
            live = list(self._live)
            out: dict[str, _Totals] = {}
            for name, retired in self._retired.items():
                totals = out.setdefault(name, _Totals())
                totals.add_counters(_as_stats(retired))
        for delivery in live:
            stats = delivery.stats
            totals = out.setdefault(delivery.name, _Totals())
            totals.add_counters(stats)
            totals.add_gauges(stats)
        return out


def _as_stats(totals: _Totals) -> DeliveryStats:
    return DeliveryStats(
        sent=totals.sent,
        failed=totals.failed,
        retried=totals.retried,
        spooled=totals.spooled,
        written_ahead=totals.written_ahead,
        replayed=totals.replayed,
        dead_lettered=totals.dead_lettered,
        dropped=dict(totals.dropped),
        send_duration_count=totals.duration_count,
        send_duration_sum=totals.duration_sum,
        send_duration_buckets=tuple(totals.duration_buckets),
    )


_DELIVERIES = _Deliveries()


def track(delivery: _Tracked) -> None:
    """Export ``delivery`` until it is retired or garbage collected."""
    _DELIVERIES.track(delivery)


def retire(delivery: _Tracked) -> None:
    """Stop exporting ``delivery``; its counters stay in its handler name's totals."""
    _DELIVERIES.retire(delivery)


def live_deliveries() -> list[_Tracked]:
    return _DELIVERIES.live()


class DeliveryCollector(Collector):
    """``mixer_delivery_*`` families for every handler that has had a Delivery in this process."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        totals = sorted(_DELIVERIES.totals().items())
        gauges = (
            ("queued_records", "Records held in memory (waiting or being sent)", "queued_records"),
            ("queued_bytes", "Bytes of the records held in memory", "queued_bytes"),
            ("spool_records", "Records in the on-disk spool", "spool_records"),
            (
                "spool_bytes",
                "Record bytes in the on-disk spool (the bound spool.max_bytes applies to)",
                "spool_bytes",
            ),
            ("sends_in_flight", "Batches being sent right now", "in_flight"),
            (
                "circuit_open",
                "1 while the backend is taken as down and only probe batches are sent",
                "circuit_open",
            ),
        )
        counters = (
            ("sent", "Records the backend accepted", "sent"),
            (
                "failed",
                "Records in send attempts that failed and may be retried (once per attempt)",
                "failed",
            ),
            ("retried", "Records sent again after a failed attempt", "retried"),
            ("spooled", "Records written to the on-disk spool to wait there", "spooled"),
            (
                "written_ahead",
                "Records written to the spool before their Report was answered, while sent from memory",
                "written_ahead",
            ),
            ("replayed", "Records read back from the spool to be sent", "replayed"),
            (
                "dead_lettered",
                "Records the backend refused for good, written to the dead letter",
                "dead_lettered",
            ),
        )
        for family, table in ((GaugeMetricFamily, gauges), (CounterMetricFamily, counters)):
            for suffix, doc, attr in table:
                metric = family(f"mixer_delivery_{suffix}", doc, labels=["handler"])
                for name, t in totals:
                    metric.add_metric([name], getattr(t, attr))
                yield metric
        dropped = CounterMetricFamily(
            "mixer_delivery_dropped", "Records given up on purpose, by reason", labels=["handler", "reason"]
        )
        for name, t in totals:
            for reason, count in sorted(t.dropped.items()):
                dropped.add_metric([name, reason], count)
        yield dropped
        histogram = HistogramMetricFamily(
            "mixer_delivery_send_duration_seconds", "Time one send attempt took", labels=["handler"]
        )
        for name, t in totals:
            buckets = [(_le(bound), t.duration_buckets[i]) for i, bound in enumerate(SEND_DURATION_BUCKETS)]
            buckets.append(("+Inf", t.duration_buckets[-1]))
            histogram.add_metric([name], buckets, sum_value=t.duration_sum)
        yield histogram


def _le(bound: float) -> str:
    return repr(float(bound))
