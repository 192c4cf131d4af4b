"""The server's own metrics, in a registry of their own, served on the HTTP port's ``/metrics``.

Request counts and latencies are recorded per call through label children bound once, so the hot
path does no label look-up beyond a small dict. Everything the runtime already counts
(:class:`~mixer.runtime.RuntimeStats`) and the in-flight gauges are read at scrape time by
collectors instead of being updated per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mixer import __version__
from mixer.collectors import AdapterCollectors
from mixer.delivery import DeliveryCollector
from mixer.expr import request_pattern_stats
from mixer.quota.redis_store import RedisQuotaCollector
from mixer.runtime import RuntimeStats

#: From well under a millisecond (a Check answered from compiled rules) to the proxy's 5 s timeout.
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class MethodMetrics:
    """The counters of one RPC method, with its label children bound once."""

    __slots__ = ("_api", "_by_code", "_method", "_requests", "decode_errors", "duration")

    def __init__(self, metrics: ServerMetrics, api: str, method: str) -> None:
        self._api = api
        self._method = method
        self._requests = metrics.requests
        self._by_code: dict[str, Counter] = {}
        self.duration = metrics.request_duration.labels(api, method)
        self.decode_errors = metrics.decode_errors.labels(api, method)
        # OK is always there, so a dashboard finds the series before the first call.
        self._child("OK")

    def _child(self, code: str) -> Counter:
        child = self._requests.labels(self._api, self._method, code)
        self._by_code[code] = child
        return child

    def observe(self, code: str, seconds: float) -> None:
        """Count one call that ended with gRPC status ``code`` (its name) after ``seconds``."""
        child = self._by_code.get(code)
        if child is None:
            child = self._child(code)
        child.inc()
        self.duration.observe(seconds)


class ServerMetrics:
    """The server's metric families; :attr:`registry` is what ``/metrics`` renders.

    ``stats`` returns the current runtime's statistics (``None`` before there is one).
    """

    def __init__(
        self,
        stats: Callable[[], RuntimeStats | None],
        *,
        worker_index: int | None = None,
        worker_restarts: int = 0,
    ) -> None:
        registry = CollectorRegistry(auto_describe=True)
        self.registry = registry
        self.requests = Counter(
            "mixer_requests",
            "API calls answered, by API, method and gRPC status code",
            ["api", "method", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "mixer_request_duration_seconds",
            "Time from a call's arrival to its answer",
            ["api", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.decode_errors = Counter(
            "mixer_decode_errors",
            "Requests that could not be decoded (malformed, over a limit, or another global dictionary)",
            ["api", "method"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "mixer_config_reloads",
            "Config reloads attempted, by result",
            ["result"],
            registry=registry,
        )
        for result in ("success", "failure"):
            self.config_reloads.labels(result)
        self.config_generation = Gauge(
            "mixer_config_generation",
            "Generation of the runtime serving requests (grows by one per runtime built)",
            registry=registry,
        )
        self.config_last_reload = Gauge(
            "mixer_config_last_reload_success_timestamp_seconds",
            "When the serving config was last loaded successfully (Unix time)",
            registry=registry,
        )
        self.in_flight = Gauge(
            "mixer_requests_in_flight",
            "API calls being decoded or dispatched right now",
            ["api"],
            registry=registry,
        )
        info = Gauge(
            "mixer_build_info", "Always 1; labels say which build is running", ["version"], registry=registry
        )
        info.labels(__version__).set(1)
        if worker_index is not None:
            restarts = Gauge(
                "mixer_worker_restarts",
                "How often the supervisor restarted this worker slot before this process",
                ["worker"],
                registry=registry,
            )
            restarts.labels(str(worker_index)).set(worker_restarts)
        registry.register(RuntimeStatsCollector(stats))
        registry.register(DeliveryCollector())
        registry.register(RedisQuotaCollector())
        registry.register(AdapterCollectors())
        registry.register(RequestPatternCollector())

    def method(self, api: str, method: str) -> MethodMetrics:
        return MethodMetrics(self, api, method)

    def track_in_flight(self, api: str, read: Callable[[], float]) -> None:
        """Have ``mixer_requests_in_flight{api}`` read ``read()`` at scrape time."""
        self.in_flight.labels(api).set_function(read)

    def reload_succeeded(self, generation: int) -> None:
        self.config_reloads.labels("success").inc()
        self.loaded(generation)

    def reload_failed(self) -> None:
        self.config_reloads.labels("failure").inc()

    def loaded(self, generation: int) -> None:
        """The runtime of ``generation`` now serves (at start or after a reload)."""
        self.config_generation.set(generation)
        self.config_last_reload.set(time.time())


class RuntimeStatsCollector(Collector):
    """Exports :class:`RuntimeStats` as counters, read when scraped (the runtime only adds to ints)."""

    def __init__(self, stats: Callable[[], RuntimeStats | None]) -> None:
        self._stats = stats

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        stats = self._stats()
        if stats is None:
            return
        for name, doc, value in (
            ("mixer_check_calls", "Checks dispatched to the runtime", stats.check_calls),
            ("mixer_quota_calls", "Quota requests dispatched to the runtime", stats.quota_calls),
            ("mixer_report_calls", "Reports dispatched to the runtime", stats.report_calls),
            ("mixer_report_records", "Attribute bags received in Reports", stats.report_records),
            ("mixer_report_instances", "Instances handed to report handlers", stats.report_instances),
            (
                "mixer_rule_match_errors",
                "Rule matches that failed to evaluate (taken as false)",
                stats.match_errors,
            ),
            ("mixer_instance_errors", "Instances that failed to build", stats.instance_errors),
            ("mixer_header_errors", "Header operation values that failed to evaluate", stats.header_errors),
            ("mixer_check_cache_hits", "Check preconditions answered from the cache", stats.check_cache_hits),
            ("mixer_check_cache_misses", "Check preconditions not in the cache", stats.check_cache_misses),
            (
                "mixer_check_cache_evictions",
                "Cached Check answers evicted to stay within --check-cache-bytes",
                stats.check_cache_evictions,
            ),
            (
                "mixer_check_cache_drops",
                "Cached Check answers dropped as expired, used up, too large or invalidated",
                stats.check_cache_drops,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily(
            "mixer_check_cache_bytes",
            "Bytes charged to the cache of Check answers",
            value=stats.check_cache_bytes,
        )
        for name, doc, counts in (
            ("mixer_handler_errors", "Handler calls that raised, by handler", stats.handler_errors),
            (
                "mixer_handler_timeouts",
                "Handler calls that outlived their deadline, by handler",
                stats.handler_timeouts,
            ),
            ("mixer_handler_overloaded", "Report batches a handler refused as overloaded", stats.overloaded),
        ):
            family = CounterMetricFamily(name, doc, labels=["handler"])
            for handler, count in sorted(counts.items()):
                family.add_metric([handler], count)
            yield family


class RequestPatternCollector(Collector):
    """Exports the process's cache of regular expressions taken from requests, read when scraped."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        stats = request_pattern_stats()
        yield CounterMetricFamily(
            "mixer_request_regex_refused",
            "Regular expressions taken from requests that RE2 refused (each matched nothing)",
            value=stats.refused,
        )
        yield CounterMetricFamily(
            "mixer_request_regex_cache_evictions",
            "Compiled request regular expressions dropped from the cache to stay within its bytes",
            value=stats.evictions,
        )
        yield GaugeMetricFamily(
            "mixer_request_regex_cache_bytes",
            "Bytes charged to the cache of compiled request regular expressions",
            value=stats.bytes,
        )
