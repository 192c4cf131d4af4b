"""`mixer serve` SIGKILLed under Report load, restarted on the same ``--data-dir``.

deploy/config/fanout with ``--delivery-ack spool``: a Report is answered OK only once its records
are committed to each handler's spool, so an OK is a promise that survives SIGKILL. Kafka (a real
Tansu) stays up; the fake Elasticsearch answers 503 from the start of the load until after the
restart, so its spool holds a backlog when the process is killed (at least 300 records; 3,000
with ``MIXER_CHAOS=full``). After the restart on the same data dir every record a Report was
accepted for must reach both backends. Copies are counted, not refused: a batch sent but not yet
acknowledged when the process died is sent again (at least once, docs/delivery.md).
"""

from __future__ import annotations

import asyncio
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
from tests.server.support import Launcher

pytestmark = pytest.mark.chaos

SPOOLED_BEFORE_KILL = int(sized(300, 3000))


async def test_sigkill_under_report_load_loses_no_accepted_record(
    launch: Launcher,
    tansu: TansuBroker,
    fake_es: FakeElasticsearch,
    fake_otlp: FakeOtlpReceiver,
    tmp_path: Path,
) -> None:
    topic = unique_topic("chaos")
    data_dir = tmp_path / "data"
    env = broker_env(tansu, topic, fake_es, fake_otlp)
    server = await start_fanout_server(launch, data_dir, env, "--delivery-ack", "spool")
    fake_es.fail_requests(seconds=3600, status=503)
    load = ReportLoad(server.grpc_target, batch=20).start()

    async def backlog() -> bool:
        spooled = await metric(server, "mixer_delivery_spool_records", handler=ES_HANDLER)
        return spooled >= SPOOLED_BEFORE_KILL

    await wait_for(backlog, 120, f"{SPOOLED_BEFORE_KILL} records in the elasticsearch spool")
    spooled_at_kill = int(await metric(server, "mixer_delivery_spool_records", handler=ES_HANDLER))
    # The load keeps running through the kill: Reports in flight then fail and are not counted.
    await asyncio.to_thread(server.kill)
    await load.stop()
    fake_es.clear_failures()
    restarted = await start_fanout_server(launch, data_dir, env, "--delivery-ack", "spool")
    accepted = set(load.accepted)
    assert len(accepted) >= SPOOLED_BEFORE_KILL

    async def in_elasticsearch() -> bool:
        return accepted <= set(es_request_ids(fake_es))

    await wait_for(in_elasticsearch, 120, "every accepted record in elasticsearch")
    for handler in (KAFKA_HANDLER, ES_HANDLER):
        assert await metric(restarted, "mixer_delivery_dead_lettered_total", handler=handler) == 0
    records = await consume(tansu.bootstrap, [topic], expected=len(accepted), timeout=60)
    sent = reports_sent(load)
    for backend, seen in (("kafka", kafka_request_ids(records)), ("elasticsearch", es_request_ids(fake_es))):
        figures = Figures(f"SIGKILL under Report load, restart on the same data dir: {backend}", sent=sent)
        count_delivery(figures, accepted, seen)
        figures.refused = load.refused * load.batch
        figures.notes["es_spooled_at_kill"] = spooled_at_kill
        record(figures)
        assert figures.lost == 0, (backend, sorted(accepted - set(seen))[:5])
