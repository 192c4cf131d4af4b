"""In-process series storage and its exposition through a prometheus_client collector.

The series live in plain dicts keyed by dimension-value tuples rather than in prometheus_client's
labelled metrics: an update is a dict lookup and a float add (no ``.labels()`` string conversion
and validation, no lock), expiry and the series bound are a ``del`` and a counter, and the
exposition carries exactly the families configured (no ``_created`` series).
"""

from __future__ import annotations

import logging
import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from adapters.prometheus._config import SELF_METRIC_PREFIX, MetricInfo, MetricKind
from adapters.prometheus._values import as_number, go_float, label_value
from mixer.templates import MetricInstance

_SURROGATES = re.compile("[\ud800-\udfff]")
#: Bytes of label values all series of one handler may hold: room for ``max_series`` series of
#: Istio's nineteen labels, while 100 KB label values cannot take gigabytes.
DEFAULT_MAX_SERIES_BYTES = 256 * 1024 * 1024

#: Reasons a value is not recorded (the ``reason`` label of the rejected-values self metric).
REJECT_NOT_A_NUMBER = "not_a_number"
REJECT_NEGATIVE = "negative"
REJECT_NOT_FINITE = "not_finite"


@dataclass(slots=True)
class HandlerStats:
    """What a handler dropped or removed; also exported as ``mixer_prometheus_*`` metrics."""

    series_dropped: int = 0
    series_expired: int = 0
    instances_unmatched: int = 0
    #: ``(full metric name, reason) -> count``; reasons: not_a_number, negative, not_finite.
    values_rejected: dict[tuple[str, str], int] = field(default_factory=dict)

    def rejected(self, metric: str, reason: str) -> int:
        """Count one rejection; returns the count so far for this metric and reason."""
        key = (metric, reason)
        count = self.values_rejected[key] = self.values_rejected.get(key, 0) + 1
        return count


class SeriesBudget:
    """The series count shared by all metrics of one handler, against its bound, and the bytes
    their label values hold (label values are what callers send), against ``max_bytes``."""

    __slots__ = ("bytes", "count", "limit", "max_bytes")

    def __init__(self, limit: int, max_bytes: int = DEFAULT_MAX_SERIES_BYTES) -> None:
        self.limit = limit
        self.count = 0
        self.max_bytes = max_bytes
        self.bytes = 0


def series_cost(labels: tuple[str, ...]) -> int:
    """Estimated bytes one series keeps: its label strings twice (the label tuple and the raw
    dimension key usually hold equal text) and the objects around them."""
    return 2 * sum(map(len, labels)) + 300


class _Scalar:
    __slots__ = ("key", "labels", "updated", "value")

    def __init__(self, key: tuple[Any, ...] | None, labels: tuple[str, ...], now: float) -> None:
        self.key = key
        self.labels = labels
        self.value = 0.0
        self.updated = now


class _Histogram:
    __slots__ = ("counts", "key", "labels", "sum", "updated")

    def __init__(
        self, key: tuple[Any, ...] | None, labels: tuple[str, ...], buckets: int, now: float
    ) -> None:
        self.key = key
        self.labels = labels
        # One slot per finite bound plus the +Inf bucket; not cumulative (cumulated on scrape).
        self.counts = [0] * (buckets + 1)
        self.sum = 0.0
        self.updated = now


class DimensionKeys:
    """The series key of a dimension map, for every metric of a handler with these label names.

    Metrics sharing a map field are given the same dimension map object for one bag (the instance
    builder evaluates identical map fields once), and a handler records them one after the other:
    the key of the map last seen is kept, so the four Istio metrics build and hash one key per
    request instead of four. Only the last map is held, and only by identity.
    """

    __slots__ = ("_key_of", "_last_dimensions", "_last_key", "label_names")

    def __init__(self, label_names: tuple[str, ...]) -> None:
        self.label_names = label_names
        # itemgetter builds the key in C, several times faster than a comprehension over 20 labels.
        self._key_of: Callable[[Mapping[str, Any]], tuple[Any, ...]]
        if len(label_names) > 1:
            self._key_of = itemgetter(*label_names)
        elif label_names:
            only = label_names[0]
            self._key_of = lambda dimensions: (dimensions[only],)
        else:
            self._key_of = lambda dimensions: ()
        self._last_dimensions: Mapping[str, Any] | None = None
        self._last_key: tuple[Any, ...] = ()

    def key(self, dimensions: Mapping[str, Any]) -> tuple[Any, ...]:
        """The raw values of the label names, in order.

        :raises KeyError: a dimension is missing (the caller takes the tolerant path).
        """
        if dimensions is self._last_dimensions:
            return self._last_key
        key = self._key_of(dimensions)
        self._last_dimensions = dimensions
        self._last_key = key
        return key

    def forget(self) -> None:
        """Drop the map held, so a batch's maps do not outlive it."""
        self._last_dimensions = None


class MetricSeries:
    """One configured metric: its label names, its series and how a value updates one.

    Series are found by the tuple of raw dimension values (no string conversion on the hot path)
    and owned by the tuple of label strings. A dimension's type is fixed by its typed expression,
    so raw values that compare equal across types (``1``, ``1.0``, ``True``) do not meet in
    practice; where raw keys differ but label strings agree, the label-string index still keeps
    one series, and only the first raw key is cached.
    """

    def __init__(
        self,
        info: MetricInfo,
        budget: SeriesBudget,
        stats: HandlerStats,
        log: logging.Logger,
        keys: DimensionKeys | None = None,
    ) -> None:
        self.info = info
        self.kind = info.kind
        self.name = info.full_name
        self.description = info.description or info.full_name
        self.label_names: tuple[str, ...] = tuple(info.label_names)
        self.bounds: tuple[float, ...] = ()
        self._les: tuple[str, ...] = ()
        if info.kind is MetricKind.DISTRIBUTION:
            assert info.buckets is not None  # guaranteed by MetricInfo validation
            self.bounds = info.buckets.upper_bounds()
            self._les = (*(go_float(b) for b in self.bounds), "+Inf")
        if keys is None or keys.label_names != self.label_names:
            keys = DimensionKeys(self.label_names)
        self.keys = keys
        self._key_of = keys.key
        self._by_key: dict[tuple[Any, ...], Any] = {}
        self._by_labels: dict[tuple[str, ...], Any] = {}
        self._budget = budget
        self._stats = stats
        self._log = log
        self.record: Callable[[MetricInstance, float], None] = {
            MetricKind.COUNTER: self._record_counter,
            MetricKind.GAUGE: self._record_gauge,
            MetricKind.DISTRIBUTION: self._record_distribution,
        }[info.kind]

    def _series(self, dimensions: Mapping[str, Any], now: float) -> Any:
        key: tuple[Any, ...] | None
        try:
            key = self._key_of(dimensions)
        except KeyError:  # a missing dimension: the slower lookup that tolerates it
            key = tuple(map(dimensions.get, self.label_names))
        try:
            series = self._by_key.get(key)
        except TypeError:  # an unhashable dimension value (a map): found by its label strings
            key, series = None, None
        if series is None:
            series = self._new_series(key, dimensions, now)
        return series

    def _new_series(self, key: tuple[Any, ...] | None, dimensions: Mapping[str, Any], now: float) -> Any:
        # A missing dimension becomes "", which Prometheus treats as an absent label (as in Mixer).
        # Lone surrogates cannot be encoded as UTF-8 and would break every scrape: replaced here.
        labels = tuple(
            [
                text if text.isascii() else _SURROGATES.sub("\ufffd", text)
                for text in map(label_value, map(dimensions.get, self.label_names))
            ]
        )
        series = self._by_labels.get(labels)
        if series is not None:
            return series
        budget = self._budget
        cost = series_cost(labels)
        if budget.count >= budget.limit or budget.bytes + cost > budget.max_bytes:
            self._stats.series_dropped += 1
            if self._stats.series_dropped == 1:
                self._log.warning(
                    "%s: max_series (%d) label sets or %d bytes of labels held; updates to new label "
                    "sets are dropped and counted",
                    self.name,
                    budget.limit,
                    budget.max_bytes,
                )
            return None
        budget.count += 1
        budget.bytes += cost
        series = (
            _Histogram(key, labels, len(self.bounds), now)
            if self.kind is MetricKind.DISTRIBUTION
            else _Scalar(key, labels, now)
        )
        self._by_labels[labels] = series
        if key is not None:
            self._by_key[key] = series
        return series

    def _reject(self, reason: str, value: object) -> None:
        if self._stats.rejected(self.name, reason) == 1:
            self._log.warning(
                "%s: value %.100r not recorded (%s); further rejections are only counted",
                self.name,
                value,
                reason,
            )

    def _record_counter(self, instance: MetricInstance, now: float) -> None:
        value = as_number(instance.value)
        if value is None:
            self._reject(REJECT_NOT_A_NUMBER, instance.value)
            return
        if value < 0:
            self._reject(REJECT_NEGATIVE, instance.value)
            return
        if not math.isfinite(value):
            self._reject(REJECT_NOT_FINITE, instance.value)
            return
        series = self._series(instance.dimensions, now)
        if series is not None:
            series.value += value
            series.updated = now

    def _record_gauge(self, instance: MetricInstance, now: float) -> None:
        value = as_number(instance.value)
        if value is None:
            self._reject(REJECT_NOT_A_NUMBER, instance.value)
            return
        series = self._series(instance.dimensions, now)
        if series is not None:
            series.value = value
            series.updated = now

    def _record_distribution(self, instance: MetricInstance, now: float) -> None:
        value = as_number(instance.value)
        if value is None:
            self._reject(REJECT_NOT_A_NUMBER, instance.value)
            return
        if not math.isfinite(value):
            self._reject(REJECT_NOT_FINITE, instance.value)
            return
        series = self._series(instance.dimensions, now)
        if series is not None:
            # bisect_left: a value equal to a bound belongs to that bound's bucket (le is inclusive).
            series.counts[bisect_left(self.bounds, value)] += 1
            series.sum += value
            series.updated = now

    def expire(self, cutoff: float) -> int:
        """Remove the series last updated before ``cutoff``; returns how many."""
        stale = [series for series in self._by_labels.values() if series.updated < cutoff]
        for series in stale:
            del self._by_labels[series.labels]
            if series.key is not None:
                # The stored key object itself: found by identity even when it holds a NaN.
                self._by_key.pop(series.key, None)
        self._budget.count -= len(stale)
        self._budget.bytes -= sum(series_cost(series.labels) for series in stale)
        return len(stale)

    def snapshot(self) -> FamilySnapshot:
        """The metric's series as plain values (safe to call from a scrape's worker thread)."""
        # list() copies the dict in one step under the GIL, so a scrape running in a worker
        # thread never sees the dict change size while the event loop records or expires.
        snapshot = list(self._by_labels.values())
        series: dict[tuple[str, ...], tuple[float, ...]] = {}
        if self.kind is MetricKind.DISTRIBUTION:
            for histogram in snapshot:
                series[histogram.labels] = (*map(float, list(histogram.counts)), histogram.sum)
            kind = HISTOGRAM
        elif self.kind is MetricKind.COUNTER:
            for scalar in snapshot:
                series[scalar.labels] = (scalar.value,)
            kind = COUNTER
        else:
            for scalar in snapshot:
                series[scalar.labels] = (scalar.value, scalar.updated)
            kind = GAUGE
        return FamilySnapshot(self.name, kind, self.description, self.label_names, series, self.bounds)


#: Family kinds of a :class:`FamilySnapshot`.
COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
#: How gauges of several processes combine: the most recently set value, or the sum.
LATEST, SUM = "latest", "sum"


@dataclass(slots=True)
class FamilySnapshot:
    """One metric family's series as plain values: what is exposed, and what workers exchange.

    Values per label tuple: a counter ``(value,)``; a gauge ``(value, updated)`` with ``updated``
    on the system's monotonic clock; a histogram the per-bucket counts (not cumulative, one per
    bound plus +Inf) followed by the sum.
    """

    name: str
    kind: str
    help: str
    label_names: tuple[str, ...]
    series: dict[tuple[str, ...], tuple[float, ...]]
    bounds: tuple[float, ...] = ()
    gauge_merge: str = LATEST

    @property
    def identity(self) -> tuple[str, str, tuple[str, ...], tuple[float, ...]]:
        """What must agree for two processes' series of this family to be combined."""
        return (self.name, self.kind, self.label_names, self.bounds)


def render(families: Iterable[FamilySnapshot]) -> Iterator[Metric]:
    """prometheus_client families for snapshots (histogram buckets cumulated, ``le`` as Go prints it)."""
    for family in families:
        if family.kind == HISTOGRAM:
            histogram = HistogramMetricFamily(family.name, family.help, labels=family.label_names)
            les = (*(go_float(b) for b in family.bounds), "+Inf")
            for labels, values in family.series.items():
                running = 0.0
                buckets: list[tuple[str, float]] = []
                for le, count in zip(les, values[:-1], strict=True):
                    running += count
                    buckets.append((le, running))
                histogram.add_metric(labels, buckets, values[-1])
            yield histogram
            continue
        scalar: CounterMetricFamily | GaugeMetricFamily
        if family.kind == COUNTER:
            scalar = CounterMetricFamily(family.name, family.help, labels=family.label_names)
        else:
            scalar = GaugeMetricFamily(family.name, family.help, labels=family.label_names)
        for labels, values in family.series.items():
            scalar.add_metric(labels, values[0])
        yield scalar


def encode_text(families: Iterable[FamilySnapshot]) -> bytes:
    """The text format (0.0.4) as Mixer's Go client wrote it: family names exactly as configured.

    prometheus_client's own encoder appends ``_total`` to every counter, which Mixer never did
    (``istio_double_request_count`` stays that), so the text format is written here. Label
    pairs are sorted by name, a histogram's ``le`` last, numbers formatted as Go prints them.
    """
    out: list[str] = []
    for family in families:
        name = family.name
        kind = "histogram" if family.kind == HISTOGRAM else "counter" if family.kind == COUNTER else "gauge"
        out.append(f"# HELP {name} {_escape_help(family.help)}\n# TYPE {name} {kind}\n")
        order = sorted(range(len(family.label_names)), key=family.label_names.__getitem__)
        for labels, values in family.series.items():
            pairs = ",".join(f'{family.label_names[i]}="{_escape_label(labels[i])}"' for i in order)
            if family.kind != HISTOGRAM:
                out.append(
                    f"{name}{{{pairs}}} {go_float(values[0])}\n"
                    if pairs
                    else f"{name} {go_float(values[0])}\n"
                )
                continue
            prefix = f"{pairs}," if pairs else ""
            running = 0.0
            for le, count in zip((*map(go_float, family.bounds), "+Inf"), values[:-1], strict=True):
                running += count
                out.append(f'{name}_bucket{{{prefix}le="{le}"}} {go_float(running)}\n')
            braced = f"{{{pairs}}}" if pairs else ""
            out.append(
                f"{name}_sum{braced} {go_float(values[-1])}\n{name}_count{braced} {go_float(running)}\n"
            )
    return "".join(out).encode()


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class SeriesCollector:
    """The prometheus_client collector over a handler's metrics plus its own ``mixer_prometheus_*``."""

    def __init__(
        self, metrics: tuple[MetricSeries, ...], budget: SeriesBudget, stats: HandlerStats, handler: str
    ) -> None:
        self._metrics = metrics
        self._budget = budget
        self._stats = stats
        self._handler = handler

    def collect(self) -> Iterator[Metric]:
        return render(self.snapshot())

    def snapshot(self) -> list[FamilySnapshot]:
        """Every family the handler exposes: the configured metrics, then the self metrics."""
        families = [metric.snapshot() for metric in self._metrics]
        handler: tuple[str, ...] = (self._handler,)
        families.append(
            FamilySnapshot(
                f"{SELF_METRIC_PREFIX}series",
                GAUGE,
                "Label sets held by the handler.",
                ("handler",),
                {handler: (float(self._budget.count), 0.0)},
                gauge_merge=SUM,
            )
        )
        stats = self._stats
        for name, help_text, value in (
            ("series_dropped", "Updates dropped: max_series label sets held.", stats.series_dropped),
            ("series_expired", "Label sets removed by the expiration policy.", stats.series_expired),
            ("instances_unmatched", "Instances no configured metric names.", stats.instances_unmatched),
        ):
            full_name = f"{SELF_METRIC_PREFIX}{name}_total"
            counts: dict[tuple[str, ...], tuple[float, ...]] = {handler: (float(value),)}
            families.append(FamilySnapshot(full_name, COUNTER, help_text, ("handler",), counts))
        families.append(
            FamilySnapshot(
                f"{SELF_METRIC_PREFIX}values_rejected_total",
                COUNTER,
                "Metric values not recorded, by metric and reason.",
                ("handler", "metric", "reason"),
                {
                    (self._handler, metric, reason): (float(count),)
                    for (metric, reason), count in list(stats.values_rejected.items())
                },
            )
        )
        return families
