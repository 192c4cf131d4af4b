"""The spool side of a Delivery: its thread, its bookkeeping, moving records to disk and replaying them.

The spool and dead-letter I/O run on one dedicated thread per Delivery (:class:`SpoolThread`), so
SQLite never blocks the loop and its calls never interleave. The counts that decide admission
(``records``, ``bytes``, ``held``) are kept on the loop, updated when work is handed to the
thread, so an offer decides without waiting. A row read back for sending is *held* (in memory as
well) until it is acknowledged (deleted) or released (read again later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from mixer.delivery._options import DeliveryOptions
from mixer.delivery._queue import Entry, RecordQueue
from mixer.delivery._spool import SPOOL_FILE, SpoolLock, SpoolStore
from mixer.delivery._stats import Counters
from mixer.delivery._types import Record

__all__ = ["SpoolThread", "Spooler"]

_T = TypeVar("_T")

#: How often a Delivery whose spool another owner holds tries to take it over (seconds, real time).
_LOCK_POLL_INTERVAL: Final = 0.25


class SpoolThread:
    """Runs spool and dead-letter work on one thread, in submission order, and reports on the loop."""

    __slots__ = ("_executor", "_loop", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def started(self) -> bool:
        return self._executor is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._executor is None:
            self._loop = loop
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"delivery-{self._name}")

    def create_future(self) -> asyncio.Future[None]:
        if self._loop is None:
            raise RuntimeError("delivery is not started")
        return self._loop.create_future()

    def submit(self, fn: Callable[[], _T], done: Callable[..., None], *extra: object) -> asyncio.Future[None]:
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

    async def run(self, fn: Callable[[], _T]) -> _T:
        loop = self._loop
        if loop is None or self._executor is None:
            raise RuntimeError("delivery is not started")
        return await loop.run_in_executor(self._executor, fn)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)


class Spooler:
    """The spool's counts and the moves between memory and disk (writes of offers: ``SpoolWriter``).

    ``records`` and ``bytes`` count what the spool holds (``max_bytes`` bounds it), ``held`` the
    rows read back and in memory too, ``ahead_pending`` the write-ahead records not yet committed.
    ``version`` changes whenever rows may have become readable, so replay skips reads that would
    find nothing.
    """

    __slots__ = (
        "_counters",
        "_empty_read_version",
        "_lock",
        "_log",
        "_queue",
        "_read_chunk",
        "_wake",
        "ahead_pending",
        "bytes",
        "data_dir",
        "held",
        "lock_waiter",
        "low_water",
        "max_bytes",
        "open_for_reading",
        "ready",
        "records",
        "reject",
        "store",
        "thread",
        "version",
        "wanted",
    )

    def __init__(
        self,
        name: str,
        options: DeliveryOptions,
        data_dir: Path | None,
        logger: logging.Logger,
        queue: RecordQueue,
        counters: Counters,
        wake: asyncio.Event,
    ) -> None:
        self.data_dir = data_dir
        self._log = logger
        self._queue = queue
        self._counters = counters
        self._wake = wake
        self.max_bytes = options.spool.max_bytes
        self.reject = options.spool.full_policy == "reject"
        # Replay reads when fewer spooled records than this are in memory, so that a backlog keeps
        # every send slot busy and moves on even while new records keep memory busy too.
        self.low_water = options.batch_max_records * options.max_concurrent_sends
        self._read_chunk = max(self.low_water * 2, 1)
        self.wanted = data_dir is not None and options.spool.enabled
        self.ready = False
        # Stays set when writes fail (a full disk), so rows already committed are still replayed
        # and acknowledged; ``ready`` is about taking new rows.
        self.open_for_reading = False
        self.records = 0
        self.bytes = 0
        self.held = 0
        self.ahead_pending = 0
        self.version = 0
        self._empty_read_version = -1
        self.store = (
            SpoolStore(data_dir / SPOOL_FILE, synchronous=options.spool.synchronous)
            if data_dir is not None
            else None
        )
        self._lock = SpoolLock(data_dir) if data_dir is not None else None
        self.thread = SpoolThread(name)
        self.lock_waiter: asyncio.Task[None] | None = None

    def has_room(self, size: int) -> bool:
        """Whether ``size`` more bytes may go to the spool (``drop_oldest`` always makes room)."""
        return not self.reject or self.bytes + size <= self.max_bytes

    def require_store(self) -> SpoolStore:
        if self.store is None:
            raise RuntimeError("delivery has no data dir")
        return self.store

    async def start(self, name: str) -> None:
        """Start the thread and open the spool, or wait in the background for its owner to let go."""
        if self.data_dir is not None:
            self.thread.start(asyncio.get_running_loop())
        if self.wanted and not await self.try_open():
            self._log.warning(
                "spool %s is in use by another handler or process; records stay in memory until it is free",
                self.data_dir,
            )
            self.lock_waiter = asyncio.create_task(self._wait_for_spool(), name=f"delivery-{name}-lock")

    async def try_open(self) -> bool:
        lock = self._lock
        store = self.store
        if lock is None or store is None:
            return False
        try:
            if not await self.thread.run(lock.try_acquire):
                return False
            rows, size = await self.thread.run(store.open)
        except Exception:
            # Telemetry keeps flowing without durability rather than not at all.
            await self.thread.run(lock.release)
            self._log.exception("cannot open spool %s; keeping records in memory only", store.path)
            self.wanted = False
            return True
        self.records += rows
        self.bytes += size
        self.ready = True
        self.open_for_reading = True
        self.version += 1
        if rows:
            self._log.info("spool %s holds %d records from before; replaying them", store.path, rows)
        self._wake.set()
        return True

    async def _wait_for_spool(self) -> None:
        while not await self.try_open():
            await asyncio.sleep(_LOCK_POLL_INTERVAL)
        if self.ready:
            self._log.info("spool %s taken over", self.data_dir)

    async def take_before(self, deadline: float) -> None:
        """Open the spool at shutdown if it frees up before ``deadline`` (loop time)."""
        loop = asyncio.get_running_loop()
        self.thread.start(loop)
        while not await self.try_open():
            if loop.time() >= deadline:
                return
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

    def after_op(self, result: object) -> None:
        if isinstance(result, BaseException):
            self._log.error("spool %s operation failed: %s", self.data_dir, result)
        self.version += 1
        self._wake.set()

    def failed(self, error: BaseException, records: list[Record]) -> None:
        """A spool write failed: stop spooling and keep what it was given in memory if there is room."""
        self._log.error("spool %s failed; continuing in memory only: %s", self.data_dir, error)
        self.ready = False
        self.records -= len(records)
        self.bytes -= sum(r.size() for r in records)
        queue = self._queue
        room = max(0, queue.max_records - queue.mem_records)
        kept = records[:room]
        queue.enqueue(kept, [r.size() for r in kept])
        self._counters.drop("spool_error", len(records) - len(kept))

    async def replay(self) -> None:
        """Top the memory queue up from the spool, oldest first."""
        if not self.open_for_reading or self.held >= self.low_water:
            return
        if self.records - self.held <= 0 or self.version == self._empty_read_version:
            return
        queue = self._queue
        room_records = queue.max_records - queue.mem_records
        room_bytes = queue.max_bytes - queue.mem_bytes
        if room_records <= 0 or room_bytes <= 0:
            return
        version = self.version
        store = self.require_store()
        limit = min(room_records, self._read_chunk)
        limit = min(limit, self._read_chunk - self.held)
        rows = await self.thread.run(lambda: store.read(limit, room_bytes))
        if not rows:
            self._empty_read_version = version
            return
        total = 0
        for row_id, record in rows:
            size = record.size()
            queue.put(Entry(record, size, 0.0, 0, row_id))
            total += size
        queue.hold(len(rows), total)
        self.held += len(rows)
        self._counters.replayed += len(rows)

    async def persist(self, entries: list[Entry]) -> None:
        """Write a failing batch to the spool (held) so that it survives while it waits to retry."""
        fresh = [entry for entry in entries if entry.spool_id is None]
        if not fresh or not self.ready:
            return
        size = sum(entry.size for entry in fresh)
        if not self.has_room(size):
            return
        store = self.require_store()
        items = [(entry.seq, entry.record) for entry in fresh]
        self.records += len(fresh)
        self.bytes += size
        self.held += len(fresh)
        self._counters.spooled += len(fresh)

        def assign(result: list[int] | BaseException) -> None:
            # Runs even when the waiting task was cancelled, so no entry is left without its row.
            if isinstance(result, BaseException):
                self.held -= len(fresh)
                self.records -= len(fresh)
                self.bytes -= size
                self._log.error("spool %s failed; continuing in memory only: %s", self.data_dir, result)
                self.ready = False
                return
            for entry, row_id in zip(fresh, result, strict=True):
                entry.spool_id = row_id

        done = self.thread.submit(lambda: store.insert(items, time.time(), hold=True), assign)
        await asyncio.shield(done)

    def to_spool(self, entries: list[Entry]) -> None:
        """Move entries from memory to the spool (in their offer-order place); held rows are released."""
        self.release(entries)
        fresh = [entry for entry in entries if entry.spool_id is None]
        if not fresh:
            return
        size = sum(entry.size for entry in fresh)
        self._queue.release(len(fresh), size)
        self.records += len(fresh)
        self.bytes += size
        self.version += 1
        self._counters.spooled += len(fresh)
        items = [(entry.seq, entry.record) for entry in fresh]
        store = self.require_store()

        def written(result: list[int] | BaseException) -> None:
            if isinstance(result, BaseException):
                self.failed(result, [record for _, record in items])

        self.thread.submit(lambda: store.insert(items, time.time(), hold=False), written)

    def release(self, entries: list[Entry]) -> None:
        """The held rows among ``entries`` leave memory and may be read again."""
        ids = [entry.spool_id for entry in entries if entry.spool_id is not None]
        if not ids:
            return
        size = sum(entry.size for entry in entries if entry.spool_id is not None)
        self.held -= len(ids)
        self._queue.release(len(ids), size)
        self.version += 1
        store = self.require_store()
        self.thread.submit(lambda: store.release(ids), self.after_op)

    def ack(self, ids: list[int], size: int) -> None:
        """Held rows ``ids`` (``size`` bytes) were dealt with for good: delete them."""
        self.held -= len(ids)
        self.records -= len(ids)
        self.bytes -= size
        store = self.require_store()
        self.thread.submit(lambda: store.ack(ids), self.after_op)

    async def close(self) -> None:
        if not self.thread.started:
            return
        store = self.store
        lock = self._lock

        def close() -> None:
            try:
                if store is not None:
                    store.close()
            finally:
                if lock is not None:
                    lock.release()

        try:
            await self.thread.run(close)
        except Exception:
            self._log.exception("closing spool %s failed", self.data_dir)
        self.ready = False
        self.open_for_reading = False
        self.thread.shutdown()
