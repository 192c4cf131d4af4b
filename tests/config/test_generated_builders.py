"""Generated instance builders and rule matches equal the closures on the stock and fan-out configs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixer.attributes import AttributeBag
from mixer.config import CompiledInstanceBuilder, ValidatedConfig, load_config
from mixer.registry import Registry
from plugins.manager import create_plugin_manager

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "config"
CONFIGS = {
    "istio-1.4/v1.1": DEPLOY / "istio-1.4" / "v1.1",
    "istio-1.4/legacy": DEPLOY / "istio-1.4" / "legacy",
    "fanout": DEPLOY / "fanout",
}
START = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
#: A full request; bags are drawn as subsets of it (absent attributes take the fallbacks).
FULL: dict[str, Any] = {
    "context.protocol": "http",
    "context.reporter.kind": "outbound",
    "context.reporter.uid": "kubernetes://productpage-v1-1.default",
    "source.uid": "kubernetes://productpage-v1-1.default",
    "source.workload.name": "productpage-v1",
    "source.workload.namespace": "default",
    "source.principal": "cluster.local/ns/default/sa/productpage",
    "source.labels": {"app": "productpage", "version": "v1"},
    "source.namespace": "default",
    "source.ip": ip_address("10.0.0.7"),
    "destination.uid": "kubernetes://reviews-v2-1.default",
    "destination.workload.name": "reviews-v2",
    "destination.workload.namespace": "default",
    "destination.principal": "cluster.local/ns/default/sa/reviews",
    "destination.labels": {"app": "reviews", "version": "v2"},
    "destination.namespace": "default",
    "destination.ip": ip_address("10.0.0.9"),
    "destination.port": 9080,
    "destination.service.host": "reviews.default.svc.cluster.local",
    "destination.service.name": "reviews",
    "destination.service.namespace": "default",
    "request.host": "reviews:9080",
    "request.method": "GET",
    "request.path": "/reviews/0",
    "request.url_path": "/reviews/0",
    "request.useragent": "Envoy/1.12",
    "request.scheme": "http",
    "request.size": 0,
    "request.total_size": 312,
    "request.time": START,
    "request.headers": {"x-request-id": "4f6e", "x-b3-traceid": "abc"},
    "request.id": "4f6e",
    "response.code": 200,
    "response.size": 295,
    "response.total_size": 512,
    "response.time": START + timedelta(milliseconds=12),
    "response.duration": timedelta(microseconds=11_500),
    "response.flags": "-",
    "response.grpc_status": "0",
    "connection.mtls": True,
    "connection.id": "c1",
    "connection.event": "close",
    "connection.duration": timedelta(seconds=2),
    "connection.received.bytes": 100,
    "connection.sent.bytes": 200,
    "api.operation": "getReviews",
}
KEYS = sorted(FULL)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return create_plugin_manager(load_entry_points=False, blocked=()).registry()


@pytest.fixture(scope="module")
def configs(registry: Registry) -> dict[str, ValidatedConfig]:
    environ = {"MIXER_PROMETHEUS_LISTEN": "127.0.0.1:0"}
    return {name: load_config([path], registry, environ=environ) for name, path in CONFIGS.items()}


def _outcome(call: Any, bag: AttributeBag) -> tuple[str, Any]:
    try:
        return "value", call(bag)
    except Exception as exc:
        return "error", (type(exc), str(exc))


def _compare(config: ValidatedConfig, attributes: dict[str, Any]) -> int:
    """Builds every instance and evaluates every match both ways; returns how many were compared."""
    compared = 0
    for rule in config.rules:
        if rule.match is not None:
            assert _outcome(rule.match.generated(), AttributeBag(attributes)) == _outcome(
                rule.match.evaluate, AttributeBag(attributes)
            ), rule.name
            compared += 1
    for name, instance in config.instances.items():
        builder = instance.builder
        assert isinstance(builder, CompiledInstanceBuilder)
        # Fresh bags on each side: the shared-map caches key on the bag's identity.
        expected = _outcome(builder.build_reference, AttributeBag(attributes))
        got = _outcome(builder.build, AttributeBag(attributes))
        assert got == expected, name
        compared += 1
    return compared


def test_configs_have_instances_and_matches(configs: dict[str, ValidatedConfig]) -> None:
    for config in configs.values():
        assert len(config.instances) >= 5
        assert any(rule.match is not None for rule in config.rules)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_full_and_empty_bags(configs: dict[str, ValidatedConfig], name: str) -> None:
    for attributes in (
        FULL,
        {},
        {**FULL, "context.protocol": "tcp"},
        {**FULL, "response.code": "wrong type"},
    ):
        assert _compare(configs[name], attributes) >= 5


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.sets(st.sampled_from(KEYS)), protocol=st.sampled_from(["http", "grpc", "tcp", "https"]))
def test_random_subsets(configs: dict[str, ValidatedConfig], keys: set[str], protocol: str) -> None:
    attributes = {key: FULL[key] for key in keys}
    if "context.protocol" in keys:
        attributes["context.protocol"] = protocol
    for config in configs.values():
        assert _compare(config, attributes) >= 5


def test_an_instance_with_an_expression_too_deep_for_python_still_builds(registry: Registry) -> None:
    from mixer.attributes import AttributeInfo, AttributeManifest, ValueType
    from mixer.config._instances import compile_instance
    from mixer.templates import BUILTIN_TEMPLATES, MetricInstance

    (metric,) = [spec for spec in BUILTIN_TEMPLATES if spec.name == "metric"]
    manifest = AttributeManifest([AttributeInfo("a", ValueType.STRING)])
    deep = " | ".join(["a"] * 900) + ' | "x"'
    problems: list[tuple[str, str]] = []
    builder = compile_instance(
        "m", metric, {"value": "1", "dimensions": {"d": deep}}, manifest, lambda p, m: problems.append((p, m))
    )
    assert builder is not None, problems
    built = builder.build(AttributeBag({"a": "q"}))
    assert isinstance(built, MetricInstance)
    assert built.dimensions == {"d": "q"}
    assert built == builder.build_reference(AttributeBag({"a": "q"}))
