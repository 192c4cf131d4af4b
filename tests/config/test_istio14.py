"""The stock Istio 1.4 telemetry config in deploy/config loads in both forms, to the same config."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mixer.attributes import AttributeBag
from mixer.config import CompiledInstanceBuilder, ValidatedConfig, load_config
from mixer.registry import Registry
from mixer.templates import LogEntryInstance, MetricInstance
from plugins.manager import create_plugin_manager

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "config" / "istio-1.4"
FORMS = ("v1.1", "legacy")
HTTP_DIMENSIONS = {
    "reporter", "source_workload", "source_workload_namespace", "source_principal", "source_app",
    "source_version", "destination_workload", "destination_workload_namespace", "destination_principal",
    "destination_app", "destination_version", "destination_service", "destination_service_name",
    "destination_service_namespace", "request_protocol", "response_code", "grpc_response_status",
    "response_flags", "connection_security_policy",
}  # fmt: skip


@pytest.fixture(scope="module")
def real_registry() -> Registry:
    return create_plugin_manager(load_entry_points=False, blocked=()).registry()


@pytest.fixture(scope="module")
def configs(real_registry: Registry) -> dict[str, ValidatedConfig]:
    return {form: load_config([ROOT / form], real_registry, environ={}) for form in FORMS}


def short(fq_name: str) -> str:
    return fq_name.split(".", 1)[0]


def summary(config: ValidatedConfig) -> dict[str, Any]:
    """The config with names reduced to what both forms share: short names and adapters."""
    instances = {}
    for name, inst in config.instances.items():
        assert isinstance(inst.builder, CompiledInstanceBuilder)
        instances[short(name)] = (inst.template, inst.builder.expression_texts())
    handlers = {h.adapter: h.params.model_dump() for h in config.handlers.values()}
    rules = {
        short(rule.name): (
            rule.match.text if rule.match else "",
            [
                (config.handlers[a.handler].adapter, sorted(short(i) for i in a.instances))
                for a in rule.actions
            ],
        )
        for rule in config.rules
    }
    manifest = {name: config.manifest[name] for name in config.manifest}
    return {"instances": instances, "handlers": handlers, "rules": rules, "manifest": manifest}


@pytest.mark.parametrize("form", FORMS)
def test_loads(configs: dict[str, ValidatedConfig], form: str) -> None:
    config = configs[form]
    names = sorted(short(n) for n in config.instances)
    assert names == sorted(
        [
            "requestcount", "requestduration", "requestsize", "responsesize",
            "tcpbytesent", "tcpbytereceived", "tcpconnectionsopened", "tcpconnectionsclosed",
            "accesslog", "tcpaccesslog", "tracespan",
        ]
    )  # fmt: skip
    assert sorted(h.adapter for h in config.handlers.values()) == ["otlp", "prometheus", "stdio"]
    assert sorted(short(r.name) for r in config.rules) == [
        "promhttp", "promtcp", "promtcpconnectionclosed", "promtcpconnectionopen", "stdio", "stdiotcp",
        "tracing",
    ]  # fmt: skip
    for name, inst in config.instances.items():
        if short(name) in ("requestcount", "requestduration", "requestsize", "responsesize"):
            assert isinstance(inst.builder, CompiledInstanceBuilder)
            assert set(inst.builder.expression_texts()["dimensions"]) == HTTP_DIMENSIONS


def test_both_forms_are_equivalent(configs: dict[str, ValidatedConfig]) -> None:
    assert summary(configs["v1.1"]) == summary(configs["legacy"])


def test_prometheus_handler_params(configs: dict[str, ValidatedConfig]) -> None:
    (params,) = [h.params for h in configs["v1.1"].handlers.values() if h.adapter == "prometheus"]
    metrics = {m["name"]: m for m in params.model_dump()["metrics"]}
    assert metrics["requests_total"]["kind"] == "COUNTER"
    assert metrics["requests_total"]["namespace"] == "istio"
    assert metrics["request_duration_seconds"]["buckets"]["explicit_buckets"]["bounds"][0] == 0.005
    assert metrics["request_bytes"]["buckets"]["exponential_buckets"]["num_finite_buckets"] == 8
    assert set(metrics["requests_total"]["label_names"]) == HTTP_DIMENSIONS


def inbound_http_bag() -> AttributeBag:
    return AttributeBag(
        {
            "context.protocol": "http",
            "context.reporter.kind": "inbound",
            "source.labels": {"app": "productpage", "version": "v1"},
            "destination.service.host": "reviews.default.svc.cluster.local",
            "request.time": datetime(2020, 1, 1, tzinfo=UTC),
            "response.time": datetime(2020, 1, 1, 0, 0, 1, tzinfo=UTC),
            "response.code": 503,
            "connection.mtls": True,
            "request.useragent": "curl/7",
        }
    )


@pytest.mark.parametrize("form", FORMS)
def test_builds_instances_from_a_request(configs: dict[str, ValidatedConfig], form: str) -> None:
    config = configs[form]
    bag = inbound_http_bag()
    (promhttp,) = [r for r in config.rules if short(r.name) == "promhttp"]
    assert promhttp.match is not None
    assert promhttp.match.evaluate(bag) is True
    built = {
        short(name): config.instances[name].builder.build(bag)
        for action in promhttp.actions
        for name in action.instances
    }
    count = built["requestcount"]
    assert isinstance(count, MetricInstance)
    assert count.value == 1
    assert count.dimensions["source_app"] == "productpage"
    assert count.dimensions["destination_app"] == "unknown"
    assert count.dimensions["reporter"] == "destination"
    assert count.dimensions["response_code"] == 503
    assert count.dimensions["request_protocol"] == "http"
    assert count.dimensions["connection_security_policy"] == "mutual_tls"
    duration = built["requestduration"]
    assert isinstance(duration, MetricInstance)
    assert duration.value.total_seconds() == 0
    (accesslog,) = [i for n, i in config.instances.items() if short(n) == "accesslog"]
    entry = accesslog.builder.build(bag)
    assert isinstance(entry, LogEntryInstance)
    assert entry.severity == "Info"
    assert entry.variables["destinationServiceHost"] == "reviews.default.svc.cluster.local"
    assert len(entry.variables) >= 25
