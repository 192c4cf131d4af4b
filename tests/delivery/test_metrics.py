"""The mixer_delivery_* families on the server's /metrics registry."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mixer.delivery import Delivery, DeliveryCollector, DeliveryOptions, SendResult
from mixer.server._metrics import ServerMetrics

from .conftest import MakeDelivery
from .doubles import FakeBatchSender, eventually, records


def scrape(registry: CollectorRegistry, handler: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of ``handler`` by (sample name, other labels)."""
    text = generate_latest(registry).decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("handler") == handler:
                labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "handler"))
                out[(sample.name, labels)] = sample.value
    return out


async def test_server_metrics_expose_delivery_families(make_delivery: MakeDelivery, tmp_path: Path) -> None:
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    sender = FakeBatchSender(SendResult(rejected=((0, "bad document"),)))
    gate = sender.gate = asyncio.Event()
    delivery = make_delivery(sender, tmp_path, name=name, batch_timeout=0, batch_max_records=4, ack="memory")
    await delivery.start()
    delivery.offer(records(0, 10))
    registry = ServerMetrics(lambda: None).registry
    await eventually(lambda: sender.in_flight == 2)
    during = scrape(registry, name)
    assert during[("mixer_delivery_queued_records", ())] == 10
    assert during[("mixer_delivery_queued_bytes", ())] == 10
    assert during[("mixer_delivery_sends_in_flight", ())] == 2
    assert during[("mixer_delivery_circuit_open", ())] == 0
    gate.set()
    await eventually(lambda: delivery.stats.sent == 9 and delivery.stats.dead_lettered == 1)
    after = scrape(registry, name)
    assert after[("mixer_delivery_sent_total", ())] == 9
    assert after[("mixer_delivery_dead_lettered_total", ())] == 1
    assert after[("mixer_delivery_failed_total", ())] == 0
    assert after[("mixer_delivery_spooled_total", ())] == 0
    assert after[("mixer_delivery_queued_records", ())] == 0
    assert after[("mixer_delivery_spool_bytes", ())] == 0
    assert after[("mixer_delivery_send_duration_seconds_count", ())] == 3
    assert after[("mixer_delivery_send_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert ("mixer_delivery_send_duration_seconds_bucket", (("le", "0.005"),)) in after
    assert after[("mixer_delivery_send_duration_seconds_sum", ())] >= 0


async def test_dropped_is_labelled_by_reason(make_delivery: MakeDelivery) -> None:
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    delivery = make_delivery(
        FakeBatchSender(), None, name=name, queue_max_records=2, spool={"full_policy": "drop_oldest"}
    )
    delivery.offer(records(0, 5))
    registry = CollectorRegistry()
    registry.register(DeliveryCollector())
    assert scrape(registry, name)[("mixer_delivery_dropped_total", (("reason", "queue_full"),))] == 3


async def test_counters_survive_a_handler_replaced_by_a_reload(tmp_path: Path) -> None:
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    registry = CollectorRegistry()
    registry.register(DeliveryCollector())
    options = DeliveryOptions.model_validate({"batch_timeout": 0})
    log = logging.getLogger("tests.delivery")
    old = Delivery(name, FakeBatchSender(), options, data_dir=None, logger=log)
    await old.start()
    old.offer(records(0, 3))
    await eventually(lambda: old.stats.sent == 3)
    await old.shutdown(1.0)
    assert scrape(registry, name)[("mixer_delivery_sent_total", ())] == 3
    new = Delivery(name, FakeBatchSender(), options, data_dir=None, logger=log)
    await new.start()
    new.offer(records(0, 2))
    await eventually(lambda: new.stats.sent == 2)
    samples = scrape(registry, name)
    assert samples[("mixer_delivery_sent_total", ())] == 5
    assert samples[("mixer_delivery_send_duration_seconds_count", ())] == 2
    await new.shutdown(1.0)


async def test_an_abandoned_delivery_is_not_kept_alive_by_the_metrics() -> None:
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    registry = CollectorRegistry()
    registry.register(DeliveryCollector())
    delivery = Delivery(
        name, FakeBatchSender(), DeliveryOptions(), data_dir=None, logger=logging.getLogger("t")
    )
    delivery.offer(records(0, 1))
    assert scrape(registry, name)[("mixer_delivery_queued_records", ())] == 1
    del delivery
    gc.collect()
    assert scrape(registry, name) == {}
