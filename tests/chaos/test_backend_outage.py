"""Kafka (a real Tansu) stopped and Elasticsearch failing at once, under Report load.

`mixer serve` runs deploy/config/fanout with a ``--data-dir``: every access log record goes to
Kafka and to Elasticsearch. For the outage (5 s; 20 s with ``MIXER_CHAOS=full``) the broker is
stopped while the fake Elasticsearch answers every request 503 for the first half and 429 for the
second; when both come back, the next 200 bulk items are still refused one by one with 429. Then
every record a Report was accepted for (by request id) must be in the topic and in the index,
exactly once.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest

from tests.backends.kafka import TansuBroker, consume, unique_topic
from tests.chaos.conftest import Figures, count_delivery, metric, record, reports_sent, sized
from tests.e2e.conftest import (
    ES_HANDLER,
    KAFKA_HANDLER,
    ReportLoad,
    broker_env,
    es_request_ids,
    kafka_request_ids,
    start_fanout_server,
    wait_for,
)
from tests.fakes.fake_elasticsearch import FakeElasticsearch
from tests.fakes.fake_otlp import FakeOtlpReceiver
from tests.server.support import Launcher, ServerProcess

pytestmark = pytest.mark.chaos

OUTAGE = sized(5.0, 20.0)


async def settled(server: ServerProcess, handler: str, accepted: int) -> bool:
    """Everything accepted was sent, and nothing waits in memory or in the spool."""
    sent = await metric(server, "mixer_delivery_sent_total", handler=handler)
    queued = await metric(server, "mixer_delivery_queued_records", handler=handler)
    spooled = await metric(server, "mixer_delivery_spool_records", handler=handler)
    return sent >= accepted and queued == 0 and spooled == 0


async def test_kafka_stopped_and_elasticsearch_failing_lose_and_repeat_nothing(
    launch: Launcher,
    tansu: TansuBroker,
    fake_es: FakeElasticsearch,
    fake_otlp: FakeOtlpReceiver,
    tmp_path: Path,
) -> None:
    topic = unique_topic("chaos")
    server = await start_fanout_server(
        launch, tmp_path / "data", broker_env(tansu, topic, fake_es, fake_otlp)
    )
    load = ReportLoad(server.grpc_target).start()
    await asyncio.sleep(1.0)

    # The broker keeps records in memory only: what it holds is read back before it stops, with
    # the load paused so that nothing is acknowledged and then lost with the broker.
    await load.pause()
    before_ids = set(load.accepted)
    await wait_for(lambda: settled(server, KAFKA_HANDLER, len(before_ids)), 30, "delivery before the outage")
    before = await consume(tansu.bootstrap, [topic], expected=len(before_ids))
    await asyncio.to_thread(tansu.stop)
    fake_es.fail_requests(seconds=OUTAGE / 2, status=503)
    load.resume()
    await asyncio.sleep(OUTAGE / 2)
    fake_es.fail_requests(
        seconds=OUTAGE / 2,
        status=429,
        error_type="es_rejected_execution_exception",
        reason="rejected execution of coordinating operation",
    )
    await asyncio.sleep(OUTAGE / 2)
    fake_es.fail_items(200, status=429)
    await asyncio.to_thread(tansu.start)
    await asyncio.sleep(1.0)
    await load.stop()

    accepted = set(load.accepted)
    assert len(accepted) > len(before_ids) + 100, "the load stalled during the outage"
    for handler in (KAFKA_HANDLER, ES_HANDLER):
        drained = functools.partial(settled, server, handler, len(accepted))
        await wait_for(drained, 60 + OUTAGE, f"{handler} drained")
        assert await metric(server, "mixer_delivery_failed_total", handler=handler) > 0, (
            f"{handler}: no outage"
        )
        assert await metric(server, "mixer_delivery_dead_lettered_total", handler=handler) == 0
    after = await consume(tansu.bootstrap, [topic], expected=len(accepted - before_ids), timeout=60)
    in_kafka = kafka_request_ids(before) + kafka_request_ids(after)
    in_es = es_request_ids(fake_es)
    sent = reports_sent(load)

    for backend, seen in (("kafka", in_kafka), ("elasticsearch", in_es)):
        figures = Figures(f"kafka stopped and elasticsearch 503/429 for {OUTAGE:g}s: {backend}", sent=sent)
        count_delivery(figures, accepted, seen)
        figures.refused = load.refused * load.batch
        figures.notes["outage_s"] = OUTAGE
        record(figures)
        assert figures.lost == 0, (backend, sorted(accepted - set(seen))[:5])
        assert figures.duplicated == 0, backend
