"""Admission and the memory queue: which records a Delivery accepts, and where they wait in memory.

:class:`RecordQueue` is the bounded memory buffer: the waiting deque, and the counts of every
record held in memory (waiting or in a batch being sent), which the bounds apply to.
:class:`Admission` decides for each offer: memory, the spool, write-ahead, refusal or dropping
the oldest, and counts what it drops.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

from mixer.delivery._options import DeliveryOptions
from mixer.delivery._types import Record

__all__ = ["Entry", "RecordQueue"]


class Entry:
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


class RecordQueue:
    """Records in memory: ``entries`` wait to be sent (``queue_bytes`` of them), and ``mem_records``
    and ``mem_bytes`` count everything held in memory, in flight too, which the bounds apply to."""

    __slots__ = (
        "_clock",
        "_wake",
        "batch_bytes",
        "batch_records",
        "entries",
        "max_bytes",
        "max_records",
        "mem_bytes",
        "mem_records",
        "queue_bytes",
        "reject",
        "seq",
    )

    def __init__(self, options: DeliveryOptions, clock: Callable[[], float], wake: asyncio.Event) -> None:
        self._clock = clock
        self._wake = wake
        self.max_records = options.queue_max_records
        self.max_bytes = options.queue_max_bytes
        self.batch_records = options.batch_max_records
        self.batch_bytes = options.batch_max_bytes
        self.reject = options.spool.full_policy == "reject"
        self.entries: deque[Entry] = deque()
        self.seq = 1
        self.queue_bytes = 0
        self.mem_records = 0
        self.mem_bytes = 0

    def fits(self, count: int, size: int) -> bool:
        return self.mem_records + count <= self.max_records and self.mem_bytes + size <= self.max_bytes

    def number(self, count: int) -> int:
        """Take ``count`` offer-order numbers; returns the first."""
        seq = self.seq
        self.seq = seq + count
        return seq

    def hold(self, count: int, size: int) -> None:
        """``count`` records of ``size`` bytes now count in memory."""
        self.mem_records += count
        self.mem_bytes += size

    def release(self, count: int, size: int) -> None:
        """``count`` records of ``size`` bytes left memory."""
        self.mem_records -= count
        self.mem_bytes -= size

    def enqueue(self, records: Sequence[Record], sizes: list[int]) -> None:
        now = self._clock()
        queue = self.entries
        before = len(queue)
        was_short = before < self.batch_records and self.queue_bytes < self.batch_bytes
        seq = self.seq
        for record, size in zip(records, sizes, strict=True):
            queue.append(Entry(record, size, now, seq))
            seq += 1
        self.seq = seq
        total = sum(sizes)
        self.queue_bytes += total
        self.mem_records += len(records)
        self.mem_bytes += total
        # The loop only cares about the first record (it starts the batch timer) and about a batch
        # becoming full; waking it for every record in between would cost a loop turn per offer.
        if before == 0 or (
            was_short and (len(queue) >= self.batch_records or self.queue_bytes >= self.batch_bytes)
        ):
            self._wake.set()

    def drop_oldest(self) -> int:
        """Drop waiting records, oldest first, until memory is within its bounds; returns how many."""
        dropped = 0
        while self.entries and (self.mem_records > self.max_records or self.mem_bytes > self.max_bytes):
            entry = self.entries.popleft()
            self.queue_bytes -= entry.size
            self.mem_records -= 1
            self.mem_bytes -= entry.size
            dropped += 1
        return dropped

    def put(self, entry: Entry) -> None:
        """``entry`` (already counted in memory) waits at the tail."""
        self.entries.append(entry)
        self.queue_bytes += entry.size

    def requeue_front(self, entries: list[Entry]) -> None:
        """Entries stay in memory (already counted there), ahead of everything waiting."""
        for entry in reversed(entries):
            entry.arrival = 0.0
            self.entries.appendleft(entry)
            self.queue_bytes += entry.size
        if entries:
            self._wake.set()

    def take_batch(self) -> list[Entry]:
        queue = self.entries
        batch = [queue.popleft()]
        size = batch[0].size
        while queue and len(batch) < self.batch_records and size + queue[0].size <= self.batch_bytes:
            entry = queue.popleft()
            batch.append(entry)
            size += entry.size
        self.queue_bytes -= size
        return batch

    def take_all(self) -> list[Entry]:
        """Everything waiting, in queue order; they still count in memory."""
        waiting = list(self.entries)
        self.entries.clear()
        self.queue_bytes = 0
        return waiting

    def take_read_ahead(self) -> list[Entry]:
        """The waiting entries read back from the spool, out of the queue; the rest keep their order."""
        read_ahead = [entry for entry in self.entries if entry.spool_id is not None]
        if read_ahead:
            waiting = [entry for entry in self.entries if entry.spool_id is None]
            self.entries.clear()
            self.entries.extend(waiting)
            self.queue_bytes = sum(entry.size for entry in waiting)
        return read_ahead
