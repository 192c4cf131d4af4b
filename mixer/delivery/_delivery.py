"""The Delivery engine: bounded queue, batching, concurrent sends, retry, circuit, spool, replay.

:class:`Delivery` is the facade over its parts, which share one wake-up event and one set of
counters: admission and the memory queue (``_queue``), the spool and its thread (``_spooler``,
group commit in ``_spool_writer``), the sending loop (``_sender``, outcomes in ``_settle``,
backend health in ``_circuit``) and the shutdown (``_shutdown``). Everything runs on the event
loop except the spool and dead-letter I/O, which run on one dedicated thread per Delivery.

Where a record is at any time, and who is responsible for it:

- memory: the waiting deque or a batch being sent; counted in ``queued_records/bytes``.
- the spool: a row on disk; counted in ``spool_records/bytes``. A row read back for sending is
  *held* (in memory as well) until it is acknowledged (deleted) or released (read again later).
- gone: accepted by the backend, written to the dead letter, or dropped under a counted policy.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from mixer.adapter import DeliveryAck, HandlerOverloaded
from mixer.delivery import _metrics
from mixer.delivery._admission import Admission
from mixer.delivery._circuit import Circuit
from mixer.delivery._options import DeliveryOptions
from mixer.delivery._queue import RecordQueue
from mixer.delivery._sender import Sender
from mixer.delivery._settle import Settler
from mixer.delivery._shutdown import Shutdown
from mixer.delivery._spool_writer import SpoolWriter
from mixer.delivery._spooler import Spooler
from mixer.delivery._stats import Counters, DeliveryStats
from mixer.delivery._types import BatchSender, Record

__all__ = ["Delivery"]


class Delivery:
    """Queues, batches, sends, retries and spools one handler's records.

    The contract, in short (``docs/delivery.md`` has the whole of it):

    - :meth:`offer` never waits. It accepts all the records given or raises
      :class:`~mixer.adapter.HandlerOverloaded` and accepts none.
    - An accepted record is sent at least once, written to the dead letter, or dropped under a
      policy the options chose, and every drop is counted in ``stats.dropped`` by reason. With a
      data dir the only other way to lose one is the process dying while it is held in memory
      only; see "durability" below.
    - Order: every accepted record is numbered in offer order and the spool keeps that order,
      whatever order records reach it in (records of an earlier run come first). While the
      backend keeps up, records are handed to the sender in offer order. The spool is replayed
      oldest first, interleaved with newer records that found room in memory, so a backlog never
      blocks fresh records; each of the two streams stays in offer order. With
      ``max_concurrent_sends > 1`` batches overlap and may complete in any order; items a backend
      asks to retry are resent after the rest of their batch.
    - Durability (with a data dir and the spool enabled): a record is durable once it is written
      to the spool. Records go to the spool when the memory queue is full, as soon as a send has
      failed and until one succeeds again (the records waiting in memory move there too, and a
      failing batch is written before its first retry wait), while the circuit is open, and at
      shutdown. So records live in memory only while the backend answers: for about
      ``batch_timeout`` plus one send attempt (at most ``send_timeout``) plus the wait behind the
      batches ahead of them. Those are lost if the process is killed. A spooled record stays on
      disk until the backend accepted it, so after a kill it can be sent twice.
    - Acknowledgement (``ack``, see :meth:`durable`): in ``spool`` mode, and in ``auto`` while
      the backend fails or has a backlog, :meth:`offer` returns the future of the group-commit
      write that holds the records, and the caller answers the Report once it completes. While
      the backend answers, such records are written ahead (held rows, sent from memory once
      committed, deleted once accepted), so none of them is ever only in memory.

    Without a data dir (or with ``spool.enabled: false``) everything is in memory: when the queue is
    full ``spool.full_policy`` applies to it (``reject`` refuses the offer, ``drop_oldest`` drops the
    oldest waiting records, counted as ``queue_full``), a batch whose retries ran out goes back to
    the head of the queue, and what shutdown cannot send is dropped (counted as ``shutdown``).

    ``name`` (the handler name) labels the metrics; ``data_dir`` (``HandlerEnv.data_dir``) holds
    ``spool.sqlite3`` and ``dead-letter.jsonl``; ``clock`` (seconds) and ``sleep`` time batch waits,
    retries and probes, and tests replace them. ``send_timeout`` and the spool-lock polling use the
    event loop's own time.
    """

    def __init__(
        self,
        name: str,
        sender: BatchSender,
        options: DeliveryOptions,
        *,
        data_dir: Path | None,
        logger: logging.Logger,
        ack: DeliveryAck = "auto",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._name = name
        self._ack: DeliveryAck = options.ack if options.ack is not None else ack
        self._started = False
        self._shutdown_task: asyncio.Task[None] | None = None
        rng = random.Random()
        wake = asyncio.Event()
        counters = self._counters = Counters()
        queue = self._queue = RecordQueue(options, clock, wake)
        circuit = self._circuit = Circuit(options, rng, logger, wake)
        spooler = self._spooler = Spooler(name, options, data_dir, logger, queue, counters, wake)
        writer = SpoolWriter(name, spooler, queue, circuit, counters, logger, wake, clock)
        self._admission = Admission(name, self._ack, queue, spooler, writer, circuit, counters)
        settler = Settler(
            name, options.dead_letter_max_bytes, data_dir, queue, spooler, circuit, counters, logger
        )
        self._sender = Sender(
            name,
            sender,
            options,
            queue=queue,
            spooler=spooler,
            circuit=circuit,
            settler=settler,
            counters=counters,
            logger=logger,
            wake=wake,
            clock=clock,
            sleep=sleep,
            rng=rng,
        )
        self._shutdown = Shutdown(
            sender,
            queue=queue,
            spooler=spooler,
            circuit=circuit,
            sender=self._sender,
            counters=counters,
            logger=logger,
            wake=wake,
        )
        _metrics.track(self)

    @property
    def name(self) -> str:
        return self._name

    @property
    def ack(self) -> DeliveryAck:
        """The acknowledgement mode (the handler's ``ack`` option, else the server's)."""
        return self._ack

    def offer(self, records: Sequence[Record]) -> asyncio.Future[None] | None:
        """Accept ``records`` (all of them) or raise :class:`HandlerOverloaded` (none of them).

        Never waits: records go to the memory queue or are handed to the spool thread. Returns
        ``None`` when the records are accepted in memory, or (in ``spool`` acknowledgement, see
        :meth:`durable`) a future that completes once the spool transaction holding them has
        committed; it raises :class:`HandlerOverloaded` if that write failed (the records are then
        kept in memory as far as there is room). Many offers share one future (group commit).
        """
        if self._sender.closing:
            raise HandlerOverloaded(f"{self._name}: delivery is shutting down")
        return self._admission.offer(records)

    def durable(self) -> bool:
        """Whether an offer now is acknowledged only once committed to the spool.

        ``spool``: always (while a spool is open). ``auto``: while the backend is failing or the
        circuit is open, while records wait in the spool that are not on their way out, before the
        backend first answered, and while earlier write-ahead records are still being committed
        (so that records enter the memory queue in offer order).
        """
        return self._admission.durable()

    async def start(self) -> None:
        """Open the spool (replay of what it holds starts at once) and the sending loop.

        Returns quickly. When another Delivery (of this process or another) owns the spool, this one
        runs in memory only and takes the spool over as soon as it is released.
        """
        if self._started:
            return
        if self._sender.closing:
            raise RuntimeError(f"delivery {self._name} was shut down")
        self._started = True
        await self._spooler.start(self._name)
        self._sender.start()

    async def shutdown(self, timeout: float) -> None:
        """Stop intake, send what memory holds within ``timeout``, spool the rest, close. Idempotent.

        Sending stops early enough to leave a quarter of ``timeout`` (at most 2 s) for writing what
        is still in memory to the spool; that write is never cut short, because the records in it
        were accepted. It may take the spool past ``spool.max_bytes`` by at most the memory queue.
        Then the sender is closed with what is left of ``timeout``.
        """
        if self._shutdown_task is None:
            self._sender.closing = True
            self._shutdown_task = asyncio.create_task(self._stop(timeout), name=f"delivery-{self._name}-stop")
        await asyncio.shield(self._shutdown_task)

    async def _stop(self, timeout: float) -> None:
        try:
            await self._shutdown.run(timeout, started=self._started)
        finally:
            _metrics.retire(self)

    @property
    def stats(self) -> DeliveryStats:
        c = self._counters
        queue = self._queue
        spooler = self._spooler
        return DeliveryStats(
            queued_records=queue.mem_records,
            queued_bytes=queue.mem_bytes,
            sent=c.sent,
            failed=c.failed,
            retried=c.retried,
            spooled=c.spooled,
            written_ahead=c.written_ahead,
            replayed=c.replayed,
            dead_lettered=c.dead_lettered,
            dropped=dict(c.dropped),
            spool_records=spooler.records,
            spool_bytes=spooler.bytes,
            in_flight=self._sender.in_flight,
            circuit_open=self._circuit.is_open,
            send_duration_count=c.duration_count,
            send_duration_sum=c.duration_sum,
            send_duration_buckets=c.cumulative_buckets(),
        )
