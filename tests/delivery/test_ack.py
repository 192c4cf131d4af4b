"""Acknowledgement modes: an offer in ``spool`` acknowledgement completes once its records are on disk."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mixer.adapter import HandlerOverloaded
from mixer.delivery import RetryableError
from mixer.runtime import ReportOutcome
from mixer.status import Code

from .conftest import MakeDelivery
from .doubles import FakeBatchSender, eventually, payloads, records


def committed_payloads(data_dir: Path) -> list[bytes]:
    """What another connection sees: only committed rows."""
    with sqlite3.connect(f"file:{data_dir / 'spool.sqlite3'}?mode=ro", uri=True, timeout=5) as db:
        return [bytes(row[0]) for row in db.execute("SELECT payload FROM spool ORDER BY id")]


async def test_spool_ack_completes_after_the_commit_and_the_row_goes_once_sent(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    sender = FakeBatchSender()
    gate = sender.gate = asyncio.Event()
    delivery = make_delivery(sender, tmp_path, batch_timeout=0, ack="spool")
    await delivery.start()
    commit = delivery.offer(records(0, 5))
    assert commit is not None
    await commit
    # Committed before the backend saw anything: the answer to the Report may go out now.
    assert committed_payloads(tmp_path) == payloads(0, 5)
    assert delivery.stats.spool_records == 5
    # Written ahead, not spooled to wait: the backend has not failed.
    assert (delivery.stats.written_ahead, delivery.stats.spooled) == (5, 0)
    gate.set()
    await eventually(lambda: sender.accepted_payloads == payloads(0, 5))
    await eventually(lambda: delivery.stats.spool_records == 0)
    assert committed_payloads(tmp_path) == []
    assert delivery.stats.queued_records == 0


async def test_offers_waiting_together_share_one_commit(make_delivery: MakeDelivery, tmp_path: Path) -> None:
    delivery = make_delivery(FakeBatchSender(), tmp_path, batch_timeout=0, ack="spool")
    await delivery.start()
    # Offers made in the same loop turn wait for the same transaction.
    commits = [delivery.offer(records(i * 10, i * 10 + 10)) for i in range(20)]
    assert all(commit is not None for commit in commits)
    assert len({id(commit) for commit in commits}) <= 2
    await asyncio.gather(*(commit for commit in commits if commit is not None))
    await eventually(lambda: delivery.stats.sent == 200)


async def test_memory_ack_never_waits(make_delivery: MakeDelivery, tmp_path: Path) -> None:
    sender = FakeBatchSender(default=RetryableError("down"))
    delivery = make_delivery(sender, tmp_path, batch_timeout=0, ack="memory")
    await delivery.start()
    assert delivery.offer(records(0, 5)) is None
    await eventually(lambda: delivery.stats.failed > 0)
    assert delivery.offer(records(5, 10)) is None


async def test_auto_ack_waits_until_the_backend_answered_and_again_once_it_fails(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    sender = FakeBatchSender()
    delivery = make_delivery(sender, tmp_path, batch_timeout=0, ack="auto", retry_max_elapsed="1h")
    await delivery.start()
    # The backend has not answered yet: nothing says it is up.
    first = delivery.offer(records(0, 5))
    assert first is not None
    await first
    await eventually(lambda: delivery.stats.sent == 5 and delivery.stats.spool_records == 0)
    # It answered: records are acknowledged from memory.
    assert delivery.offer(records(5, 10)) is None
    await eventually(lambda: delivery.stats.sent == 10)
    # It fails: acknowledged only once on disk again.
    sender.default = RetryableError("down")
    assert delivery.offer(records(10, 15)) is None
    await eventually(lambda: delivery.stats.failed > 0)
    failing = delivery.offer(records(15, 20))
    assert failing is not None
    await failing
    assert set(payloads(15, 20)) <= set(committed_payloads(tmp_path))


async def test_auto_ack_waits_while_a_backlog_is_on_disk(make_delivery: MakeDelivery, tmp_path: Path) -> None:
    hung = FakeBatchSender()
    hung.gate = asyncio.Event()
    first = make_delivery(hung, tmp_path, batch_timeout=0, ack="memory")
    await first.start()
    first.offer(records(0, 100))
    await first.shutdown(0.1)
    assert len(committed_payloads(tmp_path)) == 100

    sender = FakeBatchSender()
    sender.gate = asyncio.Event()
    second = make_delivery(sender, tmp_path, batch_timeout=0, batch_max_records=10, ack="auto")
    await second.start()
    commit = second.offer(records(100, 110))
    assert commit is not None
    await commit
    assert set(payloads(100, 110)) <= set(committed_payloads(tmp_path))
    sender.gate.set()
    await eventually(lambda: second.stats.sent == 110 and second.stats.spool_records == 0)
    assert sorted(sender.accepted_payloads, key=int) == payloads(0, 110)


async def test_a_failed_spool_write_fails_the_ack_and_keeps_the_records(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    sender = FakeBatchSender()
    sender.gate = asyncio.Event()
    delivery = make_delivery(sender, tmp_path, batch_timeout=0, ack="spool")
    await delivery.start()
    await eventually((tmp_path / "spool.sqlite3").exists)
    # The spool's table disappears underneath it: the next write fails.
    with sqlite3.connect(tmp_path / "spool.sqlite3", timeout=5) as db:
        db.execute("DROP TABLE spool")
    commit = delivery.offer(records(0, 5))
    assert commit is not None
    with pytest.raises(HandlerOverloaded):
        await commit
    # Not durable, so the Report is refused; the records still go out from memory.
    assert delivery.stats.queued_records == 5
    assert delivery.offer(records(5, 10)) is None
    sender.gate.set()
    await eventually(lambda: sender.accepted_payloads == payloads(0, 10))


async def test_report_outcome_waits_for_its_commits_and_refuses_when_one_fails() -> None:
    loop = asyncio.get_running_loop()
    ok: asyncio.Future[None] = loop.create_future()
    failed: asyncio.Future[None] = loop.create_future()
    outcome = ReportOutcome(records=2, instances=2, pending=(("a", ok), ("b", failed)))
    assert outcome.status.ok
    waiting = asyncio.ensure_future(outcome.durable_status())
    await asyncio.sleep(0)
    assert not waiting.done()
    ok.set_result(None)
    failed.set_exception(HandlerOverloaded("spool write failed"))
    status = await waiting
    assert status.code is Code.UNAVAILABLE
    assert status.message == "handler overloaded: b"
    # A caller that gives up does not cancel a commit other Reports share.
    shared: asyncio.Future[None] = loop.create_future()
    gave_up = asyncio.ensure_future(ReportOutcome(records=1, pending=(("a", shared),)).durable_status())
    await asyncio.sleep(0)
    gave_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gave_up
    assert not shared.cancelled()
