"""kubernetesenv, the kubernetes template and attributeBindings, against a FAKE Kubernetes API."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from adapters.kubernetesenv import KubernetesEnvConfig, KubernetesInstance
from adapters.kubernetesenv._cache import PodInventory, pod_from_json
from adapters.kubernetesenv._handler import KubernetesEnvHandler, key_from_uid
from adapters.kubernetesenv._watch import LIST_PAGE_SIZE
from mixer.adapter import HandlerEnv
from mixer.attributes import AttributeBag
from mixer.collectors import AdapterCollectors
from mixer.config import ConfigError, load_config, load_config_text
from mixer.registry import Registry
from mixer.runtime import Runtime, build_runtime
from plugins.manager import create_plugin_manager
from tests.adapters.fake_kubernetes import FakeKubernetes, pod, replicaset

ISTIO = Path(__file__).resolve().parents[2].parent / "shared" / "istio-1.4"
DEFAULT_INSTALL = ISTIO / "install" / "istio-1.4.10-default.yaml"


def _istio_file(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"Istio 1.4 config {path} is missing: the tests read ../shared/istio-1.4 beside the repo")
    return path


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    server = FakeKubernetes()
    await server.start()
    await server.apply("replicasets", replicaset("productpage-v1-6b746f74dc", "productpage-v1"))
    await server.apply(
        "pods",
        pod(
            "productpage-v1-6b746f74dc-xyz",
            ip="10.44.0.7",
            labels={"app": "productpage", "version": "v1"},
            service_account="bookinfo-productpage",
            owner=("ReplicaSet", "productpage-v1-6b746f74dc"),
            ports={"productpage": 9080},
        ),
    )
    await server.apply(
        "pods",
        pod("ratings-0", "shop", ip="10.44.0.9", labels={"app": "ratings"}, owner=("StatefulSet", "ratings")),
    )
    try:
        yield server
    finally:
        await server.stop()


def _env(name: str = "kubernetesenv.istio-system") -> HandlerEnv:
    return HandlerEnv(handler_name=name, logger=logging.getLogger("test.kubernetesenv"))


async def _watching(fake: FakeKubernetes, tmp_path: Path, **params: object) -> KubernetesEnvHandler:
    config = KubernetesEnvConfig.model_validate(
        {"kubeconfig_path": str(fake.kubeconfig(tmp_path)), "retry_interval": "50ms", **params}
    )
    handler = KubernetesEnvHandler(config, _env())
    await handler.start()
    watcher = handler.watcher
    assert watcher is not None
    await _until(lambda: watcher.has_synced, "the first list")
    return handler


def _destination(
    handler: KubernetesEnvHandler, uid: str = "", ip: str = "", port: int = 0
) -> dict[str, object]:
    instance = KubernetesInstance(
        "attributes.istio-system",
        destination_uid=uid,
        destination_ip=ipaddress.ip_address(ip) if ip else None,
        destination_port=port,
    )
    return dict(handler.generate_attributes(instance))


def test_key_from_uid_follows_mixer() -> None:
    assert key_from_uid("kubernetes://productpage-v1-xyz.default") == "default/productpage-v1-xyz"
    assert key_from_uid("10.0.0.1") == "10.0.0.1"
    # More than one dot: not name.namespace, used as given.
    assert key_from_uid("kubernetes://a.b.c") == "a.b.c"


async def test_pod_through_replicaset_to_deployment(fake: FakeKubernetes, tmp_path: Path) -> None:
    handler = await _watching(fake, tmp_path)
    try:
        out = _destination(handler, uid="kubernetes://productpage-v1-6b746f74dc-xyz.default", port=9080)
        assert out["destination_workload_name"] == "productpage-v1"
        assert out["destination_workload_uid"] == "istio://default/workloads/productpage-v1"
        assert out["destination_workload_namespace"] == "default"
        assert (
            out["destination_owner"]
            == "kubernetes://apis/apps/v1/namespaces/default/deployments/productpage-v1"
        )
        assert out["destination_service_account_name"] == "bookinfo-productpage"
        assert out["destination_pod_ip"] == ipaddress.ip_address("10.44.0.7")
        assert out["destination_container_name"] == "productpage"
        assert dict(out["destination_labels"]) == {"app": "productpage", "version": "v1"}  # type: ignore[call-overload]
        # By IP when no uid is given; a StatefulSet is its own root controller.
        by_ip = _destination(handler, ip="10.44.0.9")
        assert by_ip["destination_workload_name"] == "ratings"
        assert by_ip["destination_owner"] == "kubernetes://apis/apps/v1/namespaces/shop/statefulsets/ratings"
        misses = handler.inventory.stats.misses
        assert _destination(handler, uid="kubernetes://nope.default") == {}
        assert handler.inventory.stats.misses == misses + 1
        registry = CollectorRegistry()
        registry.register(AdapterCollectors())
        text = generate_latest(registry).decode()
        assert (
            f'mixer_kubernetesenv_lookups_total{{handler="kubernetesenv.istio-system",result="miss"}} {misses + 1}.0'
            in text
        )
        assert (
            'mixer_kubernetesenv_cache_entries{handler="kubernetesenv.istio-system",kind="pod"} 2.0' in text
        )
    finally:
        await handler.shutdown(5.0)


async def test_watch_events_update_the_inventory(fake: FakeKubernetes, tmp_path: Path) -> None:
    handler = await _watching(fake, tmp_path)
    try:
        uid = "kubernetes://details-v1-1.default"
        await fake.apply(
            "pods", pod("details-v1-1", labels={"app": "details"}, owner=("ReplicaSet", "details-rs"))
        )
        await _until(lambda: "destination_pod_name" in _destination(handler, uid=uid), "the ADDED pod")
        # Its replica set arrives later: the workload becomes the deployment.
        assert _destination(handler, uid=uid)["destination_workload_name"] == "details-rs"
        await fake.apply("replicasets", replicaset("details-rs", "details-v1"))
        await _until(
            lambda: _destination(handler, uid=uid).get("destination_workload_name") == "details-v1",
            "the ADDED replica set",
        )
        await fake.apply("pods", pod("details-v1-1", labels={"app": "details", "version": "v2"}))
        await _until(
            lambda: dict(_destination(handler, uid=uid).get("destination_labels", {})).get("version") == "v2",  # type: ignore[call-overload]
            "the MODIFIED pod",
        )
        await fake.delete("pods", "default", "details-v1-1")
        await _until(lambda: _destination(handler, uid=uid) == {}, "the DELETED pod")
        assert handler.inventory.stats.events["ADDED"] >= 1
        assert handler.inventory.stats.events["DELETED"] == 1
    finally:
        await handler.shutdown(5.0)


async def test_410_gone_makes_the_client_list_again(fake: FakeKubernetes, tmp_path: Path) -> None:
    handler = await _watching(fake, tmp_path)
    try:
        lists = fake.lists["pods"]
        await fake.expire("pods")
        # Changed while the history is gone: only a fresh list can bring it.
        await fake.apply("pods", pod("reviews-v3-1", ip="10.44.0.30", labels={"app": "reviews"}))
        await _until(lambda: fake.lists["pods"] > lists, "a relist")
        assert fake.gone_sent >= 1
        await _until(
            lambda: "destination_pod_name" in _destination(handler, ip="10.44.0.30"), "the relisted pod"
        )
        assert handler.inventory.stats.relists >= 1
        # The older pods are still known after the relist.
        assert _destination(handler, ip="10.44.0.9")["destination_pod_name"] == "ratings-0"
    finally:
        await handler.shutdown(5.0)


async def test_api_down_at_start_is_retried(tmp_path: Path) -> None:
    probe = FakeKubernetes()
    await probe.start()
    kubeconfig = probe.kubeconfig(tmp_path)
    port = probe.port
    await probe.stop()
    config = KubernetesEnvConfig.model_validate(
        {"kubeconfig_path": str(kubeconfig), "retry_interval": "50ms"}
    )
    handler = KubernetesEnvHandler(config, _env())
    await handler.start()  # returns at once although nothing answers
    revived = FakeKubernetes(port)
    try:
        watcher = handler.watcher
        assert watcher is not None
        assert not watcher.has_synced
        assert _destination(handler, ip="10.44.0.40") == {}
        await _until(lambda: handler.inventory.stats.watch_errors >= 2, "counted failures")
        await revived.start()
        await revived.apply("pods", pod("late-1", ip="10.44.0.40"))
        await _until(lambda: watcher.has_synced, "the first list after the outage", timeout=60)
        assert _destination(handler, ip="10.44.0.40")["destination_pod_name"] == "late-1"
    finally:
        await handler.shutdown(5.0)
        await revived.stop()


async def test_big_lists_are_read_in_pages(fake: FakeKubernetes, tmp_path: Path) -> None:
    for i in range(LIST_PAGE_SIZE + 20):
        await fake.apply("pods", pod(f"bulk-{i}", "bulk", ip=f"10.1.{i // 250}.{i % 250}"))
    handler = await _watching(fake, tmp_path)
    try:
        assert fake.pages_served["pods"] >= 2
        assert handler.inventory.pods == LIST_PAGE_SIZE + 20 + 2
        assert (
            _destination(handler, ip=f"10.1.{(LIST_PAGE_SIZE + 19) // 250}.{(LIST_PAGE_SIZE + 19) % 250}")[
                "destination_pod_name"
            ]
            == f"bulk-{LIST_PAGE_SIZE + 19}"
        )
    finally:
        await handler.shutdown(5.0)


async def test_static_inventory(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": [
                        pod(
                            "web-1",
                            "shop",
                            ip="192.0.2.5",
                            labels={"app": "web"},
                            owner=("ReplicaSet", "web-rs"),
                        )
                    ],
                },
                replicaset("web-rs", "web", "shop"),
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ignored"}},
            ]
        )
    )
    handler = KubernetesEnvHandler(KubernetesEnvConfig(inventory_path=inventory), _env())
    await handler.start()
    try:
        out = _destination(handler, ip="192.0.2.5")
        assert out["destination_workload_name"] == "web"
        assert out["destination_workload_uid"] == "istio://shop/workloads/web"
        assert out["destination_pod_uid"] == "kubernetes://web-1.shop"
        assert handler.watcher is None
    finally:
        await handler.shutdown(5.0)


def test_inventory_is_bounded_and_counts_evictions() -> None:
    inventory = PodInventory(max_entries=3, max_bytes=1 << 20)
    for i in range(5):
        record = pod_from_json(pod(f"p{i}", ip=f"10.0.0.{i}"))
        assert record is not None
        inventory.put_pod(record)
    assert inventory.pods == 3
    assert inventory.stats.evictions == 2
    assert inventory.pod("10.0.0.0") is None  # the oldest went first
    assert inventory.pod("10.0.0.4") is not None
    small = PodInventory(max_entries=100, max_bytes=1000)
    for i in range(10):
        record = pod_from_json(pod(f"q{i}", labels={"k": "v" * 100}))
        assert record is not None
        small.put_pod(record)
    assert small.bytes <= 1000
    assert small.stats.evictions > 0


# -- through the runtime with the stock Istio 1.4 install --------------------------------------


def _registry() -> Registry:
    return create_plugin_manager().registry()


def _report_bag(**extra: object) -> AttributeBag:
    values: dict[str, object] = {
        "context.reporter.kind": "inbound",
        "destination.uid": "kubernetes://productpage-v1-6b746f74dc-xyz.default",
        "source.uid": "kubernetes://ratings-0.shop",
        "destination.service.host": "productpage.default.svc.cluster.local",
        "destination.service.name": "productpage",
        "destination.service.namespace": "default",
        "request.time": datetime.now(UTC),
        "response.time": datetime.now(UTC),
        "response.duration": timedelta(milliseconds=12),
        "response.code": 200,
        "request.size": 10,
        "response.size": 20,
        "request.total_size": 30,
        "response.total_size": 40,
        "api.protocol": "http",
        "context.protocol": "http",
        "request.method": "GET",
        "request.path": "/productpage",
        "request.headers": {},
    }
    values.update(extra)
    return AttributeBag(values)  # type: ignore[arg-type]


async def test_stock_install_binds_workloads_into_istio_requests_total(
    fake: FakeKubernetes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stock handler names no kubeconfig: KUBECONFIG points it at the fake, as in Mixer.
    monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path)))
    registry = _registry()
    config = load_config([_istio_file(DEFAULT_INSTALL)], registry)
    runtime: Runtime = build_runtime(config, registry)
    kubeenv = runtime.handlers["kubernetesenv.istio-system"]
    assert isinstance(kubeenv, KubernetesEnvHandler)
    # Only the attribute producer is started: the Prometheus handler records without listening.
    await kubeenv.start()
    try:
        await _until(lambda: kubeenv.watcher is not None and kubeenv.watcher.has_synced, "the first list")
        outcome = runtime.report([_report_bag()])
        assert outcome.instance_errors == 0, outcome.errors
        prometheus = runtime.handlers["prometheus.istio-system"]
        text = generate_latest(prometheus.registry).decode()  # type: ignore[attr-defined]
        line = next(line for line in text.splitlines() if line.startswith("istio_requests_total{"))
        assert 'destination_workload="productpage-v1"' in line
        assert 'destination_workload_namespace="default"' in line
        assert 'destination_app="productpage"' in line
        assert 'destination_version="v1"' in line
        assert 'source_workload="ratings"' in line
        assert 'source_workload_namespace="shop"' in line
        assert 'source_app="ratings"' in line
        assert 'destination_principal="unknown"' in line or "destination_principal=" in line
    finally:
        await kubeenv.shutdown(5.0)


async def test_request_attributes_win_over_produced_ones(fake: FakeKubernetes, tmp_path: Path) -> None:
    text = f"""
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: kube, namespace: istio-system}}
spec:
  compiledAdapter: kubernetesenv
  params: {{kubeconfig_path: "{fake.kubeconfig(tmp_path)}"}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: attrs, namespace: istio-system}}
spec:
  compiledTemplate: kubernetes
  params:
    destination_uid: destination.uid | ""
    destination_ip: destination.ip | ip("0.0.0.0")
  attributeBindings:
    destination.workload.name: $out.destination_workload_name | "unknown"
    destination.labels: $out.destination_labels | emptyStringMap()
    destination.namespace: $out.destination_namespace | "default"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: gen, namespace: istio-system}}
spec:
  actions: [{{handler: kube, instances: [attrs]}}]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: deny, namespace: istio-system}}
spec:
  compiledAdapter: denier
  params: {{status: {{code: 7, message: denied}}}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: nothing, namespace: istio-system}}
spec: {{compiledTemplate: checknothing}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: deny-productpage, namespace: istio-system}}
spec:
  match: destination.workload.name == "productpage-v1" && destination.labels["version"] == "v1"
  actions: [{{handler: deny, instances: [nothing]}}]
"""
    registry = _registry()
    runtime = build_runtime(load_config_text(text, registry), registry)
    await runtime.start()
    try:
        kube = runtime.handlers["kube.istio-system"]
        assert isinstance(kube, KubernetesEnvHandler)
        await _until(lambda: kube.watcher is not None and kube.watcher.has_synced, "the first list")
        denied = await runtime.check(AttributeBag({"destination.ip": ipaddress.ip_address("10.44.0.7")}))
        assert denied.status.code.value == 7
        # What the proxy sent wins over what the producer would bind.
        allowed = await runtime.check(
            AttributeBag(
                {"destination.ip": ipaddress.ip_address("10.44.0.7"), "destination.labels": {"version": "v2"}}
            )
        )
        assert allowed.status.code.value == 0
        # An unknown pod binds the defaults: the rule does not match.
        unknown = await runtime.check(AttributeBag({"destination.uid": "kubernetes://gone.default"}))
        assert unknown.status.code.value == 0
        referenced = {m.name for m in denied.referenced}
        assert "destination.ip" in referenced
    finally:
        await runtime.shutdown(5.0)


@pytest.mark.parametrize(
    ("bindings", "message"),
    [
        ("{destination.workload.name: $out.nope}", 'unknown attribute "$out.nope"'),
        ("{no.such.attribute: $out.destination_workload_name}", "not declared"),
        ("{destination.workload.name: $out.destination_pod_ip}", "expected STRING"),
    ],
)
def test_bad_bindings_are_config_errors(bindings: str, message: str) -> None:
    text = f"""
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: attrs, namespace: istio-system}}
spec:
  compiledTemplate: kubernetes
  params: {{destination_uid: destination.uid | ""}}
  attributeBindings: {bindings}
"""
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, _registry())
    assert "spec.attributeBindings" in str(caught.value)
    assert message in str(caught.value)


def test_bindings_on_a_template_that_produces_nothing_are_refused() -> None:
    text = """
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: m, namespace: istio-system}
spec:
  compiledTemplate: metric
  params: {value: "1"}
  attributeBindings: {source.name: $out.x}
"""
    with pytest.raises(ConfigError, match="produces no attributes"):
        load_config_text(text, _registry())


def test_istio_configs_with_kubernetesenv_load() -> None:
    registry = _registry()
    for names in (
        ("install/istio-1.4.10-default.yaml",),
        ("install/istio-1.4.10-demo.yaml",),
        ("install/istio-1.0.6-default.yaml",),
        # Mixer's testdata: the legacy kind: kubernetes form, with Mixer's attribute vocabulary.
        ("testdata/attributes.yaml", "testdata/kubernetesenv.yaml"),
    ):
        name = names[-1]
        config = load_config([_istio_file(ISTIO / n) for n in names], registry)
        bound = [i for i in config.instances.values() if i.template == "kubernetes"]
        assert bound, name
        assert all(i.bindings for i in bound), name
        assert "destination.workload.name" in {attribute for attribute, _ in bound[0].bindings}
