"""Group commit: records offers hand to the spool, written together in the thread's next transaction.

Offers that go to disk do not wait for the write: they add their records to the staged list, and
the first one since the last write submits it. ``ahead`` records are written ahead (held rows)
while also kept in memory for sending, entering the queue once committed; the offers waiting for
a transaction share one future.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence

from mixer.adapter import HandlerOverloaded
from mixer.delivery._circuit import Circuit
from mixer.delivery._queue import Entry, RecordQueue
from mixer.delivery._spooler import Spooler
from mixer.delivery._stats import Counters
from mixer.delivery._types import Record

__all__ = ["SpoolWriter"]


class _Written:
    """One group-commit write, from the spool thread back to the loop."""

    __slots__ = ("ahead", "batch", "commit", "error", "ids", "trimmed")

    def __init__(
        self, batch: list[tuple[int, Record]], ahead: list[Entry], commit: asyncio.Future[None] | None
    ) -> None:
        self.batch = batch
        self.ahead = ahead
        self.commit = commit
        self.ids: list[int] = []
        self.trimmed = (0, 0)
        self.error: BaseException | None = None


class SpoolWriter:
    """Stages offered records for the spool thread and settles each write back on the loop."""

    __slots__ = (
        "_circuit",
        "_clock",
        "_commit",
        "_counters",
        "_log",
        "_name",
        "_queue",
        "_spooler",
        "_staged",
        "_staged_ahead",
        "_staged_lock",
        "_wake",
        "_write_pending",
    )

    def __init__(
        self,
        name: str,
        spooler: Spooler,
        queue: RecordQueue,
        circuit: Circuit,
        counters: Counters,
        logger: logging.Logger,
        wake: asyncio.Event,
        clock: Callable[[], float],
    ) -> None:
        self._name = name
        self._spooler = spooler
        self._queue = queue
        self._circuit = circuit
        self._counters = counters
        self._log = logger
        self._wake = wake
        self._clock = clock
        # What offers handed to the spool thread since its last write, all written in its next
        # transaction; ``_commit`` is the future the offers waiting for that transaction share.
        self._staged: list[tuple[int, Record]] = []
        self._staged_ahead: list[Entry] = []
        self._commit: asyncio.Future[None] | None = None
        self._staged_lock = threading.Lock()
        self._write_pending = False

    def _check_room(self, total: int) -> None:
        spooler = self._spooler
        if spooler.bytes + total > spooler.max_bytes and spooler.reject:
            raise HandlerOverloaded(f"{self._name}: spool full ({spooler.bytes} bytes)")

    def stage(self, records: Sequence[Record], total: int, *, durable: bool) -> asyncio.Future[None] | None:
        """Hand ``records`` to the spool thread for the tail (group commit)."""
        self._check_room(total)
        seq = self._queue.number(len(records))
        with self._staged_lock:
            self._staged.extend(zip(range(seq, seq + len(records)), records, strict=True))
            commit = self._commit_future() if durable else None
            submit = not self._write_pending
            self._write_pending = True
        spooler = self._spooler
        spooler.records += len(records)
        spooler.bytes += total
        spooler.version += 1
        self._counters.spooled += len(records)
        if submit:
            spooler.thread.submit(self._write, self._written)
        if spooler.held < spooler.low_water:
            self._wake.set()
        return commit

    def stage_ahead(self, records: Sequence[Record], sizes: list[int], total: int) -> asyncio.Future[None]:
        """Write-ahead: commit ``records`` to the spool (held), then queue them in memory for sending.

        The records count in memory and in the spool from now on, so admission stays exact; they
        enter the queue when their transaction has committed, so a row exists for every record
        that can be sent and the backend's acceptance deletes it.
        """
        self._check_room(total)
        now = self._clock()
        seq = self._queue.number(len(records))
        entries = [
            Entry(record, size, now, seq + offset)
            for offset, (record, size) in enumerate(zip(records, sizes, strict=True))
        ]
        with self._staged_lock:
            self._staged_ahead.extend(entries)
            commit = self._commit_future()
            submit = not self._write_pending
            self._write_pending = True
        count = len(records)
        spooler = self._spooler
        self._queue.hold(count, total)
        spooler.records += count
        spooler.bytes += total
        spooler.held += count
        spooler.ahead_pending += count
        self._counters.written_ahead += count
        if submit:
            spooler.thread.submit(self._write, self._written)
        return commit

    def _commit_future(self) -> asyncio.Future[None]:
        """The future of the next spool write (called with ``_staged_lock`` held)."""
        if self._commit is None:
            self._commit = self._spooler.thread.create_future()
        return self._commit

    def _write(self) -> _Written:
        """On the spool thread: one transaction for everything staged."""
        with self._staged_lock:
            batch, self._staged = self._staged, []
            ahead, self._staged_ahead = self._staged_ahead, []
            commit, self._commit = self._commit, None
            self._write_pending = False
        written = _Written(batch, ahead, commit)
        spooler = self._spooler
        store = spooler.require_store()
        try:
            written.ids = store.write(batch, [(entry.seq, entry.record) for entry in ahead], time.time())
            written.trimmed = (0, 0) if spooler.reject else store.trim(spooler.max_bytes)
        except Exception as exc:
            written.error = exc
        return written

    def _written(self, result: _Written | BaseException) -> None:
        spooler = self._spooler
        if isinstance(result, BaseException):
            # Not raised by the write itself (that is caught on the thread): a bug; say so.
            self._log.error("spool %s write failed: %s", spooler.data_dir, result)
            return
        rows, size = result.trimmed
        spooler.records -= rows
        spooler.bytes -= size
        self._counters.drop("spool_full", rows)
        ahead = result.ahead
        spooler.ahead_pending -= len(ahead)
        if result.error is not None:
            self._ahead_failed(ahead)
            spooler.failed(result.error, [record for _, record in result.batch])
        else:
            for entry, row_id in zip(ahead, result.ids, strict=True):
                entry.spool_id = row_id
            if self._circuit.degraded or self._circuit.is_open:
                # The backend failed meanwhile: these wait on disk like every other record now.
                self._counters.spooled += len(ahead)
                spooler.release(ahead)
            else:
                for entry in ahead:
                    self._queue.put(entry)
        commit = result.commit
        if commit is not None and not commit.done():
            if result.error is None:
                commit.set_result(None)
            else:
                commit.set_exception(HandlerOverloaded(f"{self._name}: spool write failed"))
                # Offers that did not wait for it (a caller that answers nobody) must not make
                # asyncio log an unretrieved exception; the failure is logged above.
                commit.exception()
        spooler.version += 1
        self._wake.set()

    def _ahead_failed(self, entries: list[Entry]) -> None:
        """Write-ahead records whose write failed: they stay in memory (already counted there)."""
        if not entries:
            return
        spooler = self._spooler
        spooler.held -= len(entries)
        spooler.records -= len(entries)
        spooler.bytes -= sum(entry.size for entry in entries)
        for entry in entries:
            self._queue.put(entry)
