"""Spilling to the spool, its bound and policies, replay order; the SQLite store itself."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mixer.adapter import HandlerOverloaded
from mixer.delivery import Record, RetryableError
from mixer.delivery._spool import SpoolLock, SpoolStore

from .conftest import MakeDelivery
from .doubles import FakeBatchSender, VirtualClock, eventually, payloads, records, settle


def spool_rows(data_dir: Path) -> list[bytes]:
    with sqlite3.connect(data_dir / "spool.sqlite3") as db:
        return [bytes(row[0]) for row in db.execute("SELECT payload FROM spool ORDER BY id")]


async def test_a_full_memory_queue_spills_to_the_spool_in_order(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    sender = FakeBatchSender()
    gate = sender.gate = asyncio.Event()
    delivery = make_delivery(
        sender,
        tmp_path,
        batch_timeout=0,
        batch_max_records=5,
        queue_max_records=10,
        max_concurrent_sends=1,
        ack="memory",
    )
    await delivery.start()
    delivery.offer(records(0, 10))
    assert delivery.stats.queued_records == 10
    assert delivery.stats.spool_records == 0
    delivery.offer(records(10, 30))
    assert delivery.stats.spool_records == 20
    await eventually(lambda: spool_rows(tmp_path) == payloads(10, 30))
    gate.set()
    await eventually(lambda: delivery.stats.sent == 30)
    assert sender.accepted_payloads == payloads(0, 30)
    assert delivery.stats.spooled == 20
    assert delivery.stats.replayed == 20
    assert delivery.stats.queued_records == 0
    await eventually(lambda: spool_rows(tmp_path) == [])
    assert delivery.stats.spool_records == 0
    assert delivery.stats.spool_bytes == 0


async def test_full_spool_rejects_under_the_reject_policy(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    sender = FakeBatchSender()
    gate = sender.gate = asyncio.Event()
    delivery = make_delivery(
        sender,
        tmp_path,
        batch_timeout=0,
        queue_max_records=4,
        spool={"max_bytes": 100, "full_policy": "reject"},
    )
    await delivery.start()
    accepted: list[Record] = []
    refused = 0
    for i in range(40):
        batch = [Record(b"%09d" % i)]
        try:
            delivery.offer(batch)
        except HandlerOverloaded:
            refused += 1
        else:
            accepted.extend(batch)
    assert refused > 0
    assert delivery.stats.spool_bytes <= 100
    gate.set()
    await eventually(lambda: delivery.stats.sent == len(accepted))
    # Everything accepted is delivered, in order, and nothing was dropped.
    assert sender.accepted == accepted
    assert delivery.stats.dropped == {}


async def test_full_spool_drops_the_oldest_under_drop_oldest(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    sender = FakeBatchSender()
    gate = sender.gate = asyncio.Event()
    delivery = make_delivery(
        sender,
        tmp_path,
        batch_timeout=0,
        batch_max_records=2,
        max_concurrent_sends=1,
        queue_max_records=2,
        spool={"max_bytes": 100, "full_policy": "drop_oldest"},
        ack="memory",
    )
    await delivery.start()
    offered = [Record(b"%09d" % i) for i in range(60)]
    for record in offered:
        delivery.offer([record])
    await eventually(lambda: sum(delivery.stats.dropped.values()) >= 40)
    await eventually(lambda: delivery.stats.spool_bytes <= 100)
    gate.set()
    stats = delivery.stats
    dropped = stats.dropped["spool_full"]
    await eventually(lambda: delivery.stats.sent == 60 - dropped)
    # The oldest spooled records went; the newest were kept and come out in order.
    got = sender.accepted_payloads
    assert got[-10:] == [r.payload for r in offered[-10:]]
    assert got == sorted(got)
    assert len(set(got)) == len(got)


async def test_no_data_dir_full_queue_rejects_or_drops(make_delivery: MakeDelivery, tmp_path: Path) -> None:
    rejecting = make_delivery(FakeBatchSender(), None, queue_max_records=5, batch_timeout="1h")
    rejecting.offer(records(0, 5))
    with pytest.raises(HandlerOverloaded):
        rejecting.offer(records(5, 6))
    assert rejecting.stats.queued_records == 5

    sender = FakeBatchSender()
    dropping = make_delivery(
        sender, None, queue_max_records=5, batch_timeout="1h", spool={"full_policy": "drop_oldest"}
    )
    dropping.offer(records(0, 5))
    dropping.offer(records(5, 8))
    assert dropping.stats.dropped == {"queue_full": 3}
    assert dropping.stats.queued_records == 5
    await dropping.start()
    await dropping.shutdown(1.0)
    assert sender.accepted_payloads == payloads(3, 8)


async def test_spool_disabled_keeps_everything_in_memory(make_delivery: MakeDelivery, tmp_path: Path) -> None:
    clock = VirtualClock(auto=True)
    sender = FakeBatchSender(default=RetryableError("down"))
    delivery = make_delivery(
        sender,
        tmp_path,
        clock=clock,
        batch_timeout=0,
        retry_max_elapsed="1s",
        retry_jitter=0,
        spool={"enabled": False},
    )
    await delivery.start()
    delivery.offer(records(0, 4))
    await eventually(lambda: delivery.stats.circuit_open)
    assert delivery.stats.queued_records == 4
    assert not (tmp_path / "spool.sqlite3").exists()
    sender.default = None
    await eventually(lambda: delivery.stats.sent == 4)
    assert sender.accepted_payloads == payloads(0, 4)


async def test_replay_keeps_offer_order_after_the_backend_returns(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    clock = VirtualClock(auto=True)
    sender = FakeBatchSender(default=RetryableError("down"))
    delivery = make_delivery(
        sender,
        tmp_path,
        clock=clock,
        batch_timeout=0,
        batch_max_records=7,
        max_concurrent_sends=1,
        retry_max_elapsed="2s",
        queue_max_records=50,
    )
    await delivery.start()
    delivery.offer(records(0, 30))
    await eventually(lambda: delivery.stats.circuit_open)
    for start in range(30, 300, 30):
        delivery.offer(records(start, start + 30))
        await settle(5)
    await eventually(lambda: delivery.stats.spool_records == 300)
    sender.default = None
    await eventually(lambda: delivery.stats.sent == 300)
    assert sender.accepted_payloads == payloads(0, 300)
    assert delivery.stats.queued_records == 0


async def test_a_failing_batch_is_on_disk_while_it_waits_to_retry(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    clock = VirtualClock(auto=False)
    sender = FakeBatchSender(RetryableError("503"))
    delivery = make_delivery(
        sender,
        tmp_path,
        clock=clock,
        batch_timeout=0,
        retry_initial_interval="4s",
        retry_jitter=0,
        max_concurrent_sends=1,
    )
    await delivery.start()
    delivery.offer(records(0, 3))
    await eventually(lambda: spool_rows(tmp_path) == payloads(0, 3))
    # The backend is failing: new records are written to disk at once, behind the failing batch.
    delivery.offer(records(3, 5))
    await eventually(lambda: spool_rows(tmp_path) == payloads(0, 5))
    await eventually(lambda: clock.sleeps == [4.0])
    assert delivery.stats.sent == 0
    clock.advance(4)
    await eventually(lambda: delivery.stats.sent == 5)
    assert sender.accepted_payloads == payloads(0, 5)
    await eventually(lambda: spool_rows(tmp_path) == [])


# ------------------------------------------------------------------------------------- the store


def test_store_reads_in_offer_order_and_skips_held_rows(tmp_path: Path) -> None:
    store = SpoolStore(tmp_path / "spool.sqlite3")
    assert store.open() == (0, 0)
    store.insert([(3, Record(b"c")), (4, Record(b"d"))], 0.0, hold=False)
    first = store.read(1, 1 << 20)
    assert [r.payload for _, r in first] == [b"c"]
    # Written late but offered early: they take their place in offer order, after what was read.
    store.insert([(2, Record(b"b"))], 0.0, hold=False)
    store.insert([(1, Record(b"a"))], 0.0, hold=False)
    held = store.insert([(5, Record(b"e"))], 0.0, hold=True)
    assert [r.payload for _, r in store.read(10, 1 << 20)] == [b"a", b"b", b"d"]
    assert store.read(10, 1 << 20) == []
    store.release(held)
    store.release([first[0][0]])
    assert [r.payload for _, r in store.read(10, 1 << 20)] == [b"c", b"e"]
    assert store.rows == 5
    store.close()
    # A reopened store puts what it is given after everything left from before.
    reopened = SpoolStore(tmp_path / "spool.sqlite3")
    reopened.open()
    reopened.insert([(1, Record(b"new"))], 0.0, hold=False)
    assert [r.payload for _, r in reopened.read(10, 1 << 20)] == [b"a", b"b", b"c", b"d", b"e", b"new"]
    reopened.close()


def test_store_read_respects_limits_and_ack_deletes(tmp_path: Path) -> None:
    store = SpoolStore(tmp_path / "spool.sqlite3")
    store.open()
    store.insert([(i, Record(b"x" * 10, route="r", key=b"k")) for i in range(1, 6)], 0.0, hold=False)
    assert store.bytes == 5 * 12
    batch = store.read(10, 30)
    assert len(batch) == 2
    assert batch[0][1] == Record(b"x" * 10, route="r", key=b"k")
    # At least one row even when it alone is over the byte limit.
    assert len(store.read(10, 1)) == 1
    store.ack([row_id for row_id, _ in batch])
    assert (store.rows, store.bytes) == (3, 36)
    store.close()
    reopened = SpoolStore(tmp_path / "spool.sqlite3")
    assert reopened.open() == (3, 36)
    # After a restart nothing is held: every row is read again, oldest first.
    assert len(reopened.read(10, 1 << 20)) == 3
    reopened.close()


def test_store_trim_drops_the_oldest_rows_that_are_not_held(tmp_path: Path) -> None:
    store = SpoolStore(tmp_path / "spool.sqlite3")
    store.open()
    store.insert([(i + 1, Record(b"%02d" % i)) for i in range(10)], 0.0, hold=False)
    held = store.read(1, 1 << 20)
    assert store.trim(12) == (4, 8)
    assert store.bytes == 12
    remaining = [r.payload for _, r in store.read(100, 1 << 20)]
    assert remaining == [b"05", b"06", b"07", b"08", b"09"]
    assert [r.payload for _, r in held] == [b"00"]
    store.close()


def test_spool_lock_is_exclusive_even_within_one_process(tmp_path: Path) -> None:
    first = SpoolLock(tmp_path)
    second = SpoolLock(tmp_path)
    assert first.try_acquire()
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


async def test_a_backlog_replays_while_new_records_stay_in_memory(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    hung = FakeBatchSender()
    hung.gate = asyncio.Event()
    first = make_delivery(hung, tmp_path, batch_timeout=0)
    await first.start()
    first.offer(records(0, 100))
    await first.shutdown(0.1)
    assert spool_rows(tmp_path) == payloads(0, 100)

    sender = FakeBatchSender()
    second = make_delivery(
        sender, tmp_path, batch_timeout=0, batch_max_records=10, max_concurrent_sends=1, ack="memory"
    )
    await second.start()
    second.offer(records(100, 110))
    # The healthy backend takes new records from memory; they do not queue behind the backlog on disk.
    assert second.stats.spooled == 0
    await eventually(lambda: second.stats.sent == 110)
    got = [int(p) for p in sender.accepted_payloads]
    assert [x for x in got if x < 100] == list(range(100))
    assert [x for x in got if x >= 100] == list(range(100, 110))
    assert second.stats.replayed == 100


async def test_an_unusable_data_dir_leaves_delivery_in_memory(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    sender = FakeBatchSender()
    delivery = make_delivery(sender, not_a_dir, batch_timeout=0)
    await delivery.start()
    delivery.offer(records(0, 3))
    await eventually(lambda: delivery.stats.sent == 3)
    assert delivery.stats.spool_records == 0


async def test_rows_committed_before_a_full_disk_are_replayed_when_the_backend_returns(
    make_delivery: MakeDelivery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spool write that fails (ENOSPC) stops spooling, not the replay of what is already on disk."""
    clock = VirtualClock(auto=True)
    sender = FakeBatchSender(default=RetryableError("down"))
    delivery = make_delivery(
        sender,
        tmp_path,
        clock=clock,
        batch_timeout=0,
        batch_max_records=7,
        max_concurrent_sends=1,
        retry_max_elapsed="2s",
        queue_max_records=50,
        ack="memory",
    )
    await delivery.start()
    delivery.offer(records(0, 30))
    await eventually(lambda: delivery.stats.circuit_open)
    await eventually(lambda: len(spool_rows(tmp_path)) == 30)

    def disk_full(*args: object, **kwargs: object) -> list[int]:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(SpoolStore, "write", disk_full)
    # The spool cannot take these: they stay in memory (there is room) and spooling stops.
    delivery.offer(records(30, 40))
    await eventually(lambda: delivery.stats.spool_records == 30)
    sender.default = None
    await eventually(lambda: delivery.stats.sent == 40)
    assert sorted(sender.accepted_payloads) == sorted(payloads(0, 40))
    assert delivery.stats.spool_records == 0
    assert delivery.stats.dropped == {}
