"""The prometheus adapter: params, recording, exposition, expiry, the listener and promtool's lint."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pydantic import BaseModel, ValidationError

import mixer
from adapters.prometheus import (
    ADAPTER,
    ListenError,
    MetricKind,
    PrometheusConfig,
    PrometheusHandler,
    go_float,
    instance_keys,
    label_value,
)
from mixer import HandlerEnv, ReportBatch, Stability
from mixer.templates import LogEntryInstance, MetricInstance
from plugins.manager import create_plugin_manager

#: The label names of every HTTP metric in Istio 1.4's stock prometheus handler, in its order.
STOCK_LABELS = (
    "reporter",
    "source_app",
    "source_principal",
    "source_workload",
    "source_workload_namespace",
    "source_version",
    "destination_app",
    "destination_principal",
    "destination_workload",
    "destination_workload_namespace",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "response_flags",
    "permissive_response_code",
    "permissive_response_policyid",
    "connection_security_policy",
)
DURATION_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
BYTES_BUCKETS = {"exponential_buckets": {"num_finite_buckets": 8, "scale": 1, "growth_factor": 10}}

REQUEST_COUNT = "requestcount.istio-system"
REQUEST_DURATION = "requestduration.istio-system"
REQUEST_SIZE = "requestsize.istio-system"
RESPONSE_SIZE = "responsesize.istio-system"


def stock_params() -> dict[str, Any]:
    """The handler params of Istio 1.4's chart, keys spelled as there (snake and camel mixed)."""
    return {
        "metricsExpirationPolicy": {"metricsExpiryDuration": "10m"},
        "metrics": [
            {
                "name": "requests_total",
                "instance_name": "requestcount.instance.istio-system",
                "kind": "COUNTER",
                "label_names": list(STOCK_LABELS),
            },
            {
                "name": "request_duration_seconds",
                "instance_name": "requestduration.instance.istio-system",
                "kind": "DISTRIBUTION",
                "label_names": list(STOCK_LABELS),
                "buckets": {"explicit_buckets": {"bounds": DURATION_BOUNDS}},
            },
            {
                "name": "request_bytes",
                "instance_name": "requestsize.instance.istio-system",
                "kind": "DISTRIBUTION",
                "label_names": list(STOCK_LABELS),
                "buckets": BYTES_BUCKETS,
            },
            {
                "name": "response_bytes",
                "instance_name": "responsesize.instance.istio-system",
                "kind": "DISTRIBUTION",
                "label_names": list(STOCK_LABELS),
                "buckets": BYTES_BUCKETS,
            },
        ],
    }


def stock_dimensions(**overrides: Any) -> dict[str, Any]:
    dims: dict[str, Any] = {
        "reporter": "destination",
        "source_app": "productpage",
        "source_principal": "cluster.local/ns/default/sa/bookinfo-productpage",
        "source_workload": "productpage-v1",
        "source_workload_namespace": "default",
        "source_version": "v1",
        "destination_app": "reviews",
        "destination_principal": "cluster.local/ns/default/sa/bookinfo-reviews",
        "destination_workload": "reviews-v2",
        "destination_workload_namespace": "default",
        "destination_version": "v2",
        "destination_service": "reviews.default.svc.cluster.local",
        "destination_service_name": "reviews",
        "destination_service_namespace": "default",
        "request_protocol": "http",
        "response_code": 200,
        "response_flags": "-",
        "permissive_response_code": "none",
        "permissive_response_policyid": "none",
        "connection_security_policy": "mutual_tls",
    }
    dims.update(overrides)
    return dims


def make_handler(
    params: dict[str, Any], *, clock: Callable[[], float] | None = None, name: str = "prometheus.istio-system"
) -> PrometheusHandler:
    params = {"enable_listener": False, **params}
    config = PrometheusConfig.model_validate(params)
    env = HandlerEnv(handler_name=name, logger=logging.getLogger("test.prometheus"))
    if clock is None:
        return PrometheusHandler(config, env)
    return PrometheusHandler(config, env, clock=clock)


def metric(name: str, kind: str, instance: str = "m.default", **extra: Any) -> dict[str, Any]:
    return {"name": name, "instance_name": instance, "kind": kind, "label_names": ["code"], **extra}


def report(handler: PrometheusHandler, *instances: MetricInstance) -> None:
    handler.handle_report(ReportBatch(handler="prometheus.istio-system", instances=list(instances)))


def exposition(handler: PrometheusHandler) -> str:
    return handler.exposition().decode()


def samples(handler: PrometheusHandler) -> list[Sample]:
    return [s for family in text_string_to_metric_families(exposition(handler)) for s in family.samples]


def value(source: PrometheusHandler, sample_name: str, **labels: str) -> float | None:
    """The value of the one sample with this name whose labels include ``labels``; None if absent."""
    found = [s for s in samples(source) if s.name == sample_name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, found
    return found[0].value if found else None


# --- registration -------------------------------------------------------------------------------


def test_declares_its_adapter() -> None:
    info = ADAPTER
    assert info.name == "prometheus"
    assert info.templates == frozenset({"metric"})
    assert info.kinds() == ("prometheus",)
    assert info.stability is Stability.STABLE
    assert info.config_model is PrometheusConfig
    registered = create_plugin_manager(blocked=()).registry().adapter("prometheus")
    assert registered is not None
    assert registered.factory is ADAPTER.factory
    assert registered.version == mixer.__version__


def test_factory_builds_a_handler_without_side_effects() -> None:
    env = HandlerEnv(handler_name="prometheus.istio-system", logger=logging.getLogger("test"))
    handler = ADAPTER.build(PrometheusConfig(), env)
    assert isinstance(handler, PrometheusHandler)
    assert handler.port is None
    with pytest.raises(TypeError, match="PrometheusConfig"):
        ADAPTER.build(OtherParams(), env)


class OtherParams(BaseModel):
    """Another adapter's params, to check the factory's type guard."""


# --- params -------------------------------------------------------------------------------------


def test_stock_istio_14_handler_params_load() -> None:
    config = PrometheusConfig.model_validate(stock_params())
    assert [m.full_name for m in config.metrics] == [
        "istio_requests_total",
        "istio_request_duration_seconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ]
    assert [m.kind for m in config.metrics] == [MetricKind.COUNTER, *[MetricKind.DISTRIBUTION] * 3]
    assert all(tuple(m.label_names) == STOCK_LABELS for m in config.metrics)
    duration_buckets = config.metrics[1].buckets
    assert duration_buckets is not None
    assert duration_buckets.upper_bounds() == tuple(DURATION_BOUNDS)
    policy = config.metrics_expiration_policy
    assert policy is not None
    assert policy.metrics_expiry_duration == timedelta(minutes=10)
    assert policy.check_interval == timedelta(minutes=5)  # half the expiry when not given, as in Mixer
    assert (config.host, config.port, config.enable_listener) == ("127.0.0.1", 42422, True)


def test_camel_case_and_snake_case_keys_mean_the_same() -> None:
    snake = {
        "metrics": [
            {
                "instance_name": "a.default",
                "kind": "DISTRIBUTION",
                "label_names": ["x"],
                "buckets": {"linear_buckets": {"num_finite_buckets": 2, "width": 1, "offset": 0}},
            }
        ],
        "metrics_expiration_policy": {"metrics_expiry_duration": 60, "expiry_check_interval_duration": "1s"},
        "enable_listener": False,
        "max_series": 10,
    }
    camel = {
        "metrics": [
            {
                "instanceName": "a.default",
                "kind": "DISTRIBUTION",
                "labelNames": ["x"],
                "buckets": {"linearBuckets": {"numFiniteBuckets": 2, "width": 1, "offset": 0}},
            }
        ],
        "metricsExpirationPolicy": {"metricsExpiryDuration": 60, "expiryCheckIntervalDuration": "1s"},
        "enableListener": False,
        "maxSeries": 10,
    }
    assert PrometheusConfig.model_validate(snake) == PrometheusConfig.model_validate(camel)


def test_name_defaults_to_the_instance_name_made_safe() -> None:
    config = PrometheusConfig.model_validate(
        {"metrics": [{"instance_name": "requestcount.instance.istio-system", "kind": "COUNTER"}]}
    )
    assert config.metrics[0].full_name == "istio_requestcount_instance_istiosystem"


def test_empty_namespace_means_the_default() -> None:
    config = PrometheusConfig.model_validate({"metrics": [metric("x", "GAUGE", namespace="")]})
    assert config.metrics[0].full_name == "istio_x"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"metrics": [metric("d", "DISTRIBUTION")]}, "buckets: required for kind DISTRIBUTION"),
        (
            {"metrics": [metric("d", "DISTRIBUTION", buckets={"explicit_buckets": {"bounds": [1, 1]}})]},
            "metrics.0.buckets.explicit_buckets.bounds",
        ),
        (
            {"metrics": [metric("d", "DISTRIBUTION", buckets={"explicit_buckets": {"bounds": [2, 1]}})]},
            "strictly increasing",
        ),
        ({"metrics": [metric("d", "DISTRIBUTION", buckets={"explicit_buckets": {"bounds": []}})]}, "bounds"),
        (
            {
                "metrics": [
                    metric(
                        "d",
                        "DISTRIBUTION",
                        buckets={
                            "explicit_buckets": {"bounds": [1]},
                            "linear_buckets": {"num_finite_buckets": 1, "width": 1},
                        },
                    )
                ]
            },
            "exactly one of explicit_buckets, linear_buckets, exponential_buckets",
        ),
        (
            {
                "metrics": [
                    metric(
                        "d",
                        "DISTRIBUTION",
                        buckets={
                            "exponential_buckets": {"num_finite_buckets": 3, "growth_factor": 1, "scale": 1}
                        },
                    )
                ]
            },
            "metrics.0.buckets.exponential_buckets.growth_factor",
        ),
        (
            {
                "metrics": [
                    metric(
                        "d", "DISTRIBUTION", buckets={"linear_buckets": {"num_finite_buckets": 0, "width": 1}}
                    )
                ]
            },
            "metrics.0.buckets.linear_buckets.num_finite_buckets",
        ),
        (
            {
                "metrics": [
                    metric(
                        "d",
                        "DISTRIBUTION",
                        buckets={
                            "exponential_buckets": {
                                "num_finite_buckets": 900,
                                "growth_factor": 10,
                                "scale": 1,
                            }
                        },
                    )
                ]
            },
            "overflows",
        ),
        ({"metrics": [metric("requests-total", "COUNTER")]}, "metrics.0.name"),
        ({"metrics": [metric("x", "COUNTER", namespace="istio-system")]}, "metrics.0.namespace"),
        ({"metrics": [metric("x", "COUNTER", label_names=["source-app"])]}, "label_names[0] 'source-app'"),
        ({"metrics": [metric("x", "COUNTER", label_names=["__name"])]}, "reserved"),
        ({"metrics": [metric("x", "COUNTER", label_names=["a", "a"])]}, "label_names[1] 'a' is listed twice"),
        (
            {
                "metrics": [
                    metric(
                        "x", "DISTRIBUTION", label_names=["le"], buckets={"explicit_buckets": {"bounds": [1]}}
                    )
                ]
            },
            "'le' is reserved",
        ),
        ({"metrics": [metric("x", "HISTOGRAM")]}, "metrics.0.kind"),
        ({"metrics": [{"name": "x", "instance_name": "m.default"}]}, "metrics.0.kind"),
        ({"metrics": [metric("x", "COUNTER", labels=["a"])]}, "metrics.0.labels"),
        ({"metrics": [metric("x", "COUNTER"), metric("x", "GAUGE")]}, "metrics[1].name: 'istio_x' clashes"),
        ({"metrics": [metric("x", "COUNTER"), metric("x_total", "GAUGE")]}, "clashes with metrics[0]"),
        ({"metrics": [metric("prometheus_series", "COUNTER", namespace="mixer")]}, "reserved"),
        ({"metrics_expiration_policy": {"metrics_expiry_duration": "10 minutes"}}, "metrics_expiry_duration"),
        ({"metrics_expiration_policy": {"metrics_expiry_duration": "0s"}}, "greater than"),
        ({"metrics_expiration_policy": {}}, "metrics_expiration_policy.metrics_expiry_duration"),
        ({"listen": "42422"}, "listen"),
        ({"listen": "127.0.0.1:70000"}, "0..65535"),
        ({"listen": "127.0.0.1:http"}, "not a number"),
        ({"max_series": 0}, "max_series"),
        ({"metric": []}, "metric"),
    ],
)
def test_invalid_params_are_rejected_naming_the_field(params: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PrometheusConfig.model_validate(params)
    assert expected in str(caught.value)


# --- recording ----------------------------------------------------------------------------------


def test_counter_adds_values_per_label_set() -> None:
    handler = make_handler(stock_params())
    report(
        handler,
        MetricInstance(REQUEST_COUNT, value=1, dimensions=stock_dimensions()),
        MetricInstance(REQUEST_COUNT, value=1, dimensions=stock_dimensions()),
        MetricInstance(REQUEST_COUNT, value=1, dimensions=stock_dimensions(response_code=503)),
    )
    report(handler, MetricInstance(REQUEST_COUNT, value=2.5, dimensions=stock_dimensions()))
    assert value(handler, "istio_requests_total", response_code="200", reporter="destination") == 4.5
    assert value(handler, "istio_requests_total", response_code="503") == 1.0
    ok = [
        s for s in samples(handler) if s.name == "istio_requests_total" and s.labels["response_code"] == "200"
    ]
    assert set(ok[0].labels) == set(STOCK_LABELS)
    assert handler.series_count == 2


def test_gauge_keeps_the_last_value() -> None:
    handler = make_handler({"metrics": [metric("queue", "GAUGE")]})
    report(
        handler,
        MetricInstance("m.default", value=5, dimensions={"code": "a"}),
        MetricInstance("m.default", value=-2.5, dimensions={"code": "a"}),
    )
    assert value(handler, "istio_queue", code="a") == -2.5


def test_distribution_observes_durations_in_seconds() -> None:
    handler = make_handler(stock_params())
    for millis in (3, 30, 30, 700):
        report(
            handler,
            MetricInstance(
                REQUEST_DURATION, value=timedelta(milliseconds=millis), dimensions=stock_dimensions()
            ),
        )
    name = "istio_request_duration_seconds"
    assert value(handler, f"{name}_bucket", le="0.005") == 1
    assert value(handler, f"{name}_bucket", le="0.025") == 1
    assert value(handler, f"{name}_bucket", le="0.05") == 3
    assert value(handler, f"{name}_bucket", le="0.5") == 3
    assert value(handler, f"{name}_bucket", le="1") == 4
    assert value(handler, f"{name}_bucket", le="+Inf") == 4
    assert value(handler, f"{name}_count") == 4
    assert value(handler, f"{name}_sum") == pytest.approx(0.763)


def test_exponential_buckets_follow_mixers_layout() -> None:
    handler = make_handler(stock_params())
    for size in (0, 1, 150, 10**9):
        report(handler, MetricInstance(REQUEST_SIZE, value=size, dimensions=stock_dimensions()))
    text = exposition(handler)
    les = [
        line.split('le="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("istio_request_bytes_bucket")
    ]
    # scale * growth_factor ** i for i in 0..num_finite_buckets, printed as Go prints floats.
    assert les == ["1", "10", "100", "1000", "10000", "100000", "1e+06", "1e+07", "1e+08", "+Inf"]
    assert value(handler, "istio_request_bytes_bucket", le="1") == 2  # 0 and 1: le is inclusive
    assert value(handler, "istio_request_bytes_bucket", le="100") == 2
    assert value(handler, "istio_request_bytes_bucket", le="1000") == 3
    assert value(handler, "istio_request_bytes_bucket", le="1e+08") == 3
    assert value(handler, "istio_request_bytes_bucket", le="+Inf") == 4


def test_linear_buckets_layout() -> None:
    buckets = {"linear_buckets": {"num_finite_buckets": 3, "width": 10, "offset": 5}}
    handler = make_handler({"metrics": [metric("latency", "DISTRIBUTION", buckets=buckets)]})
    for observed in (4, 5, 6, 35, 36):
        report(handler, MetricInstance("m.default", value=observed, dimensions={"code": "a"}))
    bucket = "istio_latency_bucket"
    # offset + width * i for i in 0..num_finite_buckets
    assert [(le, value(handler, bucket, le=le)) for le in ("5", "15", "25", "35", "+Inf")] == [
        ("5", 2),
        ("15", 3),
        ("25", 3),
        ("35", 4),
        ("+Inf", 5),
    ]


def test_counter_names_are_exposed_as_mixer_did_without_a_total_suffix() -> None:
    # prometheus_client's parser (behind value()) renames counter samples to *_total, so the raw
    # text is what shows the name Mixer's Go client wrote (the metrics task queries it).
    handler = make_handler(
        {"metrics": [metric("double_request_count", "COUNTER"), metric("requests_total", "COUNTER")]}
    )
    report(handler, MetricInstance("m.default", value=2, dimensions={"code": "a"}))
    lines = exposition(handler).splitlines()
    assert "# TYPE istio_double_request_count counter" in lines
    assert 'istio_double_request_count{code="a"} 2' in lines
    assert 'istio_requests_total{code="a"} 2' in lines
    assert not [line for line in lines if "double_request_count_total" in line or "total_total" in line]
    assert "_created" not in exposition(handler)


def test_openmetrics_keeps_the_suffix_it_requires() -> None:
    handler = make_handler({"metrics": [metric("double_request_count", "COUNTER")]})
    report(handler, MetricInstance("m.default", value=2, dimensions={"code": "a"}))
    text = generate_openmetrics(handler.registry).decode()  # type: ignore[no-untyped-call]
    assert "# TYPE istio_double_request_count counter" in text
    assert 'istio_double_request_count_total{code="a"} 2.0' in text


@pytest.mark.parametrize(
    ("kind", "bad_value", "reason"),
    [
        ("COUNTER", -1, "negative"),
        ("COUNTER", math.nan, "not_finite"),
        ("COUNTER", math.inf, "not_finite"),
        ("COUNTER", True, "not_a_number"),
        ("COUNTER", "many", "not_a_number"),
        ("COUNTER", None, "not_a_number"),
        ("GAUGE", {"a": "b"}, "not_a_number"),
        ("DISTRIBUTION", math.nan, "not_finite"),
        ("DISTRIBUTION", "x", "not_a_number"),
    ],
)
def test_bad_values_are_rejected_and_counted(kind: str, bad_value: object, reason: str) -> None:
    extra: dict[str, Any] = (
        {"buckets": {"explicit_buckets": {"bounds": [1]}}} if kind == "DISTRIBUTION" else {}
    )
    handler = make_handler({"metrics": [metric("x", kind, **extra)]})
    report(handler, MetricInstance("m.default", value=bad_value, dimensions={"code": "a"}))
    assert handler.series_count == 0
    assert handler.stats.values_rejected == {("istio_x", reason): 1}
    assert value(handler, "mixer_prometheus_values_rejected_total", metric="istio_x", reason=reason) == 1


def test_numeric_strings_are_values_as_in_mixer() -> None:
    handler = make_handler({"metrics": [metric("x", "COUNTER")]})
    report(handler, MetricInstance("m.default", value="2.5", dimensions={"code": "a"}))
    assert value(handler, "istio_x_total", code="a") == 2.5


@pytest.mark.parametrize(
    ("dimension", "expected"),
    [
        ("text", "text"),
        (None, ""),
        (True, "true"),
        (False, "false"),
        (200, "200"),
        (2.5, "2.5"),
        (200.0, "200"),
        (1e6, "1e+06"),
        (timedelta(milliseconds=1500), "1.5s"),
        (timedelta(seconds=90), "1m30s"),
        (ipaddress.ip_address("10.0.0.1"), "10.0.0.1"),
        (ipaddress.ip_address("::1"), "::1"),
        (b"bytes\xff", "bytes\ufffd"),
        (datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC), "2020-01-02T03:04:05+00:00"),
        ({"b": "2", "a": "1"}, "a=1&b=2"),
    ],
)
def test_dimension_values_become_label_strings(dimension: object, expected: str) -> None:
    assert label_value(dimension) == expected
    handler = make_handler({"metrics": [metric("x", "COUNTER")]})
    report(handler, MetricInstance("m.default", value=1, dimensions={"code": dimension}))
    assert value(handler, "istio_x_total", code=expected) == 1


def test_missing_dimensions_become_empty_labels_and_extra_ones_are_ignored() -> None:
    handler = make_handler({"metrics": [metric("x", "COUNTER", label_names=["a", "b"])]})
    report(handler, MetricInstance("m.default", value=1, dimensions={"a": "1", "unlisted": "z"}))
    (sample,) = [s for s in samples(handler) if s.name == "istio_x_total"]
    # An empty label value is the same as no label to Prometheus; the parser drops it as well.
    assert sample.labels.get("b", "") == ""
    assert "unlisted" not in sample.labels
    assert 'b=""' in exposition(handler)


def test_values_with_the_same_label_strings_share_one_series() -> None:
    handler = make_handler({"metrics": [metric("x", "COUNTER")]})
    for dimension in (200, "200", 200, {"a": "1"}, {"a": "1"}, math.nan, math.nan):
        report(handler, MetricInstance("m.default", value=1, dimensions={"code": dimension}))
    assert value(handler, "istio_x_total", code="200") == 3
    assert value(handler, "istio_x_total", code="a=1") == 2
    assert value(handler, "istio_x_total", code="NaN") == 2
    assert handler.series_count == 3


def test_metrics_without_labels_have_one_series() -> None:
    handler = make_handler({"metrics": [metric("x", "COUNTER", label_names=[])]})
    report(
        handler,
        MetricInstance("m.default", value=1, dimensions={}),
        MetricInstance("m.default", value=2, dimensions={"code": "ignored"}),
    )
    assert value(handler, "istio_x_total") == 3
    assert handler.series_count == 1


def test_label_values_that_are_not_valid_utf8_are_repaired() -> None:
    handler = make_handler({"metrics": [metric("x", "COUNTER")]})
    for _ in range(2):
        report(handler, MetricInstance("m.default", value=1, dimensions={"code": "a\ud800b"}))
    report(handler, MetricInstance("m.default", value=1, dimensions={"code": "a\ufffdb"}))
    assert value(handler, "istio_x_total", code="a\ufffdb") == 3
    assert handler.series_count == 1


@pytest.mark.parametrize(
    ("configured", "arriving", "matches"),
    [
        ("requestcount.istio-system", "requestcount.istio-system", True),
        ("requestcount.instance.istio-system", "requestcount.istio-system", True),
        ("requestcount.metric.istio-system", "requestcount.istio-system", True),
        ("requestcount", "requestcount.istio-system", True),
        ("requestcount", "requestcount.default", True),
        ("requestcount.istio-system", "requestcount.default", False),
        ("requestcount.instance.istio-system", "requestcount.default", False),
        ("requestcount.istio-system", "requestcount.metric.istio-system", True),
        ("requestcount", "requestsize.istio-system", False),
    ],
)
def test_instance_names_match_in_mixers_forms(configured: str, arriving: str, matches: bool) -> None:
    handler = make_handler({"metrics": [metric("x", "COUNTER", instance=configured)]})
    report(handler, MetricInstance(arriving, value=1, dimensions={"code": "a"}))
    assert (value(handler, "istio_x_total", code="a") == 1) is matches
    assert handler.stats.instances_unmatched == (0 if matches else 1)


def test_instance_keys() -> None:
    assert instance_keys("a.ns") == ("a.ns", "a")
    assert instance_keys("a.metric.ns") == ("a.ns", "a")
    assert instance_keys("a") == ("", "a")


def test_one_instance_may_feed_several_metrics() -> None:
    buckets = {"explicit_buckets": {"bounds": [1, 10]}}
    handler = make_handler(
        {
            "metrics": [
                metric("size_events_total", "COUNTER", instance="size.default"),
                metric("sizes", "DISTRIBUTION", instance="size", buckets=buckets),
            ]
        }
    )
    report(handler, MetricInstance("size.default", value=5, dimensions={"code": "a"}))
    assert value(handler, "istio_size_events_total", code="a") == 5
    assert value(handler, "istio_sizes_count", code="a") == 1


def test_instances_of_other_templates_are_not_recorded() -> None:
    handler = make_handler({"metrics": [metric("x", "COUNTER")]})
    handler.handle_report(ReportBatch(handler="h", instances=[LogEntryInstance("m.default")]))
    assert handler.series_count == 0
    assert handler.stats.instances_unmatched == 1
    assert value(handler, "mixer_prometheus_instances_unmatched_total") == 1


def test_series_beyond_max_series_are_dropped_and_counted() -> None:
    handler = make_handler(
        {"max_series": 2, "metrics": [metric("x", "COUNTER"), metric("y", "GAUGE", "n.d")]}
    )
    report(
        handler,
        MetricInstance("m.default", value=1, dimensions={"code": "a"}),
        MetricInstance("n.d", value=1, dimensions={"code": "a"}),
        MetricInstance("m.default", value=1, dimensions={"code": "b"}),
        MetricInstance("m.default", value=1, dimensions={"code": "a"}),
    )
    assert handler.series_count == 2
    assert handler.stats.series_dropped == 1
    assert value(handler, "istio_x_total", code="a") == 2  # held series still update
    assert value(handler, "istio_x_total", code="b") is None
    assert value(handler, "mixer_prometheus_series_dropped_total", handler="prometheus.istio-system") == 1
    assert value(handler, "mixer_prometheus_series") == 2


def test_series_are_bounded_by_the_bytes_of_their_labels_too() -> None:
    handler = make_handler({"metrics": [metric("x", "COUNTER")]})
    handler._budget.max_bytes = 1024 * 1024
    long_paths = [
        MetricInstance("m.default", value=1, dimensions={"code": f"/{n}" + "p" * 100_000}) for n in range(20)
    ]
    report(handler, *long_paths)
    # 1 MiB of budget holds five series of 200 KB (label text twice), not twenty.
    assert handler.series_count == 5
    assert handler.stats.series_dropped == 15
    assert handler._budget.bytes <= 1024 * 1024


# --- expiry -------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_expiry_removes_label_sets_not_updated_within_the_duration() -> None:
    clock = FakeClock()
    handler = make_handler(
        {
            "max_series": 2,
            "metrics_expiration_policy": {"metrics_expiry_duration": "10s"},
            "metrics": [metric("x", "COUNTER")],
        },
        clock=clock,
    )
    report(handler, MetricInstance("m.default", value=1, dimensions={"code": "old"}))
    clock.now += 8
    report(handler, MetricInstance("m.default", value=1, dimensions={"code": "fresh"}))
    clock.now += 3
    assert handler.expire_stale() == 1
    assert value(handler, "istio_x_total", code="old") is None
    assert value(handler, "istio_x_total", code="fresh") == 1
    assert handler.stats.series_expired == 1
    # The freed slot under max_series is usable again.
    report(handler, MetricInstance("m.default", value=1, dimensions={"code": "new"}))
    assert handler.series_count == 2
    assert handler.stats.series_dropped == 0


async def test_expiry_runs_on_the_check_interval_after_start() -> None:
    handler = make_handler(
        {
            "metrics_expiration_policy": {
                "metrics_expiry_duration": "50ms",
                "expiry_check_interval_duration": "10ms",
            },
            "metrics": [metric("x", "COUNTER")],
        }
    )
    await handler.start()
    try:
        report(handler, MetricInstance("m.default", value=1, dimensions={"code": "a"}))
        assert handler.series_count == 1
        for _ in range(200):
            if handler.series_count == 0:
                break
            await asyncio.sleep(0.01)
        assert handler.series_count == 0
        assert handler.stats.series_expired == 1
    finally:
        await handler.shutdown(1.0)


def test_no_policy_no_expiry() -> None:
    handler = make_handler({"metrics": [metric("x", "COUNTER")]})
    report(handler, MetricInstance("m.default", value=1, dimensions={"code": "a"}))
    assert handler.expire_stale(now=math.inf) == 0


# --- lifecycle and the listener -----------------------------------------------------------------


@pytest.fixture
async def served() -> AsyncIterator[PrometheusHandler]:
    handler = make_handler({**stock_params(), "listen": "127.0.0.1:0", "enable_listener": True})
    await handler.start()
    try:
        yield handler
    finally:
        await handler.shutdown(2.0)


async def test_metrics_are_served_over_http(served: PrometheusHandler) -> None:
    assert served.port
    report(served, MetricInstance(REQUEST_COUNT, value=1, dimensions=stock_dimensions()))
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{served.port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["istio_requests"].type == "counter"
    assert families["istio_requests"].samples[0].value == 1


async def test_openmetrics_is_negotiated(served: PrometheusHandler) -> None:
    report(served, MetricInstance(REQUEST_COUNT, value=1, dimensions=stock_dimensions()))
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{served.port}/metrics", headers={"Accept": accept}) as response,
    ):
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = await response.text()
    assert text.endswith("# EOF\n")
    assert "istio_requests_total{" in text


async def test_a_second_handler_on_the_same_address_fails_to_start(served: PrometheusHandler) -> None:
    other = make_handler(
        {"listen": f"127.0.0.1:{served.port}", "enable_listener": True}, name="other.default"
    )
    with pytest.raises(ListenError, match=f"'other.default' cannot listen on '127.0.0.1:{served.port}'"):
        await other.start()
    await other.shutdown(1.0)


async def test_shutdown_is_idempotent_and_stops_intake_and_listener() -> None:
    handler = make_handler(
        {
            "listen": "127.0.0.1:0",
            "enable_listener": True,
            "metrics_expiration_policy": {"metrics_expiry_duration": "1h"},
            "metrics": [metric("x", "COUNTER")],
        }
    )
    await handler.start()
    await handler.start()  # a second start is a no-op
    port = handler.port
    await handler.shutdown(1.0)
    await handler.shutdown(1.0)
    report(handler, MetricInstance("m.default", value=1, dimensions={"code": "a"}))
    assert handler.series_count == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics"):
            pass
    with pytest.raises(RuntimeError, match="shut down"):
        await handler.start()


async def test_without_listener_start_binds_nothing() -> None:
    handler = make_handler({"metrics": [metric("x", "COUNTER")]})
    await handler.start()
    assert handler.port is None
    await handler.shutdown(1.0)


def test_each_handler_has_its_own_registry() -> None:
    first = make_handler({"metrics": [metric("x", "COUNTER")]})
    second = make_handler({"metrics": [metric("x", "COUNTER")]})
    report(first, MetricInstance("m.default", value=1, dimensions={"code": "a"}))
    assert value(first, "istio_x_total") == 1
    assert value(second, "istio_x_total") is None


# --- promtool -----------------------------------------------------------------------------------


@pytest.mark.backends
def test_exposition_passes_promtool_check_metrics() -> None:
    promtool = shutil.which("promtool")
    # `make test` installs it (make system-deps); a missing promtool is a broken setup, not a skip.
    assert promtool is not None, (
        "promtool is not installed: run `make system-deps` (Debian package prometheus)"
    )
    handler = make_handler(stock_params())
    for code, millis, size in ((200, 12, 512), (503, 2300, 0), (200, 40, 12_000)):
        dims = stock_dimensions(response_code=code)
        report(
            handler,
            MetricInstance(REQUEST_COUNT, value=1, dimensions=dims),
            MetricInstance(REQUEST_DURATION, value=timedelta(milliseconds=millis), dimensions=dims),
            MetricInstance(REQUEST_SIZE, value=size, dimensions=dims),
            MetricInstance(RESPONSE_SIZE, value=size * 3, dimensions=dims),
            MetricInstance(REQUEST_COUNT, value=-1, dimensions=dims),  # fills the rejected-values self metric
        )
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=handler.exposition(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


# --- formatting helpers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (1.0, "1"),
        (0.005, "0.005"),
        (2.5, "2.5"),
        (100000.0, "100000"),
        (1e6, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (1e-5, "1e-05"),
        (-0.25, "-0.25"),
        (math.inf, "+Inf"),
        (math.nan, "NaN"),
    ],
)
def test_go_float(number: float, expected: str) -> None:
    assert go_float(number) == expected
