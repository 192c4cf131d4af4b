"""Where a batch's records go after a send: gone (sent or dead-lettered), to the spool, or back."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from mixer.delivery._circuit import Circuit
from mixer.delivery._deadletter import DeadLetterFile
from mixer.delivery._queue import Entry, RecordQueue
from mixer.delivery._spooler import Spooler
from mixer.delivery._stats import Counters
from mixer.delivery._types import SendResult

__all__ = ["Settler"]


class Settler:
    """Settles the outcome of send attempts, and moves batches that are not going out now."""

    __slots__ = ("_circuit", "_counters", "_dead_letter", "_log", "_queue", "_spooler")

    def __init__(
        self,
        name: str,
        dead_letter_max_bytes: int,
        data_dir: Path | None,
        queue: RecordQueue,
        spooler: Spooler,
        circuit: Circuit,
        counters: Counters,
        logger: logging.Logger,
    ) -> None:
        self._queue = queue
        self._spooler = spooler
        self._circuit = circuit
        self._counters = counters
        self._log = logger
        self._dead_letter = (
            DeadLetterFile(data_dir, name, dead_letter_max_bytes) if data_dir is not None else None
        )

    def settle(self, batch: list[Entry], result: SendResult) -> list[Entry]:
        """A batch accepted in part: returns the entries to try again."""
        rejected: dict[int, str] = {}
        for index, reason in result.rejected:
            if 0 <= index < len(batch):
                rejected.setdefault(index, reason)
        retry = sorted({i for i in result.retry if 0 <= i < len(batch) and i not in rejected})
        retry_set = set(retry)
        self._circuit.answered(clean=not retry)
        self.accept([entry for i, entry in enumerate(batch) if i not in rejected and i not in retry_set])
        if rejected:
            self.reject([(batch[i], reason) for i, reason in sorted(rejected.items())])
        again = [batch[i] for i in retry]
        self._counters.failed += len(again)
        return again

    def accept(self, entries: list[Entry]) -> None:
        if not entries:
            return
        self._counters.sent += len(entries)
        self._forget(entries)

    def reject(self, items: list[tuple[Entry, str]]) -> None:
        """The backend refused these for good: to the dead letter, or dropped without one."""
        self._forget([entry for entry, _ in items])
        thread = self._spooler.thread
        if self._dead_letter is None or not thread.started:
            self._counters.drop("rejected", len(items))
            self._log.warning(
                "backend refused %d records for good (no data dir for a dead letter): %s",
                len(items),
                items[0][1],
            )
            return
        dead_letter = self._dead_letter
        lines = [(entry.record, reason) for entry, reason in items]
        thread.submit(lambda: dead_letter.write(lines, time.time()), self._dead_lettered, len(items))

    def _dead_lettered(self, result: tuple[int, int] | BaseException, count: int) -> None:
        if isinstance(result, BaseException):
            self._log.error("dead letter write failed; %d refused records lost: %s", count, result)
            self._counters.drop("dead_letter_error", count)
            return
        written, dropped = result
        self._counters.dead_lettered += written
        self._counters.drop("dead_letter_full", dropped)

    def _forget(self, entries: list[Entry]) -> None:
        """``entries`` leave memory for good; their spool rows are deleted."""
        size = 0
        ids: list[int] = []
        spooled_size = 0
        for entry in entries:
            size += entry.size
            if entry.spool_id is not None:
                ids.append(entry.spool_id)
                spooled_size += entry.size
        self._queue.release(len(entries), size)
        if ids:
            self._spooler.ack(ids, spooled_size)

    def mark_degraded(self) -> None:
        """First failure after a success: from now on records wait on disk, not in memory."""
        if self._circuit.degraded:
            return
        self._circuit.degraded = True
        queue = self._queue
        spooler = self._spooler
        fresh_size = sum(entry.size for entry in queue.entries if entry.spool_id is None)
        if spooler.ready and spooler.has_room(fresh_size):
            spooler.to_spool(queue.take_all())

    def park(self, entries: list[Entry]) -> None:
        """A batch that is not going out now: back to the spool (or to the head of the queue).

        Rows read ahead go back too, so the next read starts again from the oldest row.
        """
        spooler = self._spooler
        spooler.release(self._queue.take_read_ahead())
        spooler.release(entries)
        fresh = [entry for entry in entries if entry.spool_id is None]
        if fresh:
            size = sum(entry.size for entry in fresh)
            if spooler.ready and spooler.has_room(size):
                spooler.to_spool(fresh)
            else:
                self._queue.requeue_front(fresh)
