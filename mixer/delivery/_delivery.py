"""The Delivery engine: bounded queue, batching, concurrent sends, retry, circuit, spool, replay.

Everything here runs on the event loop except the spool and dead-letter I/O, which run on one
dedicated thread per Delivery (so SQLite never blocks the loop and its calls never interleave).
Bookkeeping that decides admission (memory and spool sizes) is kept on the loop, updated when work
is handed to the thread, so :meth:`Delivery.offer` decides without waiting.

Where a record is at any time, and who is responsible for it:

- memory: the waiting deque or a batch being sent; counted in ``queued_records/bytes``.
- the spool: a row on disk; counted in ``spool_records/bytes``. A row read back for sending is
  *held* (in memory as well) until it is acknowledged (deleted) or released (read again later).
- gone: accepted by the backend, written to the dead letter, or dropped under a counted policy.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from mixer.adapter import DeliveryAck, HandlerOverloaded
from mixer.delivery import _metrics
from mixer.delivery._deadletter import DeadLetterFile
from mixer.delivery._options import DeliveryOptions
from mixer.delivery._spool import SPOOL_FILE, SpoolLock, SpoolStore
from mixer.delivery._stats import SEND_DURATION_BUCKETS, DeliveryStats
from mixer.delivery._types import BatchSender, PermanentError, Record, RetryableError, SendResult

__all__ = ["Delivery"]

_T = TypeVar("_T")

#: How often a Delivery whose spool another owner holds tries to take it over (seconds, real time).
_LOCK_POLL_INTERVAL: Final = 0.25
#: Share of the shutdown timeout kept for writing what is left to the spool and closing.
_SHUTDOWN_RESERVE: Final = 0.25
_SHUTDOWN_RESERVE_MAX: Final = 2.0


class _Entry:
    """A record in memory; ``spool_id`` is its row when it is also on disk.

    ``seq`` numbers records in offer order, to put back in order batches that come back together.
    """

    __slots__ = ("arrival", "record", "seq", "size", "spool_id")

    def __init__(
        self, record: Record, size: int, arrival: float, seq: int, spool_id: int | None = None
    ) -> None:
        self.record = record
        self.size = size
        self.arrival = arrival
        self.seq = seq
        self.spool_id = spool_id


class _Written:
    """One group-commit write, from the spool thread back to the loop."""

    __slots__ = ("ahead", "batch", "commit", "error", "ids", "trimmed")

    def __init__(
        self, batch: list[tuple[int, Record]], ahead: list[_Entry], commit: asyncio.Future[None] | None
    ) -> None:
        self.batch = batch
        self.ahead = ahead
        self.commit = commit
        self.ids: list[int] = []
        self.trimmed = (0, 0)
        self.error: BaseException | None = None


class _Backoff:
    """Exponential intervals with multiplicative jitter: ``interval * U(1 - jitter, 1 + jitter)``."""

    def __init__(self, options: DeliveryOptions, rng: random.Random) -> None:
        self._initial = options.retry_initial_interval.total_seconds()
        self._max = options.retry_max_interval.total_seconds()
        self._multiplier = options.retry_multiplier
        self._jitter = options.retry_jitter
        self._rng = rng
        self._interval = self._initial

    def reset(self) -> None:
        self._interval = self._initial

    def next(self) -> float:
        interval = min(self._interval, self._max)
        self._interval = min(self._interval * self._multiplier, self._max)
        if self._jitter == 0:
            return interval
        return interval * self._rng.uniform(1.0 - self._jitter, 1.0 + self._jitter)


class _Counters:
    __slots__ = (
        "dead_lettered",
        "dropped",
        "duration_buckets",
        "duration_count",
        "duration_sum",
        "failed",
        "replayed",
        "retried",
        "sent",
        "spooled",
        "written_ahead",
    )

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.retried = 0
        self.spooled = 0
        self.written_ahead = 0
        self.replayed = 0
        self.dead_lettered = 0
        self.dropped: dict[str, int] = {}
        self.duration_count = 0
        self.duration_sum = 0.0
        self.duration_buckets = [0] * (len(SEND_DURATION_BUCKETS) + 1)

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def observe(self, seconds: float) -> None:
        self.duration_count += 1
        self.duration_sum += seconds
        self.duration_buckets[bisect.bisect_left(SEND_DURATION_BUCKETS, seconds)] += 1


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
        self._sender = sender
        self._options = options
        self._data_dir = data_dir
        self._log = logger
        self._clock = clock
        self._sleep = sleep
        self._rng = random.Random()

        self._max_records = options.queue_max_records
        self._max_bytes = options.queue_max_bytes
        self._batch_records = options.batch_max_records
        self._batch_bytes = options.batch_max_bytes
        self._batch_timeout = options.batch_timeout.total_seconds()
        self._send_timeout = options.send_timeout.total_seconds()
        self._max_elapsed = options.retry_max_elapsed.total_seconds()
        self._spool_max = options.spool.max_bytes
        self._reject = options.spool.full_policy == "reject"
        # Replay reads when fewer spooled records than this are in memory, so that a backlog keeps
        # every send slot busy and moves on even while new records keep memory busy too.
        self._low_water = options.batch_max_records * options.max_concurrent_sends
        self._read_chunk = max(self._low_water * 2, 1)

        self._queue: deque[_Entry] = deque()
        self._seq = 1
        self._queue_bytes = 0
        self._mem_records = 0
        self._mem_bytes = 0
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._backing_off: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._counters = _Counters()

        self._spool_wanted = data_dir is not None and options.spool.enabled
        self._spool_ready = False
        # Open for reading: stays set when writes fail (a full disk), so rows already committed
        # are still replayed and acknowledged; ``_spool_ready`` is about taking new rows.
        self._spool_open = False
        self._spool_records = 0
        self._spool_bytes = 0
        self._held = 0
        self._spool_version = 0
        self._empty_read_version = -1
        self._store = (
            SpoolStore(data_dir / SPOOL_FILE, synchronous=options.spool.synchronous)
            if data_dir is not None
            else None
        )
        self._lock = SpoolLock(data_dir) if data_dir is not None else None
        self._dead_letter = (
            DeadLetterFile(data_dir, name, options.dead_letter_max_bytes) if data_dir is not None else None
        )
        self._executor: ThreadPoolExecutor | None = None
        # Group commit: what offers handed to the spool thread since its last write, all written
        # in its next transaction. ``_staged_ahead`` are records also kept in memory for sending
        # (acknowledged from the spool while the backend answers), entering the queue once
        # committed; ``_commit`` is the future the offers waiting for that transaction share.
        self._staged: list[tuple[int, Record]] = []
        self._staged_ahead: list[_Entry] = []
        self._commit: asyncio.Future[None] | None = None
        self._staged_lock = threading.Lock()
        self._write_pending = False
        # Write-ahead records offered but not yet committed (they are counted in memory already).
        self._ahead_pending = 0
        # The backend has answered a send cleanly since this Delivery started.
        self._answered_once = False

        self._degraded = False
        self._circuit_open = False
        self._probe_backoff = _Backoff(options, self._rng)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._lock_waiter: asyncio.Task[None] | None = None
        self._started = False
        self._closing = False
        self._flushing = False
        self._shutdown_task: asyncio.Task[None] | None = None
        _metrics.track(self)

    # ----------------------------------------------------------------------------------- public

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
        if self._closing:
            raise HandlerOverloaded(f"{self._name}: delivery is shutting down")
        if not records:
            return None
        sizes = [record.size() for record in records]
        total = sum(sizes)
        count = len(records)
        fits = self._mem_records + count <= self._max_records and self._mem_bytes + total <= self._max_bytes
        if self._spool_ready:
            if self._degraded or not fits:
                return self._stage(records, total, durable=self.durable())
            if self.durable():
                return self._stage_ahead(records, sizes, total)
        if fits:
            self._enqueue(records, sizes)
            return None
        if self._reject:
            raise HandlerOverloaded(
                f"{self._name}: queue full ({self._mem_records} records, {self._mem_bytes} bytes)"
            )
        self._enqueue(records, sizes)
        dropped = 0
        while self._queue and (self._mem_records > self._max_records or self._mem_bytes > self._max_bytes):
            entry = self._queue.popleft()
            self._queue_bytes -= entry.size
            self._mem_records -= 1
            self._mem_bytes -= entry.size
            dropped += 1
        self._counters.drop("queue_full", dropped)
        return None

    def durable(self) -> bool:
        """Whether an offer now is acknowledged only once committed to the spool.

        ``spool``: always (while a spool is open). ``auto``: while the backend is failing or the
        circuit is open, while records wait in the spool that are not on their way out, before the
        backend first answered, and while earlier write-ahead records are still being committed
        (so that records enter the memory queue in offer order).
        """
        if not self._spool_ready or self._ack == "memory":
            return False
        if self._ack == "spool":
            return True
        return (
            self._degraded
            or self._circuit_open
            or not self._answered_once
            or self._ahead_pending > 0
            or self._spool_records > self._held
        )

    async def start(self) -> None:
        """Open the spool (replay of what it holds starts at once) and the sending loop.

        Returns quickly. When another Delivery (of this process or another) owns the spool, this one
        runs in memory only and takes the spool over as soon as it is released.
        """
        if self._started:
            return
        if self._closing:
            raise RuntimeError(f"delivery {self._name} was shut down")
        self._started = True
        self._loop = asyncio.get_running_loop()
        if self._data_dir is not None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"delivery-{self._name}")
        if self._spool_wanted and not await self._try_open_spool():
            self._log.warning(
                "spool %s is in use by another handler or process; records stay in memory until it is free",
                self._data_dir,
            )
            self._lock_waiter = asyncio.create_task(
                self._wait_for_spool(), name=f"delivery-{self._name}-lock"
            )
        self._dispatcher = asyncio.create_task(self._dispatch(), name=f"delivery-{self._name}")

    async def shutdown(self, timeout: float) -> None:
        """Stop intake, send what memory holds within ``timeout``, spool the rest, close. Idempotent.

        Sending stops early enough to leave a quarter of ``timeout`` (at most 2 s) for writing what
        is still in memory to the spool; that write is never cut short, because the records in it
        were accepted. It may take the spool past ``spool.max_bytes`` by at most the memory queue.
        Then the sender is closed with what is left of ``timeout``.
        """
        if self._shutdown_task is None:
            self._closing = True
            self._shutdown_task = asyncio.create_task(
                self._shutdown(timeout), name=f"delivery-{self._name}-stop"
            )
        await asyncio.shield(self._shutdown_task)

    @property
    def stats(self) -> DeliveryStats:
        c = self._counters
        return DeliveryStats(
            queued_records=self._mem_records,
            queued_bytes=self._mem_bytes,
            sent=c.sent,
            failed=c.failed,
            retried=c.retried,
            spooled=c.spooled,
            written_ahead=c.written_ahead,
            replayed=c.replayed,
            dead_lettered=c.dead_lettered,
            dropped=dict(c.dropped),
            spool_records=self._spool_records,
            spool_bytes=self._spool_bytes,
            in_flight=self._in_flight,
            circuit_open=self._circuit_open,
            send_duration_count=c.duration_count,
            send_duration_sum=c.duration_sum,
            send_duration_buckets=tuple(_cumulative(c.duration_buckets)),
        )

    # ----------------------------------------------------------------------------------- intake

    def _enqueue(self, records: Sequence[Record], sizes: list[int]) -> None:
        now = self._clock()
        queue = self._queue
        before = len(queue)
        was_short = before < self._batch_records and self._queue_bytes < self._batch_bytes
        seq = self._seq
        for record, size in zip(records, sizes, strict=True):
            queue.append(_Entry(record, size, now, seq))
            seq += 1
        self._seq = seq
        total = sum(sizes)
        self._queue_bytes += total
        self._mem_records += len(records)
        self._mem_bytes += total
        # The loop only cares about the first record (it starts the batch timer) and about a batch
        # becoming full; waking it for every record in between would cost a loop turn per offer.
        if before == 0 or (
            was_short and (len(queue) >= self._batch_records or self._queue_bytes >= self._batch_bytes)
        ):
            self._wake.set()

    def _stage(self, records: Sequence[Record], total: int, *, durable: bool) -> asyncio.Future[None] | None:
        """Hand ``records`` to the spool thread for the tail (group commit)."""
        if self._spool_bytes + total > self._spool_max and self._reject:
            raise HandlerOverloaded(f"{self._name}: spool full ({self._spool_bytes} bytes)")
        seq = self._seq
        self._seq = seq + len(records)
        with self._staged_lock:
            self._staged.extend(zip(range(seq, seq + len(records)), records, strict=True))
            commit = self._commit_future() if durable else None
            submit = not self._write_pending
            self._write_pending = True
        self._spool_records += len(records)
        self._spool_bytes += total
        self._spool_version += 1
        self._counters.spooled += len(records)
        if submit:
            self._submit(self._write_staged, self._staged_written)
        if self._held < self._low_water:
            self._wake.set()
        return commit

    def _stage_ahead(self, records: Sequence[Record], sizes: list[int], total: int) -> asyncio.Future[None]:
        """Write-ahead: commit ``records`` to the spool (held), then queue them in memory for sending.

        The records count in memory and in the spool from now on, so admission stays exact; they
        enter the queue when their transaction has committed, so a row exists for every record
        that can be sent and the backend's acceptance deletes it.
        """
        if self._spool_bytes + total > self._spool_max and self._reject:
            raise HandlerOverloaded(f"{self._name}: spool full ({self._spool_bytes} bytes)")
        now = self._clock()
        seq = self._seq
        self._seq = seq + len(records)
        entries = [
            _Entry(record, size, now, seq + offset)
            for offset, (record, size) in enumerate(zip(records, sizes, strict=True))
        ]
        with self._staged_lock:
            self._staged_ahead.extend(entries)
            commit = self._commit_future()
            submit = not self._write_pending
            self._write_pending = True
        count = len(records)
        self._mem_records += count
        self._mem_bytes += total
        self._spool_records += count
        self._spool_bytes += total
        self._held += count
        self._ahead_pending += count
        self._counters.written_ahead += count
        if submit:
            self._submit(self._write_staged, self._staged_written)
        return commit

    def _commit_future(self) -> asyncio.Future[None]:
        """The future of the next spool write (called with ``_staged_lock`` held)."""
        if self._commit is None:
            loop = self._loop
            if loop is None:
                raise RuntimeError("delivery is not started")
            self._commit = loop.create_future()
        return self._commit

    def _write_staged(self) -> _Written:
        with self._staged_lock:
            batch, self._staged = self._staged, []
            ahead, self._staged_ahead = self._staged_ahead, []
            commit, self._commit = self._commit, None
            self._write_pending = False
        written = _Written(batch, ahead, commit)
        store = self._require_store()
        try:
            written.ids = store.write(batch, [(entry.seq, entry.record) for entry in ahead], time.time())
            written.trimmed = (0, 0) if self._reject else store.trim(self._spool_max)
        except Exception as exc:
            written.error = exc
        return written

    def _staged_written(self, result: _Written | BaseException) -> None:
        if isinstance(result, BaseException):
            # Not raised by the write itself (that is caught on the thread): a bug; say so.
            self._log.error("spool %s write failed: %s", self._data_dir, result)
            return
        rows, size = result.trimmed
        self._spool_records -= rows
        self._spool_bytes -= size
        self._counters.drop("spool_full", rows)
        ahead = result.ahead
        self._ahead_pending -= len(ahead)
        if result.error is not None:
            self._ahead_failed(ahead)
            self._spool_failed(result.error, [record for _, record in result.batch])
        else:
            for entry, row_id in zip(ahead, result.ids, strict=True):
                entry.spool_id = row_id
            if self._degraded or self._circuit_open:
                # The backend failed meanwhile: these wait on disk like every other record now.
                self._counters.spooled += len(ahead)
                self._park_released(ahead)
            else:
                for entry in ahead:
                    self._queue.append(entry)
                    self._queue_bytes += entry.size
        commit = result.commit
        if commit is not None and not commit.done():
            if result.error is None:
                commit.set_result(None)
            else:
                commit.set_exception(HandlerOverloaded(f"{self._name}: spool write failed"))
                # Offers that did not wait for it (a caller that answers nobody) must not make
                # asyncio log an unretrieved exception; the failure is logged above.
                commit.exception()
        self._spool_version += 1
        self._wake.set()

    def _ahead_failed(self, entries: list[_Entry]) -> None:
        """Write-ahead records whose write failed: they stay in memory (already counted there)."""
        if not entries:
            return
        self._held -= len(entries)
        self._spool_records -= len(entries)
        self._spool_bytes -= sum(entry.size for entry in entries)
        for entry in entries:
            self._queue.append(entry)
            self._queue_bytes += entry.size

    def _spool_failed(self, error: BaseException, records: list[Record]) -> None:
        """A spool write failed: stop spooling and keep what it was given in memory if there is room."""
        self._log.error("spool %s failed; continuing in memory only: %s", self._data_dir, error)
        self._spool_ready = False
        self._spool_records -= len(records)
        self._spool_bytes -= sum(r.size() for r in records)
        room = max(0, self._max_records - self._mem_records)
        kept = records[:room]
        self._enqueue(kept, [r.size() for r in kept])
        self._counters.drop("spool_error", len(records) - len(kept))

    # ----------------------------------------------------------------------------------- sending loop

    async def _dispatch(self) -> None:
        while True:
            try:
                await self._dispatch_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug here must not stop delivery for good; records stay where they are.
                self._log.exception("delivery loop failed; continuing")
                await self._sleep(0.1)

    async def _dispatch_once(self) -> None:
        self._wake.clear()
        if self._circuit_open and not self._flushing:
            await self._probe()
            return
        if self._in_flight >= self._options.max_concurrent_sends:
            await self._wake.wait()
            return
        if not self._flushing:
            await self._replay()
        if not self._queue:
            await self._wake.wait()
            return
        if (
            not self._flushing
            and len(self._queue) < self._batch_records
            and self._queue_bytes < self._batch_bytes
        ):
            delay = self._queue[0].arrival + self._batch_timeout - self._clock()
            if delay > 0:
                await self._wait_wake(delay)
                return
        self._launch(self._take_batch(), probe=False)

    def _launch(self, batch: list[_Entry], *, probe: bool) -> asyncio.Task[None]:
        self._in_flight += 1
        task = asyncio.create_task(self._deliver(batch, probe=probe))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _probe(self) -> None:
        """While the circuit is open: one batch at a time, after a growing, jittered pause."""
        if self._in_flight:
            await self._wake.wait()
            return
        await self._sleep(self._probe_backoff.next())
        await self._replay()
        if not self._queue:
            await self._wake.wait()
            return
        if not self._circuit_open:
            return
        await self._launch(self._take_batch(), probe=True)

    async def _wait_wake(self, timeout: float) -> None:
        waiter = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._sleep(timeout))
        try:
            await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()

    def _take_batch(self) -> list[_Entry]:
        queue = self._queue
        batch = [queue.popleft()]
        size = batch[0].size
        while queue and len(batch) < self._batch_records and size + queue[0].size <= self._batch_bytes:
            entry = queue.popleft()
            batch.append(entry)
            size += entry.size
        self._queue_bytes -= size
        return batch

    async def _replay(self) -> None:
        """Top the memory queue up from the spool, oldest first."""
        if not self._spool_open or self._held >= self._low_water:
            return
        if self._spool_records - self._held <= 0 or self._spool_version == self._empty_read_version:
            return
        room_records = self._max_records - self._mem_records
        room_bytes = self._max_bytes - self._mem_bytes
        if room_records <= 0 or room_bytes <= 0:
            return
        version = self._spool_version
        store = self._require_store()
        limit = min(room_records, self._read_chunk)
        limit = min(limit, self._read_chunk - self._held)
        rows = await self._run(lambda: store.read(limit, room_bytes))
        if not rows:
            self._empty_read_version = version
            return
        for row_id, record in rows:
            size = record.size()
            self._queue.append(_Entry(record, size, 0.0, 0, row_id))
            self._queue_bytes += size
            self._mem_records += 1
            self._mem_bytes += size
        self._held += len(rows)
        self._counters.replayed += len(rows)

    # ----------------------------------------------------------------------------------- one batch

    async def _deliver(self, batch: list[_Entry], *, probe: bool) -> None:
        pending = batch
        backoff = _Backoff(self._options, self._rng)
        started = self._clock()
        try:
            while True:
                pending = await self._attempt(pending)
                if not pending:
                    return
                if probe or self._retries_stopped():
                    self._park(pending)
                    pending = []
                    return
                self._mark_degraded()
                await self._persist(pending)
                delay = backoff.next()
                if self._clock() - started + delay > self._max_elapsed:
                    self._park(pending)
                    pending = []
                    self._open_circuit()
                    return
                task = asyncio.current_task()
                if task is not None:
                    self._backing_off.add(task)
                try:
                    await self._sleep(delay)
                finally:
                    if task is not None:
                        self._backing_off.discard(task)
                if self._retries_stopped():
                    self._park(pending)
                    pending = []
                    return
                self._counters.retried += len(pending)
        except asyncio.CancelledError:
            self._requeue_front(pending)
            pending = []
            raise
        finally:
            self._in_flight -= 1
            self._wake.set()

    def _retries_stopped(self) -> bool:
        """Another batch opened the circuit, or shutdown began: failing batches go to the spool."""
        return self._circuit_open or self._closing

    async def _attempt(self, batch: list[_Entry]) -> list[_Entry]:
        """Send once; settle what the backend decided; return the entries to try again."""
        records = [entry.record for entry in batch]
        start = self._clock()
        try:
            result = await asyncio.wait_for(self._sender.send(records), self._send_timeout)
        except PermanentError as exc:
            self._counters.observe(self._clock() - start)
            self._answered(clean=True)
            self._reject_entries([(entry, _reason(exc)) for entry in batch])
            return []
        except TimeoutError:
            self._failed(batch, start, f"timed out after {self._send_timeout:.3g}s", trace=False)
            return batch
        except RetryableError as exc:
            self._failed(batch, start, _reason(exc), trace=False)
            return batch
        except Exception as exc:
            # Not classified by the sender: taken as retryable, with the traceback to fix that.
            self._failed(batch, start, f"{type(exc).__name__}: {exc}", trace=True)
            return batch
        self._counters.observe(self._clock() - start)
        if result is None:
            self._answered(clean=True)
            self._accept(batch)
            return []
        return self._settle(batch, result)

    def _failed(self, batch: list[_Entry], start: float, reason: str, *, trace: bool) -> None:
        self._counters.observe(self._clock() - start)
        self._counters.failed += len(batch)
        # The first failure after a success is news; the retries that follow are not.
        level = logging.DEBUG if self._degraded else logging.WARNING
        self._log.log(level, "send of %d records failed (%s); retrying", len(batch), reason, exc_info=trace)

    def _settle(self, batch: list[_Entry], result: SendResult) -> list[_Entry]:
        rejected: dict[int, str] = {}
        for index, reason in result.rejected:
            if 0 <= index < len(batch):
                rejected.setdefault(index, reason)
        retry = sorted({i for i in result.retry if 0 <= i < len(batch) and i not in rejected})
        retry_set = set(retry)
        self._answered(clean=not retry)
        self._accept([entry for i, entry in enumerate(batch) if i not in rejected and i not in retry_set])
        if rejected:
            self._reject_entries([(batch[i], reason) for i, reason in sorted(rejected.items())])
        again = [batch[i] for i in retry]
        self._counters.failed += len(again)
        return again

    def _answered(self, *, clean: bool) -> None:
        """The backend answered: it is up. ``clean``: nothing in the batch has to be retried."""
        if self._circuit_open:
            self._circuit_open = False
            self._probe_backoff.reset()
            self._log.info("backend answers again; delivery resumed")
            self._wake.set()
        if clean:
            self._degraded = False
            self._answered_once = True

    def _accept(self, entries: list[_Entry]) -> None:
        if not entries:
            return
        self._counters.sent += len(entries)
        self._forget(entries)

    def _reject_entries(self, items: list[tuple[_Entry, str]]) -> None:
        self._forget([entry for entry, _ in items])
        if self._dead_letter is None or self._executor is None:
            self._counters.drop("rejected", len(items))
            self._log.warning(
                "backend refused %d records for good (no data dir for a dead letter): %s",
                len(items),
                items[0][1],
            )
            return
        dead_letter = self._dead_letter
        lines = [(entry.record, reason) for entry, reason in items]
        self._submit(lambda: dead_letter.write(lines, time.time()), self._dead_lettered, len(items))

    def _dead_lettered(self, result: tuple[int, int] | BaseException, count: int) -> None:
        if isinstance(result, BaseException):
            self._log.error("dead letter write failed; %d refused records lost: %s", count, result)
            self._counters.drop("dead_letter_error", count)
            return
        written, dropped = result
        self._counters.dead_lettered += written
        self._counters.drop("dead_letter_full", dropped)

    def _forget(self, entries: list[_Entry]) -> None:
        """``entries`` leave memory for good; their spool rows are deleted."""
        size = 0
        ids: list[int] = []
        spooled_size = 0
        for entry in entries:
            size += entry.size
            if entry.spool_id is not None:
                ids.append(entry.spool_id)
                spooled_size += entry.size
        self._mem_records -= len(entries)
        self._mem_bytes -= size
        if ids:
            self._held -= len(ids)
            self._spool_records -= len(ids)
            self._spool_bytes -= spooled_size
            store = self._require_store()
            self._submit(lambda: store.ack(ids), self._after_spool_op)

    # ----------------------------------------------------------------------------------- failure paths

    def _mark_degraded(self) -> None:
        """First failure after a success: from now on records wait on disk, not in memory."""
        if self._degraded:
            return
        self._degraded = True
        fresh_size = sum(entry.size for entry in self._queue if entry.spool_id is None)
        if self._spool_ready and (not self._reject or self._spool_bytes + fresh_size <= self._spool_max):
            waiting = list(self._queue)
            self._queue.clear()
            self._queue_bytes = 0
            self._to_spool(waiting)

    async def _persist(self, entries: list[_Entry]) -> None:
        """Write a failing batch to the spool (held) so that it survives while it waits to retry."""
        fresh = [entry for entry in entries if entry.spool_id is None]
        if not fresh or not self._spool_ready:
            return
        size = sum(entry.size for entry in fresh)
        if self._reject and self._spool_bytes + size > self._spool_max:
            return
        store = self._require_store()
        items = [(entry.seq, entry.record) for entry in fresh]
        self._spool_records += len(fresh)
        self._spool_bytes += size
        self._held += len(fresh)
        self._counters.spooled += len(fresh)

        def assign(result: list[int] | BaseException) -> None:
            # Runs even when the waiting task was cancelled, so no entry is left without its row.
            if isinstance(result, BaseException):
                self._held -= len(fresh)
                self._spool_records -= len(fresh)
                self._spool_bytes -= size
                self._log.error("spool %s failed; continuing in memory only: %s", self._data_dir, result)
                self._spool_ready = False
                return
            for entry, row_id in zip(fresh, result, strict=True):
                entry.spool_id = row_id

        done = self._submit(lambda: store.insert(items, time.time(), hold=True), assign)
        await asyncio.shield(done)

    def _park(self, entries: list[_Entry]) -> None:
        """A batch that is not going out now: back to the spool (or to the head of the queue).

        Rows read ahead go back too, so the next read starts again from the oldest row.
        """
        self._drop_read_ahead()
        self._park_released(entries)
        fresh = [entry for entry in entries if entry.spool_id is None]
        if fresh:
            size = sum(entry.size for entry in fresh)
            if self._spool_ready and (not self._reject or self._spool_bytes + size <= self._spool_max):
                self._to_spool(fresh)
            else:
                self._requeue_front(fresh)

    def _drop_read_ahead(self) -> None:
        read_ahead = [entry for entry in self._queue if entry.spool_id is not None]
        if not read_ahead:
            return
        self._park_released(read_ahead)
        waiting = [entry for entry in self._queue if entry.spool_id is None]
        self._queue.clear()
        self._queue.extend(waiting)
        self._queue_bytes = sum(entry.size for entry in waiting)

    def _to_spool(self, entries: list[_Entry]) -> None:
        """Move entries from memory to the spool (in their offer-order place); held rows are released."""
        self._park_released(entries)
        fresh = [entry for entry in entries if entry.spool_id is None]
        if not fresh:
            return
        size = sum(entry.size for entry in fresh)
        self._mem_records -= len(fresh)
        self._mem_bytes -= size
        self._spool_records += len(fresh)
        self._spool_bytes += size
        self._spool_version += 1
        self._counters.spooled += len(fresh)
        items = [(entry.seq, entry.record) for entry in fresh]
        store = self._require_store()

        def written(result: list[int] | BaseException) -> None:
            if isinstance(result, BaseException):
                self._spool_failed(result, [record for _, record in items])

        self._submit(lambda: store.insert(items, time.time(), hold=False), written)

    def _park_released(self, entries: list[_Entry]) -> None:
        ids = [entry.spool_id for entry in entries if entry.spool_id is not None]
        if not ids:
            return
        size = sum(entry.size for entry in entries if entry.spool_id is not None)
        self._held -= len(ids)
        self._mem_records -= len(ids)
        self._mem_bytes -= size
        self._spool_version += 1
        store = self._require_store()
        self._submit(lambda: store.release(ids), self._after_spool_op)

    def _requeue_front(self, entries: list[_Entry]) -> None:
        """Entries stay in memory (already counted there), ahead of everything waiting."""
        for entry in reversed(entries):
            entry.arrival = 0.0
            self._queue.appendleft(entry)
            self._queue_bytes += entry.size
        if entries:
            self._wake.set()

    def _open_circuit(self) -> None:
        if self._circuit_open:
            return
        self._circuit_open = True
        self._probe_backoff.reset()
        self._log.warning(
            "backend unreachable for %.3gs; spooling and probing with one batch at a time", self._max_elapsed
        )
        self._wake.set()

    # ----------------------------------------------------------------------------------- spool thread

    def _require_store(self) -> SpoolStore:
        if self._store is None:
            raise RuntimeError("delivery has no data dir")
        return self._store

    def _submit(
        self, fn: Callable[[], _T], done: Callable[..., None], *extra: object
    ) -> asyncio.Future[None]:
        """Run ``fn`` on the spool thread; ``done(result or exception, *extra)`` runs on the loop after it.

        The returned future completes after ``done`` ran. Work runs in submission order.
        """
        loop = self._loop
        executor = self._executor
        if loop is None or executor is None:
            raise RuntimeError("delivery is not started")
        finished: asyncio.Future[None] = loop.create_future()

        def settle(future: Future[_T]) -> None:
            error = future.exception()
            try:
                done(error if error is not None else future.result(), *extra)
            finally:
                if not finished.done():
                    finished.set_result(None)

        def on_thread_done(future: Future[_T]) -> None:
            # A closed loop means the Delivery was abandoned; the work itself is done.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, future)

        executor.submit(fn).add_done_callback(on_thread_done)
        return finished

    async def _run(self, fn: Callable[[], _T]) -> _T:
        loop = self._loop
        if loop is None or self._executor is None:
            raise RuntimeError("delivery is not started")
        return await loop.run_in_executor(self._executor, fn)

    def _after_spool_op(self, result: object) -> None:
        if isinstance(result, BaseException):
            self._log.error("spool %s operation failed: %s", self._data_dir, result)
        self._spool_version += 1
        self._wake.set()

    async def _try_open_spool(self) -> bool:
        lock = self._lock
        store = self._store
        if lock is None or store is None:
            return False
        try:
            if not await self._run(lock.try_acquire):
                return False
            rows, size = await self._run(store.open)
        except Exception:
            # Telemetry keeps flowing without durability rather than not at all.
            await self._run(lock.release)
            self._log.exception("cannot open spool %s; keeping records in memory only", store.path)
            self._spool_wanted = False
            return True
        self._spool_records += rows
        self._spool_bytes += size
        self._spool_ready = True
        self._spool_open = True
        self._spool_version += 1
        if rows:
            self._log.info("spool %s holds %d records from before; replaying them", store.path, rows)
        self._wake.set()
        return True

    async def _wait_for_spool(self) -> None:
        while not await self._try_open_spool():
            await asyncio.sleep(_LOCK_POLL_INTERVAL)
        if self._spool_ready:
            self._log.info("spool %s taken over", self._data_dir)

    # ----------------------------------------------------------------------------------- shutdown

    async def _shutdown(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        reserve = min(max(0.0, timeout) * _SHUTDOWN_RESERVE, _SHUTDOWN_RESERVE_MAX)
        try:
            if self._started:
                await self._flush(deadline - reserve)
                await self._stop_tasks()
            await self._save_memory(deadline)
            await self._close_sender(deadline)
        finally:
            await self._close_spool()
            _metrics.retire(self)

    async def _flush(self, until: float) -> None:
        """Send what memory holds, skipping the batch wait, until it is empty or ``until``."""
        self._flushing = True
        self._wake.set()
        # A batch waiting to retry would only be spooled after its wait: spool it now instead.
        for task in list(self._backing_off):
            task.cancel()
        loop = asyncio.get_running_loop()
        # Only while the backend answers: once a send failed, what is left goes to the spool.
        while (self._queue or self._in_flight) and not self._circuit_open and not self._degraded:
            remaining = until - loop.time()
            if remaining <= 0:
                return
            waiting: set[asyncio.Task[None]] = set(self._tasks)
            if self._dispatcher is not None:
                waiting.add(self._dispatcher)
            await asyncio.wait(waiting, timeout=min(remaining, 0.05), return_when=asyncio.FIRST_COMPLETED)

    async def _stop_tasks(self) -> None:
        tasks: list[asyncio.Task[None]] = [*self._tasks]
        for task in (self._dispatcher, self._lock_waiter):
            if task is not None:
                tasks.append(task)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._executor is not None:
            # Let spool work already handed over finish and settle (ids of persisted batches).
            await self._submit(lambda: None, lambda _: None)

    async def _save_memory(self, deadline: float) -> None:
        waiting = list(self._queue)
        self._queue.clear()
        self._queue_bytes = 0
        # Batches cut off in flight came back to the queue in no particular order.
        fresh = sorted((entry for entry in waiting if entry.spool_id is None), key=lambda entry: entry.seq)
        # Rows already on disk stay there; only memory-only records need writing.
        spooled = [entry for entry in waiting if entry.spool_id is not None]
        self._mem_records -= len(spooled)
        self._mem_bytes -= sum(entry.size for entry in spooled)
        self._held -= len(spooled)
        if not fresh:
            return
        if self._spool_wanted and not self._spool_ready:
            await self._take_spool_before(deadline)
        if self._spool_ready:
            size = sum(entry.size for entry in fresh)
            store = self._require_store()
            items = [(entry.seq, entry.record) for entry in fresh]
            try:
                now = time.time()
                await self._run(lambda: store.insert(items, now, hold=False))
            except Exception as exc:
                self._log.error("could not spool %d records at shutdown; they are lost: %s", len(fresh), exc)
                self._counters.drop("shutdown", len(fresh))
            else:
                self._spool_records += len(fresh)
                self._spool_bytes += size
                self._counters.spooled += len(fresh)
        else:
            self._log.warning("shutdown: %d records could not be sent and there is no spool", len(fresh))
            self._counters.drop("shutdown", len(fresh))
        self._mem_records -= len(fresh)
        self._mem_bytes -= sum(entry.size for entry in fresh)

    async def _take_spool_before(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._loop = loop
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"delivery-{self._name}")
        while not await self._try_open_spool():
            if loop.time() >= deadline:
                return
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

    async def _close_sender(self, deadline: float) -> None:
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            await asyncio.wait_for(self._sender.close(), max(remaining, 0.001))
        except TimeoutError:
            self._log.warning("sender did not close within the shutdown timeout")
        except Exception:
            self._log.exception("sender failed to close")

    async def _close_spool(self) -> None:
        executor = self._executor
        if executor is None:
            return
        store = self._store
        lock = self._lock

        def close() -> None:
            try:
                if store is not None:
                    store.close()
            finally:
                if lock is not None:
                    lock.release()

        try:
            await self._run(close)
        except Exception:
            self._log.exception("closing spool %s failed", self._data_dir)
        self._spool_ready = False
        self._spool_open = False
        executor.shutdown(wait=False)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


def _cumulative(counts: list[int]) -> list[int]:
    out: list[int] = []
    running = 0
    for count in counts:
        running += count
        out.append(running)
    return out
