"""The report handler lifecycle every adapter built on :class:`Delivery` shares."""

from __future__ import annotations

import abc
from collections.abc import Awaitable
from typing import Generic, TypeVar

from mixer.adapter import HandlerEnv, ReportBatch, ReportHandler
from mixer.delivery._delivery import Delivery
from mixer.delivery._options import DeliveryOptions
from mixer.delivery._stats import DeliveryStats
from mixer.delivery._types import BatchSender, Record

__all__ = ["DeliveryReportHandler"]

SenderT = TypeVar("SenderT", bound=BatchSender)


class DeliveryReportHandler(ReportHandler, Generic[SenderT]):
    """A report handler that encodes instances into records and leaves the rest to Delivery.

    Subclasses implement :meth:`encode_batch` and, when their sender needs it, :meth:`start_sender`.
    The sender type is a parameter so that subclasses reach their sender's own counters and
    methods through :attr:`sender` without casts.
    """

    def __init__(self, sender: SenderT, options: DeliveryOptions, env: HandlerEnv) -> None:
        self.sender = sender
        self.delivery = Delivery(
            env.handler_name, sender, options, data_dir=env.data_dir, logger=env.logger, ack=env.delivery_ack
        )
        self._closed = False

    @abc.abstractmethod
    def encode_batch(self, batch: ReportBatch) -> list[Record]:
        """The records for ``batch``, in order; instances the backend cannot take are left out."""

    def handle_report(self, batch: ReportBatch) -> Awaitable[None] | None:
        """Offer the encoded batch to Delivery; the spool commit to wait for, if it acknowledges so.

        :raises HandlerOverloaded: Delivery did not accept the records.
        """
        records = self.encode_batch(batch)
        if records:
            return self.delivery.offer(records)
        return None

    async def start_sender(self) -> None:
        """Prepare the sender before Delivery may call it; errors here fail the start."""

    async def start(self) -> None:
        await self.start_sender()
        await self.delivery.start()

    async def shutdown(self, timeout: float) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.delivery.shutdown(timeout)
        finally:
            # Delivery closes the sender only when its own shutdown gets that far; an error or a
            # cancellation before then must not leave connections open.
            await self.sender.close()

    @property
    def delivery_stats(self) -> DeliveryStats:
        return self.delivery.stats
