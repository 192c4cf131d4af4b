"""The ``prometheus`` adapter: metric instances exposed for Prometheus to scrape (Mixer's adapter).

Registered through the plugin hook like any third-party adapter; see README.md in this folder for
the params, name matching, label and value rules, expiry and the listener.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.prometheus._config import (
    DEFAULT_LISTEN,
    DEFAULT_MAX_SERIES,
    BucketsDefinition,
    ExplicitBuckets,
    ExponentialBuckets,
    LinearBuckets,
    MetricInfo,
    MetricKind,
    MetricsExpirationPolicy,
    PrometheusConfig,
)
from adapters.prometheus._values import go_float, label_value
from mixer import AdapterInfo, Stability, lazy_factory
from mixer.lazy import lazy_getattr

__all__ = [
    "ADAPTER",
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_SERIES",
    "BucketsDefinition",
    "ExplicitBuckets",
    "ExponentialBuckets",
    "HandlerStats",
    "LinearBuckets",
    "ListenError",
    "MetricInfo",
    "MetricKind",
    "MetricsExpirationPolicy",
    "PrometheusConfig",
    "PrometheusHandler",
    "go_float",
    "instance_keys",
    "label_value",
]

if TYPE_CHECKING:
    from adapters.prometheus._handler import ListenError, PrometheusHandler, instance_keys
    from adapters.prometheus._series import HandlerStats

# Registration needs only the params model; aiohttp and prometheus_client load with the first handler.
__getattr__ = lazy_getattr(
    __name__,
    {
        "adapters.prometheus._handler": ("ListenError", "PrometheusHandler", "instance_keys"),
        "adapters.prometheus._series": ("HandlerStats",),
    },
)


ADAPTER = AdapterInfo(
    name="prometheus",
    description="Exposes metric instances on an HTTP endpoint for Prometheus to scrape.",
    templates=frozenset({"metric"}),
    config_model=PrometheusConfig,
    factory=lazy_factory("adapters.prometheus._handler:PrometheusHandler"),
    stability=Stability.STABLE,
)
