"""An answered Report is durable: SIGKILL right after an OK loses none of its records.

The Kafka broker (a real Tansu) is down from the start. `mixer serve` (deploy/config/fanout, the
default ``--delivery-ack auto``) takes Reports from several concurrent senders and is SIGKILLed
the moment one of them gets an OK answer, three times, each time restarted on the same
``--data-dir``. Then the broker starts, a last server delivers the spool, and every request id
that was ever answered OK must be in the topic (counted as distinct ids; duplicates are allowed,
delivery is at least once). The short form runs about a second of load per round; the ``slow``
form (``make soak``) ten seconds and more senders.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio
import pytest

from tests.backends.kafka import TansuBroker, consume, unique_topic
from tests.e2e.conftest import (
    KAFKA_HANDLER,
    broker_env,
    delivery_metric,
    kafka_request_ids,
    loss_report,
    send_report,
    start_fanout_server,
    wait_for,
)
from tests.fakes.fake_elasticsearch import FakeElasticsearch
from tests.fakes.fake_otlp import FakeOtlpReceiver
from tests.server.support import Launcher, ServerProcess

ROUNDS = 3


@dataclass
class KillOnAnswer:
    """Concurrent Report senders against one server, which is SIGKILLed on the first OK after
    ``load_seconds``; :attr:`acknowledged` holds every request id answered OK before that."""

    server: ServerProcess
    senders: int
    batch: int
    load_seconds: float
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    acknowledged: set[str] = field(default_factory=set)
    answered: int = 0
    killed_at: float | None = None
    _next: int = 0

    def killed(self) -> bool:
        return self.killed_at is not None

    async def run(self) -> None:
        started = time.monotonic()
        async with grpc.aio.insecure_channel(self.server.grpc_target) as channel:

            async def sender() -> None:
                while not self.killed():
                    ids = [f"{self.prefix}-{self._next + k}" for k in range(self.batch)]
                    self._next += self.batch
                    try:
                        await send_report(channel, ids, timeout=5.0)
                    except grpc.aio.AioRpcError:
                        # Refused or cut off by the kill: not acknowledged, not expected anywhere.
                        continue
                    # Answered OK (possibly just before the kill another sender sent): acknowledged.
                    self.acknowledged.update(ids)
                    if self.killed():
                        continue
                    self.answered += 1
                    if time.monotonic() - started >= self.load_seconds:
                        # Right after the answer, before this loop turns again.
                        os.kill(self.server.pid, signal.SIGKILL)
                        self.killed_at = time.monotonic()

            await asyncio.gather(*(sender() for _ in range(self.senders)))
        await asyncio.to_thread(self.server.kill)


async def sigkill_rounds(
    launch: Launcher,
    tansu: TansuBroker,
    fake_es: FakeElasticsearch,
    fake_otlp: FakeOtlpReceiver,
    tmp_path: Path,
    *,
    load_seconds: float,
    senders: int,
    batch: int,
) -> None:
    topic = unique_topic("accesslog")
    data_dir = tmp_path / "data"
    env = broker_env(tansu, topic, fake_es, fake_otlp)
    tansu.stop()
    acknowledged: set[str] = set()
    answered = 0
    for _ in range(ROUNDS):
        server = await start_fanout_server(launch, data_dir, env)
        round_ = KillOnAnswer(server, senders=senders, batch=batch, load_seconds=load_seconds)
        await round_.run()
        assert round_.killed_at is not None, "the server was never killed"
        assert round_.answered > 0, "no Report was answered OK"
        acknowledged |= round_.acknowledged
        answered += round_.answered

    tansu.start()
    last = await start_fanout_server(launch, data_dir, env)

    async def drained() -> bool:
        # Nothing left to send: what did not arrive by then was lost, and the assertion counts it.
        spooled = await delivery_metric(last, "mixer_delivery_spool_records", KAFKA_HANDLER)
        queued = await delivery_metric(last, "mixer_delivery_queued_records", KAFKA_HANDLER)
        sent = await delivery_metric(last, "mixer_delivery_sent_total", KAFKA_HANDLER)
        return spooled == 0 and queued == 0 and sent > 0

    await wait_for(drained, 120, "the spool delivered after the broker came back")
    records = await consume(tansu.bootstrap, [topic], expected=len(acknowledged), timeout=30)
    seen = kafka_request_ids(records)
    lost = acknowledged - set(seen)
    assert not lost, f"{ROUNDS} SIGKILLs: " + loss_report(acknowledged, seen)
    print(f"{ROUNDS} SIGKILLs after {answered} OK answers: {loss_report(acknowledged, seen)}")


async def test_sigkill_after_ok_loses_no_acknowledged_record(
    launch: Launcher,
    tansu: TansuBroker,
    fake_es: FakeElasticsearch,
    fake_otlp: FakeOtlpReceiver,
    tmp_path: Path,
) -> None:
    await sigkill_rounds(launch, tansu, fake_es, fake_otlp, tmp_path, load_seconds=1.0, senders=8, batch=20)


@pytest.mark.slow
async def test_sigkill_after_ok_loses_no_acknowledged_record_soak(
    launch: Launcher,
    tansu: TansuBroker,
    fake_es: FakeElasticsearch,
    fake_otlp: FakeOtlpReceiver,
    tmp_path: Path,
) -> None:
    await sigkill_rounds(launch, tansu, fake_es, fake_otlp, tmp_path, load_seconds=10.0, senders=16, batch=50)
