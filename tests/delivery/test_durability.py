"""Shutdown, restart and a killed process: what was accepted is sent or on disk."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mixer.adapter import HandlerOverloaded
from mixer.delivery import RetryableError

from .conftest import MakeDelivery
from .doubles import FakeBatchSender, eventually, payloads, records


def spool_count(data_dir: Path) -> int:
    path = data_dir / "spool.sqlite3"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=0.1) as db:
            return int(db.execute("SELECT count(*) FROM spool").fetchone()[0])
    except sqlite3.OperationalError:
        # The writer may be creating the table right now.
        return 0


async def test_shutdown_flushes_memory_without_waiting_for_the_batch_timer(
    make_delivery: MakeDelivery,
) -> None:
    sender = FakeBatchSender()
    delivery = make_delivery(sender, None, batch_timeout="1h", batch_max_records=4)
    await delivery.start()
    delivery.offer(records(0, 10))
    await delivery.shutdown(2.0)
    assert sender.accepted_payloads == payloads(0, 10)
    assert sender.closed
    assert delivery.stats.queued_records == 0


async def test_shutdown_within_timeout_spools_what_it_could_not_send(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    hung = FakeBatchSender()
    hung.gate = asyncio.Event()  # the backend never answers
    first = make_delivery(hung, tmp_path, batch_timeout=0, batch_max_records=10, send_timeout="1h")
    await first.start()
    first.offer(records(0, 100))
    await eventually(lambda: hung.in_flight == 2)
    began = time.monotonic()
    await first.shutdown(0.4)
    assert time.monotonic() - began < 0.6
    assert hung.closed
    assert first.stats.queued_records == 0
    assert spool_count(tmp_path) == 100
    with pytest.raises(HandlerOverloaded):
        first.offer(records(100, 101))
    # Idempotent: a second call returns at once.
    began = time.monotonic()
    await first.shutdown(5.0)
    assert time.monotonic() - began < 0.1

    sender = FakeBatchSender()
    second = make_delivery(sender, tmp_path, batch_timeout=0)
    await second.start()
    await eventually(lambda: second.stats.sent == 100)
    # The batches cut off in flight were written back ahead of the rest, in offer order.
    assert sender.accepted_payloads == payloads(0, 100)
    assert second.stats.replayed == 100


async def test_records_offered_before_start_are_spooled_by_a_shutdown_without_start(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    delivery = make_delivery(FakeBatchSender(), tmp_path)
    delivery.offer(records(0, 3))
    await delivery.shutdown(1.0)
    assert spool_count(tmp_path) == 3


async def test_without_a_spool_shutdown_counts_what_it_had_to_drop(make_delivery: MakeDelivery) -> None:
    sender = FakeBatchSender(default=RetryableError("down"))
    delivery = make_delivery(sender, None, batch_timeout=0, retry_initial_interval="1h")
    await delivery.start()
    delivery.offer(records(0, 5))
    await eventually(lambda: delivery.stats.failed == 5)
    await delivery.shutdown(0.5)
    assert delivery.stats.dropped == {"shutdown": 5}


async def test_a_new_delivery_takes_the_spool_over_when_the_old_one_stops(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    down = FakeBatchSender(default=RetryableError("down"))
    old = make_delivery(down, tmp_path, name="reloaded", batch_timeout=0, retry_max_elapsed=0)
    await old.start()
    old.offer(records(0, 20))
    await eventually(lambda: old.stats.circuit_open)

    sender = FakeBatchSender()
    new = make_delivery(sender, tmp_path, name="reloaded", batch_timeout=0)
    await new.start()
    # The spool is still the old one's: the new handler works from memory meanwhile.
    new.offer(records(20, 25))
    await eventually(lambda: new.stats.sent == 5)
    assert new.stats.spool_records == 0
    await old.shutdown(0.5)
    await eventually(lambda: new.stats.sent == 25, timeout=3.0)
    assert sorted(sender.accepted_payloads) == sorted(payloads(0, 25))
    assert sender.accepted_payloads[5:] == payloads(0, 20)


_CHILD = textwrap.dedent(
    """
    import asyncio, logging, sys
    from pathlib import Path
    from mixer.delivery import Delivery, DeliveryOptions, Record, RetryableError

    class DownBackend:  # a BatchSender test double: the backend is unreachable
        async def send(self, batch):
            raise RetryableError("connection refused")
        async def close(self):
            pass

    async def main():
        options = DeliveryOptions(batch_timeout=0, batch_max_records=50, retry_max_elapsed="1h")
        delivery = Delivery("killed", DownBackend(), options, data_dir=Path(sys.argv[1]),
                            logger=logging.getLogger("child"))
        await delivery.start()
        delivery.offer([Record(b"%d" % i, route="t") for i in range(100)])
        while delivery.stats.failed == 0:
            await asyncio.sleep(0.001)
        # The backend is known to fail now: these go to disk without waiting for retries to run out.
        for start in range(100, 1000, 100):
            delivery.offer([Record(b"%d" % i, route="t") for i in range(start, start + 100)])
        print("offered", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_spooled_records_survive_a_sigkill_and_are_replayed(
    make_delivery: MakeDelivery, tmp_path: Path
) -> None:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    data_dir = tmp_path / "data"
    child = subprocess.Popen(
        [sys.executable, str(script), str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "offered"
        # Durable means: in the spool file, well before retry_max_elapsed (1 h) could pass.
        await eventually(lambda: spool_count(data_dir) == 1000, timeout=5.0)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=5)
        assert child.stdout is not None
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    sender = FakeBatchSender()
    replacement = make_delivery(sender, data_dir, batch_timeout=0, max_concurrent_sends=1)
    await replacement.start()
    await eventually(lambda: replacement.stats.sent == 1000)
    assert sender.accepted_payloads == payloads(0, 1000)
    assert {record.route for record in sender.accepted} == {"t"}
    await eventually(lambda: spool_count(data_dir) == 0)
