"""Admission: what :meth:`Delivery.offer <mixer.delivery.Delivery.offer>` does with records: queue
them, stage them in the spool (with or without waiting for the commit), or refuse them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mixer.adapter import DeliveryAck, HandlerOverloaded
from mixer.delivery._circuit import Circuit
from mixer.delivery._queue import RecordQueue
from mixer.delivery._spool_writer import SpoolWriter
from mixer.delivery._spooler import Spooler
from mixer.delivery._stats import Counters
from mixer.delivery._types import Record


class Admission:
    """What :meth:`Delivery.offer <mixer.delivery.Delivery.offer>` does with the records it is given."""

    __slots__ = ("_ack", "_circuit", "_counters", "_name", "_queue", "_spooler", "_writer")

    def __init__(
        self,
        name: str,
        ack: DeliveryAck,
        queue: RecordQueue,
        spooler: Spooler,
        writer: SpoolWriter,
        circuit: Circuit,
        counters: Counters,
    ) -> None:
        self._name = name
        self._ack: DeliveryAck = ack
        self._queue = queue
        self._spooler = spooler
        self._writer = writer
        self._circuit = circuit
        self._counters = counters

    def offer(self, records: Sequence[Record]) -> asyncio.Future[None] | None:
        if not records:
            return None
        queue = self._queue
        sizes = [record.size() for record in records]
        total = sum(sizes)
        fits = queue.fits(len(records), total)
        if self._spooler.ready:
            if self._circuit.degraded or not fits:
                return self._writer.stage(records, total, durable=self.durable())
            if self.durable():
                return self._writer.stage_ahead(records, sizes, total)
        if fits:
            queue.enqueue(records, sizes)
            return None
        if queue.reject:
            raise HandlerOverloaded(
                f"{self._name}: queue full ({queue.mem_records} records, {queue.mem_bytes} bytes)"
            )
        queue.enqueue(records, sizes)
        self._counters.drop("queue_full", queue.drop_oldest())
        return None

    def durable(self) -> bool:
        spooler = self._spooler
        if not spooler.ready or self._ack == "memory":
            return False
        if self._ack == "spool":
            return True
        circuit = self._circuit
        return (
            circuit.degraded
            or circuit.is_open
            or not circuit.answered_once
            or spooler.ahead_pending > 0
            or spooler.records > spooler.held
        )
