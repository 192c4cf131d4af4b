"""Report dispatch throughput of the runtime, on Istio 1.4's stock telemetry configuration.

The configuration is deploy/config/istio-1.4/v1.1 (7 rules, 11 instances: 8 metrics with up to
19 dimensions, 2 access-log entries, a trace span), loaded with the real config loader and
expression compiler.
Handlers are no-op report handlers, so the number measures dispatch alone: rule matching,
instance building and batching. Bags are HTTP requests as an Istio 1.4 sidecar reports them,
dispatched 100 per call (the proxy's Report batch size). A second figure replaces instance
building by prebuilt instances to show the dispatcher's own cost; a Check figure follows.

    .venv/bin/python bench/runtime_dispatch.py [--seconds 3] [--compare-reference [--rounds 5]]

``--compare-reference`` measures the generated instance builders and rule matches against the
compiled-expression closures they replace (``CompiledInstanceBuilder.build_reference``,
``CompiledExpression.evaluate``), alternating the two in ``--rounds`` rounds in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mixer.adapter import AdapterInfo, CheckHandler, CheckResult, HandlerEnv, ReportBatch, ReportHandler
from mixer.attributes import AttributeBag, AttributeValue
from mixer.config import CompiledInstanceBuilder, ValidatedConfig, load_config
from mixer.expr import CompiledExpression
from mixer.registry import Registry
from mixer.runtime import Runtime, build_runtime
from mixer.templates import BUILTIN_TEMPLATES, Instance, TemplateSpec

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "config" / "istio-1.4" / "v1.1"
BATCH = 100


class AnyParams(BaseModel):
    model_config = ConfigDict(extra="allow")


class CountingHandler(ReportHandler, CheckHandler):
    def __init__(self, params: BaseModel, env: HandlerEnv) -> None:
        self.instances = 0

    def handle_report(self, batch: ReportBatch) -> None:
        self.instances += len(batch.instances)

    async def handle_check(self, instance: Instance) -> CheckResult:
        return CheckResult()


def bench_registry() -> Registry:
    templates = frozenset(spec.name for spec in BUILTIN_TEMPLATES)
    return Registry.build(
        AdapterInfo(name, "no-op bench handler", templates, AnyParams, CountingHandler)
        for name in ("prometheus", "stdio", "otlp")
    )


def http_bag(i: int) -> AttributeBag:
    now = datetime(2020, 1, 1, tzinfo=UTC)
    values: dict[str, AttributeValue] = {
        "context.protocol": "http",
        "context.reporter.kind": "inbound",
        "context.reporter.uid": "kubernetes://reviews-v1-5b4c7d.default",
        "context.time": now,
        "source.uid": "kubernetes://productpage-v1-7d6c8b.default",
        "source.principal": "cluster.local/ns/default/sa/bookinfo-productpage",
        "source.workload.name": "productpage-v1",
        "source.workload.namespace": "default",
        "source.namespace": "default",
        "source.ip": ipaddress.IPv4Address("10.0.0.7"),
        "source.labels": {"app": "productpage", "version": "v1"},
        "destination.uid": "kubernetes://reviews-v1-5b4c7d.default",
        "destination.principal": "cluster.local/ns/default/sa/bookinfo-reviews",
        "destination.workload.name": "reviews-v1",
        "destination.workload.namespace": "default",
        "destination.namespace": "default",
        "destination.ip": ipaddress.IPv4Address("10.0.0.9"),
        "destination.port": 9080,
        "destination.labels": {"app": "reviews", "version": "v1"},
        "destination.service.host": "reviews.default.svc.cluster.local",
        "destination.service.name": "reviews",
        "destination.service.namespace": "default",
        "destination.service.uid": "istio://default/services/reviews",
        "request.headers": {
            ":authority": "reviews:9080",
            ":method": "GET",
            ":path": f"/reviews/{i}",
            "user-agent": "curl/7.68.0",
            "x-request-id": f"7b0d3f0e-{i:08d}",
        },
        "request.host": "reviews:9080",
        "request.method": "GET",
        "request.path": f"/reviews/{i}",
        "request.url_path": f"/reviews/{i}",
        "request.scheme": "http",
        "request.useragent": "curl/7.68.0",
        "request.id": f"7b0d3f0e-{i:08d}",
        "request.size": 0,
        "request.total_size": 512,
        "request.time": now,
        "response.code": 200,
        "response.size": 295,
        "response.total_size": 482,
        "response.time": now + timedelta(milliseconds=12),
        "response.duration": timedelta(milliseconds=12),
        "response.headers": {":status": "200", "content-type": "application/json"},
        "connection.mtls": True,
        "connection.requested_server_name": "outbound_.9080_._.reviews.default.svc.cluster.local",
    }
    return AttributeBag(values)


@dataclass
class PrebuiltBuilder:
    """Returns one prebuilt instance: isolates matching and batching from instance building."""

    name: str
    template: TemplateSpec
    instance: Instance

    def build(self, bag: AttributeBag) -> Instance:
        return self.instance


@dataclass
class ReferenceBuilder:
    """Builds through the compiled-expression closures instead of the generated function."""

    name: str
    template: TemplateSpec
    build: Callable[[AttributeBag], Instance]


@dataclass(frozen=True)
class ReferenceMatch:
    """A rule match whose "generated" form is the closure itself (the runtime asks for that one)."""

    inner: CompiledExpression

    def evaluate(self, bag: AttributeBag) -> AttributeValue:
        return self.inner.evaluate(bag)

    def generated(self) -> Callable[[AttributeBag], AttributeValue]:
        return self.inner.evaluate

    @property
    def text(self) -> str:
        return self.inner.text


def with_reference_closures(config: ValidatedConfig) -> ValidatedConfig:
    instances = {}
    for name, inst in config.instances.items():
        builder = inst.builder
        assert isinstance(builder, CompiledInstanceBuilder)
        instances[name] = replace(
            inst, builder=ReferenceBuilder(name, builder.template, builder.build_reference)
        )
    rules = tuple(
        replace(rule, match=ReferenceMatch(rule.match) if rule.match is not None else None)  # type: ignore[arg-type]
        for rule in config.rules
    )
    return replace(config, instances=instances, rules=rules)


def compare_reference(config: ValidatedConfig, registry: Registry, seconds: float, rounds: int) -> None:
    variants = {
        "generated": build_runtime(config, registry),
        "closures": build_runtime(with_reference_closures(config), registry),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, runtime in variants.items():
            rates[name].append(measure_report(runtime, seconds)[0])
    for name, values in rates.items():
        print(f"report with {name}: median {statistics.median(values):,.0f} records/s over {rounds} rounds")
    ratio = statistics.median(rates["generated"]) / statistics.median(rates["closures"])
    print(f"generated / closures: x{ratio:.2f}")


def without_instance_building(config: ValidatedConfig) -> ValidatedConfig:
    instances = {
        name: replace(
            inst,
            builder=PrebuiltBuilder(name, inst.builder.template, inst.builder.template.instance_type(name)),
        )
        for name, inst in config.instances.items()
    }
    return replace(config, instances=instances)


WINDOW = 0.25  # seconds; the best window is reported, as timeit does, since the host may be shared


def best_rate(step: Callable[[], int], seconds: float) -> float:
    """The highest rate of ``step`` (which returns how many items it did) over short windows."""
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        done = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < WINDOW:
            done += step()
        best = max(best, done / elapsed)
    return best


def measure_report(runtime: Runtime, seconds: float) -> tuple[float, float]:
    batch = [http_bag(i) for i in range(BATCH)]
    outcome = runtime.report(batch)
    assert outcome.status.ok, outcome.errors
    per_record = outcome.instances / BATCH

    def step() -> int:
        runtime.report(batch)
        return BATCH

    return best_rate(step, seconds), per_record


def measure_check(runtime: Runtime, seconds: float) -> float:
    bag = http_bag(1)
    loop = asyncio.new_event_loop()

    async def calls() -> int:
        for _ in range(100):
            await runtime.check(bag)
        return 100

    try:
        return best_rate(lambda: loop.run_until_complete(calls()), seconds)
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--compare-reference", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    registry = bench_registry()
    config = load_config([CONFIG], registry)
    if args.compare_reference:
        compare_reference(config, registry, args.seconds, args.rounds)
        return
    runtime = build_runtime(config, registry)
    rate, per_record = measure_report(runtime, args.seconds)
    print(
        f"report: {len(config.rules)} rules, {len(config.instances)} instances, "
        f"{per_record:.0f} instances per HTTP record: {rate:,.0f} records/s"
    )
    dispatch_only = without_instance_building(config)
    rate, _ = measure_report(build_runtime(dispatch_only, registry), args.seconds)
    print(f"report, dispatch only (same rules and matches, instances prebuilt): {rate:,.0f} records/s")
    # Check with no check rule: the fixed per-call cost (tracking bag, outcome).
    print(f"check (no check rules): {measure_check(runtime, args.seconds):,.0f} calls/s")


if __name__ == "__main__":
    main()
