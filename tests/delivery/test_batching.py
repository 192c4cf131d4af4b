"""Batching by count, bytes and time; the concurrency limit; options."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pydantic
import pytest

from mixer.delivery import DeliveryOptions, Record

from .conftest import MakeDelivery
from .doubles import FakeBatchSender, VirtualClock, eventually, payloads, records, settle


def test_record_size_counts_payload_route_and_key() -> None:
    assert Record(b"abc").size() == 3
    assert Record(b"abc", route="tö", key=b"kk").size() == 3 + 3 + 2


def test_options_parse_durations_and_reject_unknown_keys() -> None:
    options = DeliveryOptions.model_validate(
        {"batch_timeout": "50ms", "spool": {"full_policy": "drop_oldest"}}
    )
    assert options.batch_timeout == timedelta(milliseconds=50)
    assert options.spool.full_policy == "drop_oldest"
    assert options.queue_max_bytes == 32 * 1024 * 1024
    with pytest.raises(pydantic.ValidationError):
        DeliveryOptions.model_validate({"batch_size": 3})
    with pytest.raises(pydantic.ValidationError):
        DeliveryOptions.model_validate({"spool": {"full_policy": "block"}})
    with pytest.raises(pydantic.ValidationError):
        DeliveryOptions.model_validate({"send_timeout": "0s"})


async def test_full_batches_go_at_once_and_the_rest_after_the_timeout(make_delivery: MakeDelivery) -> None:
    clock = VirtualClock(auto=False)
    sender = FakeBatchSender()
    delivery = make_delivery(sender, None, clock=clock, batch_max_records=10, batch_timeout="60s")
    await delivery.start()
    delivery.offer(records(0, 25))
    await eventually(lambda: len(sender.calls) == 2)
    await settle()
    assert [len(batch) for batch in sender.calls] == [10, 10]
    clock.advance(59)
    await settle()
    assert len(sender.calls) == 2
    clock.advance(1.5)
    await eventually(lambda: len(sender.calls) == 3)
    assert sender.accepted_payloads == payloads(0, 25)
    assert delivery.stats.sent == 25
    assert delivery.stats.queued_records == 0


async def test_batches_are_cut_by_bytes(make_delivery: MakeDelivery) -> None:
    sender = FakeBatchSender()
    delivery = make_delivery(sender, None, batch_max_bytes=100, batch_timeout=0)
    await delivery.start()
    thirty = [Record(bytes([65 + i]) * 30) for i in range(7)]
    oversized = Record(b"x" * 250)
    delivery.offer([*thirty, oversized])
    await eventually(lambda: delivery.stats.sent == 8)
    sizes = [sum(r.size() for r in batch) for batch in sender.calls]
    assert all(size <= 100 for size in sizes[:-1])
    assert [len(batch) for batch in sender.calls] == [3, 3, 1, 1]
    # A record bigger than a batch still goes, alone.
    assert sender.calls[-1] == [oversized]


async def test_a_lone_record_waits_for_the_batch_timeout(make_delivery: MakeDelivery) -> None:
    clock = VirtualClock(auto=False)
    sender = FakeBatchSender()
    delivery = make_delivery(sender, None, clock=clock, batch_timeout="1s")
    await delivery.start()
    delivery.offer(records(0, 3))
    await settle()
    clock.advance(0.5)
    await settle()
    assert sender.calls == []
    delivery.offer(records(3, 4))
    clock.advance(0.6)
    await eventually(lambda: len(sender.calls) == 1)
    assert [r.payload for r in sender.calls[0]] == payloads(0, 4)


async def test_at_most_max_concurrent_sends_are_in_flight(make_delivery: MakeDelivery) -> None:
    sender = FakeBatchSender()
    gate = sender.gate = asyncio.Event()
    delivery = make_delivery(sender, None, batch_max_records=5, batch_timeout=0, max_concurrent_sends=3)
    await delivery.start()
    delivery.offer(records(0, 50))
    await eventually(lambda: sender.in_flight == 3)
    await settle()
    assert sender.in_flight == 3
    assert delivery.stats.in_flight == 3
    assert delivery.stats.queued_records == 50
    gate.set()
    await eventually(lambda: delivery.stats.sent == 50)
    assert sender.max_in_flight == 3
    assert sorted(sender.accepted_payloads) == sorted(payloads(0, 50))


async def test_send_latency_is_observed(make_delivery: MakeDelivery) -> None:
    sender = FakeBatchSender()
    delivery = make_delivery(sender, None, batch_max_records=2, batch_timeout=0)
    await delivery.start()
    delivery.offer(records(0, 6))
    await eventually(lambda: delivery.stats.sent == 6)
    stats = delivery.stats
    assert stats.send_duration_count == 3
    assert stats.send_duration_buckets[-1] == 3
    assert list(stats.send_duration_buckets) == sorted(stats.send_duration_buckets)
