"""The ``prometheus`` adapter: metric instances exposed for Prometheus to scrape (Mixer's adapter).

Registered through the plugin hook like any third-party adapter; see README.md in this folder for
the params, name matching, label and value rules, expiry and the listener.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mixer
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
from mixer import AdapterInfo, Handler, HandlerEnv, Stability
from mixer.lazy import lazy_getattr

if TYPE_CHECKING:
    from adapters.prometheus._handler import ListenError, PrometheusHandler, instance_keys
    from adapters.prometheus._series import HandlerStats, go_float, label_value

# Registration needs only the params model; aiohttp and prometheus_client load with the first handler.
_LAZY = {
    "ListenError": "adapters.prometheus._handler",
    "PrometheusHandler": "adapters.prometheus._handler",
    "instance_keys": "adapters.prometheus._handler",
    "HandlerStats": "adapters.prometheus._series",
    "go_float": "adapters.prometheus._series",
    "label_value": "adapters.prometheus._series",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


def build_handler(config: PrometheusConfig, env: HandlerEnv) -> Handler:
    from adapters.prometheus._handler import PrometheusHandler

    return PrometheusHandler(config, env)


ADAPTER = AdapterInfo(
    name="prometheus",
    description="Exposes metric instances on an HTTP endpoint for Prometheus to scrape.",
    templates=frozenset({"metric"}),
    config_model=PrometheusConfig,
    factory=build_handler,
    stability=Stability.STABLE,
    version=mixer.__version__,
)


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
    "build_handler",
    "go_float",
    "instance_keys",
    "label_value",
]
