"""Retry with jittered backoff, per-item results, the dead letter, the circuit."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from pathlib import Path

from mixer.delivery import PermanentError, Record, RetryableError, SendResult

from .conftest import MakeDelivery
from .doubles import FakeBatchSender, VirtualClock, eventually, payloads, records


async def test_retry_waits_grow_exponentially_within_the_jitter_bounds(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    clock = VirtualClock(auto=True)
    failures = [RetryableError("503")] * 7
    sender = FakeBatchSender(*failures)
    delivery = make_delivery(
        sender,
        tmp_path,
        clock=clock,
        batch_timeout=0,
        retry_initial_interval="100ms",
        retry_multiplier=2.0,
        retry_max_interval="1s",
        retry_jitter=0.2,
        retry_max_elapsed="1h",
    )
    await delivery.start()
    delivery.offer(records(0, 3))
    await eventually(lambda: delivery.stats.sent == 3)
    nominal = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert len(clock.sleeps) == len(nominal)
    for waited, expected in zip(clock.sleeps, nominal, strict=True):
        assert expected * 0.8 <= waited <= expected * 1.2
    # Jitter actually spreads the waits.
    assert any(abs(w - e) > 1e-9 for w, e in zip(clock.sleeps, nominal, strict=True))
    stats = delivery.stats
    assert stats.failed == 3 * 7
    assert stats.retried == 3 * 7
    assert sender.accepted_payloads == payloads(0, 3)


async def test_without_jitter_the_waits_are_exact(make_delivery: MakeDelivery) -> None:
    clock = VirtualClock(auto=True)
    sender = FakeBatchSender(RetryableError("a"), RetryableError("b"), RetryableError("c"))
    delivery = make_delivery(
        sender,
        None,
        clock=clock,
        batch_timeout=0,
        retry_jitter=0,
        retry_multiplier=3,
        retry_initial_interval=0.5,
    )
    await delivery.start()
    delivery.offer(records(0, 1))
    await eventually(lambda: delivery.stats.sent == 1)
    assert clock.sleeps == [0.5, 1.5, 4.5]


async def test_timeouts_and_unexpected_errors_are_retried(make_delivery: MakeDelivery) -> None:
    class HangsOnce(FakeBatchSender):
        async def send(self, batch: Sequence[Record]) -> SendResult | None:
            if len(self.calls) == 0:
                self.calls.append(list(batch))
                await asyncio.sleep(10)
            return await super().send(batch)

    sender = HangsOnce(ValueError("bug in the client"))
    delivery = make_delivery(
        sender, None, batch_timeout=0, send_timeout="20ms", retry_initial_interval="1ms", retry_jitter=0
    )
    await delivery.start()
    delivery.offer(records(0, 2))
    await eventually(lambda: delivery.stats.sent == 2)
    assert len(sender.calls) == 3
    assert delivery.stats.failed == 4
    assert delivery.stats.retried == 4


async def test_exhausted_retries_spool_the_batch_and_open_the_circuit(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    clock = VirtualClock(auto=True)
    sender = FakeBatchSender(default=RetryableError("connection refused"))
    delivery = make_delivery(
        sender,
        tmp_path,
        clock=clock,
        batch_timeout=0,
        max_concurrent_sends=1,
        retry_initial_interval="100ms",
        retry_jitter=0,
        retry_max_elapsed="1s",
    )
    await delivery.start()
    delivery.offer(records(0, 10))
    await eventually(lambda: delivery.stats.circuit_open)
    # 0.1 + 0.2 + 0.4 = 0.7 s of waits; the next (0.8 s) would pass 1 s.
    assert clock.sleeps[:3] == [0.1, 0.2, 0.4]
    assert delivery.stats.spool_records == 10
    assert delivery.stats.sent == 0
    # While the circuit is open, new records go straight to disk.
    delivery.offer(records(10, 15))
    await eventually(lambda: delivery.stats.spool_records == 15)
    calls_while_open = len(sender.calls)
    sender.default = None
    await eventually(lambda: delivery.stats.sent == 15)
    assert not delivery.stats.circuit_open
    assert sender.accepted_payloads == payloads(0, 15)
    assert len(sender.calls) > calls_while_open
    await eventually(lambda: delivery.stats.spool_records == 0)
    assert delivery.stats.replayed >= 15


async def test_open_circuit_probes_with_one_batch_at_a_time(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    clock = VirtualClock(auto=True)
    sender = FakeBatchSender(default=RetryableError("down"))
    delivery = make_delivery(
        sender,
        tmp_path,
        clock=clock,
        batch_timeout=0,
        batch_max_records=5,
        max_concurrent_sends=4,
        retry_initial_interval="100ms",
        retry_max_interval="2s",
        retry_jitter=0,
        retry_max_elapsed=0,
    )
    await delivery.start()
    delivery.offer(records(0, 40))
    await eventually(lambda: delivery.stats.circuit_open)
    await eventually(lambda: len(sender.calls) > 20)
    # Probes never overlap and grow their pause up to the max interval.
    sender.max_in_flight = 0
    await eventually(lambda: len(sender.calls) > 30)
    assert sender.max_in_flight == 1
    assert 2.0 in clock.sleeps
    assert max(clock.sleeps) == 2.0
    sender.default = None
    await eventually(lambda: delivery.stats.sent == 40)
    # Batches that were in flight together when the circuit opened may come back in another order.
    assert sorted(sender.accepted_payloads) == sorted(payloads(0, 40))


async def test_per_item_retry_and_rejection(make_delivery: MakeDelivery, tmp_path: Path) -> None:
    clock = VirtualClock(auto=True)
    first = SendResult(retry=(1, 4), rejected=((2, "mapper_parsing_exception"),))
    sender = FakeBatchSender(first)
    delivery = make_delivery(sender, tmp_path, clock=clock, batch_timeout=0, retry_jitter=0)
    await delivery.start()
    delivery.offer(records(0, 6, route="logs-2024", key=b"k1"))
    await eventually(lambda: delivery.stats.sent == 5 and delivery.stats.dead_lettered == 1)
    assert [r.payload for r in sender.calls[1]] == [b"1", b"4"]
    assert sender.accepted_payloads == [b"0", b"3", b"5", b"1", b"4"]
    stats = delivery.stats
    assert stats.failed == 2
    assert stats.retried == 2
    lines = (tmp_path / "dead-letter.jsonl").read_text().splitlines()
    assert len(lines) == 1
    letter = json.loads(lines[0])
    assert letter["reason"] == "mapper_parsing_exception"
    assert letter["handler"] == delivery.name
    assert letter["route"] == "logs-2024"
    assert base64.b64decode(letter["key"]) == b"k1"
    assert base64.b64decode(letter["payload"]) == b"2"
    assert letter["time"].endswith("+00:00")


async def test_permanent_error_dead_letters_the_whole_batch(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    sender = FakeBatchSender(PermanentError("401 unauthorized"))
    delivery = make_delivery(sender, tmp_path, batch_timeout=0)
    await delivery.start()
    delivery.offer(records(0, 3))
    await eventually(lambda: delivery.stats.dead_lettered == 3)
    letters = [json.loads(line) for line in (tmp_path / "dead-letter.jsonl").read_text().splitlines()]
    assert [base64.b64decode(x["payload"]) for x in letters] == payloads(0, 3)
    assert {x["reason"] for x in letters} == {"401 unauthorized"}
    assert letters[0]["key"] is None
    assert delivery.stats.sent == 0
    assert delivery.stats.failed == 0
    # Refusal for good is not an outage: later batches go out normally.
    delivery.offer(records(3, 4))
    await eventually(lambda: delivery.stats.sent == 1)


async def test_without_data_dir_refused_records_are_counted_as_dropped(make_delivery: MakeDelivery) -> None:
    sender = FakeBatchSender(SendResult(rejected=((0, "bad"),)))
    delivery = make_delivery(sender, None, batch_timeout=0)
    await delivery.start()
    delivery.offer(records(0, 2))
    await eventually(lambda: delivery.stats.sent == 1)
    assert delivery.stats.dropped == {"rejected": 1}
    assert delivery.stats.dead_lettered == 0


async def test_dead_letter_rotates_within_its_bound(make_delivery: MakeDelivery, tmp_path: Path) -> None:
    sender = FakeBatchSender(default=PermanentError("no"))
    delivery = make_delivery(
        sender, tmp_path, batch_timeout=0, batch_max_records=10, dead_letter_max_bytes=4000
    )
    await delivery.start()
    for start in range(0, 200, 10):
        delivery.offer([Record(b"p" * 20 + str(i).encode()) for i in range(start, start + 10)])
    await eventually(lambda: delivery.stats.dead_lettered == 200)
    current = tmp_path / "dead-letter.jsonl"
    rotated = tmp_path / "dead-letter.1.jsonl"
    assert current.stat().st_size + rotated.stat().st_size <= 4000
    on_disk = len(current.read_text().splitlines()) + len(rotated.read_text().splitlines())
    stats = delivery.stats
    assert stats.dropped["dead_letter_full"] > 0
    assert stats.dead_lettered - stats.dropped["dead_letter_full"] == on_disk
    # The newest refusal is always kept.
    assert base64.b64decode(json.loads(current.read_text().splitlines()[-1])["payload"]).endswith(b"199")
