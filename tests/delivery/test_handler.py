"""DeliveryReportHandler: the report handler lifecycle shared by Delivery-based adapters."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from mixer.adapter import DeliveryAck, HandlerEnv, HandlerOverloaded, ReportBatch
from mixer.delivery import DeliveryOptions, DeliveryReportHandler, Record
from mixer.templates import LogEntryInstance

from .doubles import FakeBatchSender, eventually


class _Handler(DeliveryReportHandler[FakeBatchSender]):
    def __init__(self, sender: FakeBatchSender, **options: object) -> None:
        env = HandlerEnv(handler_name="shared", logger=logging.getLogger("tests.delivery"))
        super().__init__(sender, DeliveryOptions.model_validate(options), env)
        self.started_sender = 0

    def encode_batch(self, batch: ReportBatch) -> list[Record]:
        return [Record(i.name.encode()) for i in batch.instances if i.name != "skip"]

    async def start_sender(self) -> None:
        self.started_sender += 1


def _batch(*names: str) -> ReportBatch:
    return ReportBatch("shared", [LogEntryInstance(name) for name in names])


async def test_encoded_records_are_sent_and_counted() -> None:
    sender = FakeBatchSender()
    handler = _Handler(sender, batch_timeout=0)
    await handler.start()
    assert handler.started_sender == 1
    handler.handle_report(_batch("a", "skip", "b"))
    handler.handle_report(_batch("skip"))
    await eventually(lambda: handler.delivery_stats.sent == 2)
    await handler.shutdown(1.0)
    assert sender.accepted_payloads == [b"a", b"b"]
    assert sender.closed


async def test_shutdown_is_idempotent_and_refuses_later_records() -> None:
    sender = FakeBatchSender()
    handler = _Handler(sender)
    await handler.start()
    await handler.shutdown(1.0)
    sender.closed = False
    await handler.shutdown(1.0)
    assert not sender.closed
    handler.handle_report(_batch("skip"))  # nothing to offer, nothing refused
    with pytest.raises(HandlerOverloaded):
        handler.handle_report(_batch("late"))


async def test_a_full_queue_propagates_overloaded() -> None:
    handler = _Handler(FakeBatchSender(), queue_max_records=1)
    handler.handle_report(_batch("a"))
    with pytest.raises(HandlerOverloaded):
        handler.handle_report(_batch("b"))
    await handler.shutdown(1.0)


@pytest.mark.parametrize(
    ("server", "option", "expected"),
    [
        ("auto", None, "auto"),
        ("memory", None, "memory"),
        ("memory", "spool", "spool"),
        ("spool", "memory", "memory"),
    ],
)
async def test_the_ack_mode_is_the_handlers_option_else_the_servers(
    tmp_path: Path, server: DeliveryAck, option: DeliveryAck | None, expected: DeliveryAck
) -> None:
    env = HandlerEnv(
        handler_name="acked",
        logger=logging.getLogger("tests.delivery"),
        data_dir=tmp_path,
        delivery_ack=server,
    )

    class Handler(DeliveryReportHandler[FakeBatchSender]):
        def encode_batch(self, batch: ReportBatch) -> list[Record]:
            return [Record(i.name.encode()) for i in batch.instances]

    sender = FakeBatchSender()
    handler = Handler(sender, DeliveryOptions(ack=option, batch_timeout=timedelta(0)), env)
    await handler.start()
    try:
        assert handler.delivery.ack == expected
        commit = handler.handle_report(_batch("a"))
        # The backend has not answered yet: only memory acknowledgement answers at once.
        assert (commit is None) == (expected == "memory")
        if commit is not None:
            await commit
        await eventually(lambda: sender.accepted_payloads == [b"a"])
    finally:
        await handler.shutdown(1.0)
