"""One batch of Reports reaches all four backends of deploy/config/fanout at once.

A real `mixer serve --config deploy/config/fanout` with a real Kafka broker (Tansu),
FakeElasticsearch, FakeOtlpReceiver and a real Prometheus scraping the prometheus adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc.aio

from tests.backends.kafka import TansuBroker, consume, unique_topic
from tests.backends.prometheus import PrometheusServer, value_of
from tests.e2e.conftest import (
    ES_HANDLER,
    FANOUT_CONFIG,
    KAFKA_HANDLER,
    delivery_metric,
    es_request_ids,
    fanout_env,
    kafka_request_ids,
    send_report,
    start_fanout_server,
    wait_for,
)
from tests.fakes.fake_elasticsearch import FakeElasticsearch
from tests.fakes.fake_otlp import FakeOtlpReceiver
from tests.server.support import Launcher, free_port

REPORTS = 12
BAGS_PER_REPORT = 10
N = REPORTS * BAGS_PER_REPORT


async def test_one_batch_reaches_kafka_elasticsearch_otlp_and_prometheus(
    launch: Launcher,
    tansu: TansuBroker,
    fake_es: FakeElasticsearch,
    fake_otlp: FakeOtlpReceiver,
    prometheus_factory: Callable[..., PrometheusServer],
    tmp_path: Path,
) -> None:
    topic = unique_topic("accesslog")
    scrape = f"127.0.0.1:{free_port()}"
    env = fanout_env(
        kafka=tansu.bootstrap,
        topic=topic,
        es_url=fake_es.url,
        otlp=fake_otlp.endpoint,
        prometheus_listen=scrape,
    )
    server = await start_fanout_server(launch, tmp_path / "data", env)
    prometheus = await asyncio.to_thread(prometheus_factory, [scrape])

    ids = [f"fanout-{n}" for n in range(N)]
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        await asyncio.gather(
            *(
                send_report(channel, ids[r * BAGS_PER_REPORT : (r + 1) * BAGS_PER_REPORT])
                for r in range(REPORTS)
            )
        )

    # Kafka: one JSON access log record per request, keyed by the destination host.
    async def kafka_sent() -> bool:
        return await delivery_metric(server, "mixer_delivery_sent_total", KAFKA_HANDLER) >= N

    await wait_for(kafka_sent, 20, "the kafka handler to send every record")
    records = await consume(tansu.bootstrap, [topic], expected=N)
    assert kafka_request_ids(records) == dict.fromkeys(ids, 1)
    assert {record.key for record in records} == {b"reviews.default.svc.cluster.local"}

    # Elasticsearch: one document per request in today's daily index.
    async def es_complete() -> bool:
        return sum(es_request_ids(fake_es).values()) >= N

    await wait_for(es_complete, 20, "the documents in Elasticsearch")
    assert es_request_ids(fake_es) == dict.fromkeys(ids, 1)
    assert all(index.startswith("mixer-accesslog-") for index in fake_es.indices), fake_es.indices
    assert "mixer-accesslog" in fake_es.index_templates

    # OTLP: every request was sampled (x-b3-sampled: 1), so one span each.
    spans = await fake_otlp.wait_for_spans(N, timeout=20)
    assert len(spans) == N
    assert {span.attributes.get("guid:x-request-id") for span in spans} == set(ids)

    # Prometheus: the adapter's counter, scraped by a real server.
    result = await asyncio.to_thread(
        prometheus.wait_for,
        "sum(istio_requests_total)",
        lambda r: value_of(r) == N,
        what=f"sum(istio_requests_total) == {N}",
    )
    assert value_of(result) == N

    # Nothing was refused, retried into the spool or dead-lettered on the way.
    for handler in (KAFKA_HANDLER, ES_HANDLER):
        assert await delivery_metric(server, "mixer_delivery_dead_lettered_total", handler) == 0
        assert await delivery_metric(server, "mixer_delivery_spooled_total", handler) == 0


def _without_comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.lstrip().startswith("#")]


def test_fanout_config_keeps_the_stock_telemetry() -> None:
    """The fan-out directory copies deploy/config/istio-1.4/v1.1; this keeps the copies in step."""
    stock = FANOUT_CONFIG.parent / "istio-1.4" / "v1.1"
    for name in ("attributes.yaml", "metrics.yaml", "tracing.yaml"):
        assert (FANOUT_CONFIG / name).read_text() == (stock / name).read_text(), name
    # Both read the scrape address from MIXER_PROMETHEUS_LISTEN, as the embedded default does.
    listen = "    listen: ${MIXER_PROMETHEUS_LISTEN:-127.0.0.1:42422}"
    prometheus = _without_comments((FANOUT_CONFIG / "prometheus.yaml").read_text())
    assert listen in prometheus
    assert prometheus == _without_comments((stock / "prometheus.yaml").read_text())
    stock_instances = [
        doc for doc in (stock / "accesslog.yaml").read_text().split("\n---\n") if "kind: instance" in doc
    ]
    assert _without_comments((FANOUT_CONFIG / "accesslog.yaml").read_text()) == _without_comments(
        "\n---\n".join(stock_instances)
    )
