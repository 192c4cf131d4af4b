"""The attribute-producing stage: order, precedence, failures, namespaces, Check references."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from adapters.kubernetesenv import KUBERNETES_TEMPLATE, KubernetesInstance
from mixer.adapter import AdapterInfo, AttributeHandler, HandlerEnv, ReportBatch, ReportHandler
from mixer.attributes import AttributeBag, AttributeValue
from mixer.config import load_config_text
from mixer.registry import Registry
from mixer.runtime import Runtime, build_runtime
from mixer.templates import BUILTIN_TEMPLATES, Instance, LogEntryInstance


class ProducerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workload: str = "reviews-v1"
    fail: bool = False


class Producer(AttributeHandler):
    def __init__(self, params: ProducerParams) -> None:
        self.params = params
        self.seen: list[KubernetesInstance] = []

    def generate_attributes(self, instance: Instance) -> Mapping[str, AttributeValue]:
        assert isinstance(instance, KubernetesInstance)
        self.seen.append(instance)
        if self.params.fail:
            raise RuntimeError("inventory exploded")
        if instance.destination_uid == "kubernetes://reviews-v1-1.default":
            return {"destination_workload_name": self.params.workload, "destination_namespace": "default"}
        return {}


class Sink(ReportHandler):
    def __init__(self) -> None:
        self.batches: list[ReportBatch] = []

    def handle_report(self, batch: ReportBatch) -> None:
        self.batches.append(batch)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _registry() -> Registry:
    def producer(config: BaseModel, env: HandlerEnv) -> Producer:
        assert isinstance(config, ProducerParams)
        return Producer(config)

    return Registry.build(
        [
            AdapterInfo("producer", "test", frozenset({"kubernetes"}), ProducerParams, producer),
            AdapterInfo("sink", "test", frozenset({"logentry"}), NoParams, lambda c, e: Sink()),
        ],
        [*BUILTIN_TEMPLATES, KUBERNETES_TEMPLATE],
    )


CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: first, namespace: istio-system}
spec: {compiledAdapter: producer, params: {workload: reviews-v1, fail: %(fail)s}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: second, namespace: istio-system}
spec: {compiledAdapter: producer, params: {workload: from-the-second}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: attrs, namespace: istio-system}
spec:
  compiledTemplate: kubernetes
  params: {destination_uid: destination.uid | ""}
  attributeBindings:
    destination.workload.name: $out.destination_workload_name | "unknown"
    destination.namespace: $out.destination_namespace | "default"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: gen-1, namespace: istio-system}
spec: {actions: [{handler: first, instances: [attrs]}]}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: gen-2, namespace: istio-system}
spec:
  match: context.protocol == "tcp"
  actions: [{handler: second, instances: [attrs]}]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: sink, namespace: istio-system}
spec: {compiledAdapter: sink}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: log, namespace: istio-system}
spec:
  compiledTemplate: logentry
  params:
    variables:
      workload: destination.workload.name
      namespace: destination.namespace
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: log, namespace: istio-system}
spec: {actions: [{handler: sink, instances: [log]}]}
"""


def _runtime(fail: bool = False) -> Runtime:
    registry = _registry()
    return build_runtime(load_config_text(CONFIG % {"fail": str(fail).lower()}, registry), registry)


def _logged(runtime: Runtime, bags: list[dict[str, AttributeValue]]) -> list[dict[str, object]]:
    outcome = runtime.report([AttributeBag(b) for b in bags])
    sink = runtime.handlers["sink.istio-system"]
    assert isinstance(sink, Sink)
    entries = [i for batch in sink.batches for i in batch.instances]
    assert all(isinstance(i, LogEntryInstance) for i in entries)
    assert outcome.records == len(bags)
    return [dict(i.variables) for i in entries]  # type: ignore[attr-defined]


def test_report_records_get_bound_attributes_and_defaults() -> None:
    runtime = _runtime()
    logged = _logged(
        runtime,
        [
            {"destination.uid": "kubernetes://reviews-v1-1.default"},
            {"destination.uid": "kubernetes://unknown.default"},
            # What the record carries wins over what is produced.
            {"destination.uid": "kubernetes://reviews-v1-1.default", "destination.workload.name": "sent"},
        ],
    )
    assert logged == [
        {"workload": "reviews-v1", "namespace": "default"},
        {"workload": "unknown", "namespace": "default"},
        {"workload": "sent", "namespace": "default"},
    ]


def test_first_producing_rule_wins() -> None:
    runtime = _runtime()
    logged = _logged(
        runtime, [{"destination.uid": "kubernetes://reviews-v1-1.default", "context.protocol": "tcp"}]
    )
    assert logged == [{"workload": "reviews-v1", "namespace": "default"}]
    second = runtime.handlers["second.istio-system"]
    assert isinstance(second, Producer)
    assert len(second.seen) == 1  # it ran, but the first rule had bound the attribute


def test_a_failing_producer_is_counted_and_the_record_goes_on() -> None:
    runtime = _runtime(fail=True)
    logged = _logged(runtime, [{"destination.uid": "kubernetes://reviews-v1-1.default"}])
    # No binding ran: the logentry's expression for the workload fails, the instance is an error.
    assert logged == []
    assert runtime.stats.handler_errors["first.istio-system"] == 1
    assert runtime.stats.instance_errors == 1


async def test_check_references_what_the_producer_read() -> None:
    registry = _registry()
    text = CONFIG % {"fail": "false"}
    runtime = build_runtime(load_config_text(text, registry), registry)
    outcome = await runtime.check(AttributeBag({"destination.uid": "kubernetes://reviews-v1-1.default"}))
    names = {match.name for match in outcome.referenced}
    assert "destination.uid" in names
    first = runtime.handlers["first.istio-system"]
    assert isinstance(first, Producer)
    assert first.seen[-1].destination_uid == "kubernetes://reviews-v1-1.default"
