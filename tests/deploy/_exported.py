"""The metric names a running hub exports, collected from real processes for the observability tests.

One ``mixer serve``, with the Deployment's flags, runs the Kubernetes ConfigMap's config
(deploy/kubernetes/configmap.yaml: the stock Istio telemetry, the fan-out and the Redis quota)
with a real Redis; Kafka, Elasticsearch and the OTLP collector point at a closed port (their
records wait in the spool). A test overlay adds two handlers that make the event-driven series
appear: one whose one-record queue refuses the Report (``mixer_handler_overloaded_total``) and
one that drops its oldest record (``mixer_delivery_dropped_total``). After one Check (asking for
quota) and one Report (HTTP and TCP bags), the server's ``/metrics`` and the prometheus
adapter's exposition are read, and every family with at least one sample counts as exported.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mixer.decision import QuotaRequest
from tests.backends.redis import running_redis
from tests.deploy import kubernetes_config
from tests.deploy._traffic import http_bag, tcp_bag
from tests.server.support import check, free_port, http_get, launcher, metric_value, report, wait_until

ROOT = Path(__file__).resolve().parents[2]

#: Handlers that exist only here, to make event-driven series appear. Their backend is a closed port.
PROBE_OVERLAY = """\
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: overloadprobe, namespace: istio-system}
spec:
  compiledAdapter: kafka
  params:
    brokers: ["127.0.0.1:{closed}"]
    topic: probe
    delivery: {queue_max_records: 1, spool: {enabled: false}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: dropprobe, namespace: istio-system}
spec:
  compiledAdapter: kafka
  params:
    brokers: ["127.0.0.1:{closed}"]
    topic: probe
    delivery: {queue_max_records: 1, spool: {enabled: false, full_policy: drop_oldest}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: probes, namespace: istio-system}
spec:
  match: context.protocol == "http"
  actions:
  - {handler: overloadprobe, instances: [accesslog]}
  - {handler: dropprobe, instances: [accesslog]}
"""


@dataclass(frozen=True)
class Exported:
    """Sample names (``mixer_requests_total``, ``..._bucket``) and family names, by endpoint."""

    server: frozenset[str]
    adapter: frozenset[str]
    families: frozenset[str]
    server_text: str
    adapter_text: str

    @property
    def names(self) -> frozenset[str]:
        return self.server | self.adapter


def _sample_names(exposition: str) -> tuple[set[str], set[str]]:
    samples: set[str] = set()
    families: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        if family.samples:
            families.add(family.name)
        samples |= {sample.name for sample in family.samples}
    return samples, families


def collect(directory: Path) -> Exported:
    config = directory / "config"
    config.mkdir()
    data = yaml.safe_load((ROOT / "deploy/kubernetes/configmap.yaml").read_text("utf-8"))["data"]
    assert data == kubernetes_config.config_files()
    for name, text in data.items():
        (config / name).write_text(text, "utf-8")
    closed = free_port()
    (config / "zz-probes.yaml").write_text(PROBE_OVERLAY.replace("{closed}", str(closed)), "utf-8")
    adapter_port = free_port()
    with running_redis(directory) as redis, launcher(directory) as servers:
        env = {
            "MIXER_PROMETHEUS_LISTEN": f"127.0.0.1:{adapter_port}",
            "MIXER_REDIS_URL": redis.url,
            "MIXER_KAFKA_BROKERS": f"127.0.0.1:{closed}",
            "MIXER_ES_URL": f"http://127.0.0.1:{closed}",
            "MIXER_OTLP_ENDPOINT": f"127.0.0.1:{closed}",
        }
        args = _deployment_args(config, directory / "data")
        server = servers.start(*args, env=env)
        asyncio.run(_traffic(server.grpc_target))
        adapter_url = f"http://127.0.0.1:{adapter_port}/metrics"

        def settled() -> tuple[str, str] | None:
            text = server.metrics()
            status, adapter = http_get(adapter_url)
            if status != 200 or "istio_tcp_connections_closed_total{" not in adapter:
                return None
            if not metric_value(text, "mixer_delivery_dropped_total", handler="dropprobe.istio-system"):
                return None
            return text, adapter

        server_text, adapter_text = wait_until(settled, 30, "the Report's series on both endpoints")
        assert server.stop() == 0, server.stderr()
    server_names, server_families = _sample_names(server_text)
    adapter_names, adapter_families = _sample_names(adapter_text)
    return Exported(
        frozenset(server_names),
        frozenset(adapter_names),
        frozenset(server_families | adapter_families),
        server_text,
        adapter_text,
    )


def _deployment_args(config: Path, data_dir: Path) -> list[str]:
    """The Deployment's `mixer serve` flags, with local paths; the launcher picks the listen addresses."""
    docs = yaml.safe_load_all((ROOT / "deploy/kubernetes/deployment.yaml").read_text("utf-8"))
    (deployment,) = [
        doc for doc in docs if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "mixer"
    ]
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "mixer"]
    command, *flags = container["args"]
    assert command == "serve"
    local = {"--config": str(config), "--data-dir": str(data_dir)}
    out = []
    for flag in flags:
        name, sep, value = flag.partition("=")
        assert sep, f"{flag}: the manifests write flags as --name=value"
        if name in {"--grpc-listen", "--http-listen", "--admin-listen"}:
            continue
        out.append(f"{name}={local.get(name, value)}")
    assert {"--config", "--data-dir"} <= {flag.partition("=")[0] for flag in out}
    return out


async def _traffic(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        answer = await check(channel, http_bag(), quotas={"requestcountquota": QuotaRequest(1, False)})
        assert answer.precondition.status.code == 0, answer
        assert answer.quotas["requestcountquota"].granted_amount == 1, answer
        bags = [http_bag(), http_bag(), http_bag(), tcp_bag("open"), tcp_bag("close")]
        # The overload probe refuses the batch, so the Report is UNAVAILABLE as Mixer answers it;
        # every other handler has its records.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await report(channel, bags)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
        assert "overloadprobe" in (refused.value.details() or ""), refused.value
