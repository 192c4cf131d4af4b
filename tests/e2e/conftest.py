"""End-to-end fixtures: one `mixer serve` on deploy/config/fanout with every backend of the fan-out.

Backends: a real Kafka-compatible broker (Tansu), FakeElasticsearch and FakeOtlpReceiver in the
test's event loop, and (for the metrics) a real Prometheus server scraping the prometheus
adapter's port. The server runs as its own process: every blocking wait on it runs in a thread so
the fakes in this loop keep answering it meanwhile.

:class:`ReportLoad` sends Istio 1.4-like Reports at a steady pace and remembers which request ids
the server accepted (an OK answer), so a test can check that every accepted record arrived.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from mixer.api.mixer_v1 import REPORT_METHOD
from mixer.attributes import AttributeValue
from mixer.wire import ReportEncoding, encode_report_request
from tests.backends.kafka import TansuBroker, tansu
from tests.backends.prometheus import prometheus_factory
from tests.fakes.fake_elasticsearch import FakeElasticsearch
from tests.fakes.fake_otlp import FakeOtlpReceiver
from tests.server.support import Launcher, ServerProcess, free_port, launcher, metric_value

__all__ = ["prometheus_factory", "tansu"]

ROOT = Path(__file__).resolve().parents[2]
FANOUT_CONFIG = ROOT / "deploy" / "config" / "fanout"
KAFKA_HANDLER = "kafka.istio-system"
ES_HANDLER = "elasticsearch.istio-system"
SOAK = os.environ.get("MIXER_SOAK") == "1"


def http_bag(request_id: str, *, now: datetime | None = None) -> dict[str, AttributeValue]:
    """An inbound HTTP request as an Istio 1.4 sidecar reports it, sampled for tracing (B3)."""
    start = now or datetime.now(UTC)
    trace_id = uuid.uuid4().hex
    return {
        "context.protocol": "http",
        "context.reporter.kind": "inbound",
        "context.reporter.uid": "kubernetes://reviews-v2-7bf8c9648f-pmd2k.default",
        "source.uid": "kubernetes://productpage-v1-6b746f74dc-9x9kq.default",
        "source.principal": "cluster.local/ns/default/sa/bookinfo-productpage",
        "source.workload.name": "productpage-v1",
        "source.workload.namespace": "default",
        "source.ip": IPv4Address("10.44.0.7"),
        "source.labels": {"app": "productpage", "version": "v1"},
        "destination.uid": "kubernetes://reviews-v2-7bf8c9648f-pmd2k.default",
        "destination.principal": "cluster.local/ns/default/sa/bookinfo-reviews",
        "destination.workload.name": "reviews-v2",
        "destination.workload.namespace": "default",
        "destination.ip": IPv4Address("10.44.1.9"),
        "destination.labels": {"app": "reviews", "version": "v2"},
        "destination.service.host": "reviews.default.svc.cluster.local",
        "destination.service.name": "reviews",
        "destination.service.namespace": "default",
        "request.headers": {
            ":authority": "reviews:9080",
            ":path": "/reviews/0",
            ":method": "GET",
            "user-agent": "python-requests/2.22.0",
            "x-request-id": request_id,
            "x-b3-traceid": trace_id,
            "x-b3-spanid": trace_id[:16],
            "x-b3-sampled": "1",
        },
        "request.id": request_id,
        "request.host": "reviews:9080",
        "request.method": "GET",
        "request.path": "/reviews/0",
        "request.scheme": "http",
        "request.useragent": "python-requests/2.22.0",
        "request.size": 0,
        "request.total_size": 812,
        "request.time": start,
        "response.code": 200,
        "response.size": 295,
        "response.total_size": 512,
        "response.time": start + timedelta(milliseconds=7),
        "response.duration": timedelta(milliseconds=7),
        "connection.mtls": True,
    }


def report_payload(request_ids: Sequence[str]) -> bytes:
    """One ReportRequest as proxies send it: independent encoding over the default words."""
    now = datetime.now(UTC)
    request = encode_report_request(
        [http_bag(rid, now=now) for rid in request_ids],
        ReportEncoding.INDEPENDENT_ENCODING,
        use_default_words=True,
    )
    return request.SerializeToString()


async def send_report(channel: grpc.aio.Channel, request_ids: Sequence[str], timeout: float = 10.0) -> None:
    rpc = channel.unary_unary(REPORT_METHOD)
    await rpc(report_payload(request_ids), timeout=timeout)


def fanout_env(
    *,
    kafka: str,
    topic: str,
    es_url: str,
    otlp: str,
    prometheus_listen: str | None = None,
) -> dict[str, str]:
    """The environment that points deploy/config/fanout at this test's backends."""
    return {
        "MIXER_KAFKA_BROKERS": kafka,
        "MIXER_KAFKA_TOPIC": topic,
        "MIXER_ES_URL": es_url,
        "MIXER_OTLP_ENDPOINT": otlp,
        "MIXER_PROMETHEUS_LISTEN": prometheus_listen or f"127.0.0.1:{free_port()}",
        # Quick batches and a short probe interval: an outage of a few seconds is then followed
        # by delivery within about a second, which keeps the tests short.
        "MIXER_FANOUT_BATCH_TIMEOUT": "20ms",
        "MIXER_FANOUT_RETRY_MAX_INTERVAL": "500ms",
    }


async def start_fanout_server(
    launch: Launcher, data_dir: Path, env: Mapping[str, str], *extra: str
) -> ServerProcess:
    args = ("--config", str(FANOUT_CONFIG), "--data-dir", str(data_dir), "--log-level", "WARNING", *extra)
    return await asyncio.to_thread(launch.start, *args, env=env)


async def delivery_metric(server: ServerProcess, name: str, handler: str) -> float:
    exposition = await asyncio.to_thread(server.metrics)
    return metric_value(exposition, name, handler=handler) or 0.0


async def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll an async ``condition`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def kafka_request_ids(records: Sequence[Any]) -> Counter[str]:
    return Counter(json.loads(record.value)["requestId"] for record in records)


def es_request_ids(es: FakeElasticsearch) -> Counter[str]:
    return Counter(doc["requestId"] for docs in es.all_documents().values() for doc in docs)


def loss_report(expected: set[str], seen: Counter[str]) -> str:
    lost = sorted(expected - set(seen))
    duplicates = sum(count - 1 for count in seen.values() if count > 1)
    return f"{len(expected)} accepted, {len(lost)} lost (first: {lost[:5]}), {duplicates} duplicates"


class ReportLoad:
    """Reports of ``batch`` records every ``interval`` seconds until stopped.

    Request ids are ``<prefix>-<n>``, unique across the load. A Report answered OK adds its ids
    to :attr:`accepted`; one that fails (UNAVAILABLE from an overloaded handler, a deadline)
    counts in :attr:`refused` and its ids are not expected anywhere.
    """

    def __init__(self, target: str, *, batch: int = 10, interval: float = 0.05) -> None:
        self.target = target
        self.batch = batch
        self.interval = interval
        self.prefix = uuid.uuid4().hex[:8]
        self.accepted: set[str] = set()
        self.refused = 0
        self._next = 0
        self._running = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> ReportLoad:
        self._running.set()
        self._task = asyncio.create_task(self._run())
        return self

    async def pause(self) -> None:
        """No new Report after this returns, and none in flight."""
        self._running.clear()
        await self._idle.wait()

    def resume(self) -> None:
        self._running.set()

    async def stop(self) -> None:
        self._stopped = True
        self._running.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            while True:
                await self._running.wait()
                if self._stopped:
                    break
                ids = [f"{self.prefix}-{self._next + k}" for k in range(self.batch)]
                self._next += self.batch
                self._idle.clear()
                try:
                    await send_report(channel, ids, timeout=5.0)
                except grpc.aio.AioRpcError:
                    self.refused += 1
                else:
                    self.accepted.update(ids)
                finally:
                    self._idle.set()
                await asyncio.sleep(self.interval)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    with launcher(tmp_path) as servers:
        yield servers


@pytest.fixture
async def fake_es() -> AsyncIterator[FakeElasticsearch]:
    async with FakeElasticsearch() as es:
        yield es


@pytest.fixture
async def fake_otlp() -> AsyncIterator[FakeOtlpReceiver]:
    async with FakeOtlpReceiver() as receiver:
        yield receiver


def broker_env(
    broker: TansuBroker, topic: str, es: FakeElasticsearch, otlp: FakeOtlpReceiver
) -> dict[str, str]:
    return fanout_env(kafka=broker.bootstrap, topic=topic, es_url=es.url, otlp=otlp.endpoint)
