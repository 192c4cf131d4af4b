"""Shutdown and drain: send what memory holds while there is time, spool the rest, close."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from mixer.delivery._circuit import Circuit
from mixer.delivery._queue import RecordQueue
from mixer.delivery._sender import Sender
from mixer.delivery._spooler import Spooler
from mixer.delivery._stats import Counters
from mixer.delivery._types import BatchSender

__all__ = ["Shutdown"]

#: Share of the shutdown timeout kept for writing what is left to the spool and closing.
_SHUTDOWN_RESERVE: Final = 0.25
_SHUTDOWN_RESERVE_MAX: Final = 2.0


class Shutdown:
    """One Delivery's shutdown, run once (see :meth:`mixer.delivery.Delivery.shutdown`)."""

    __slots__ = ("_backend", "_circuit", "_counters", "_log", "_queue", "_sender", "_spooler", "_wake")

    def __init__(
        self,
        backend: BatchSender,
        *,
        queue: RecordQueue,
        spooler: Spooler,
        circuit: Circuit,
        sender: Sender,
        counters: Counters,
        logger: logging.Logger,
        wake: asyncio.Event,
    ) -> None:
        self._backend = backend
        self._wake = wake
        self._queue = queue
        self._spooler = spooler
        self._circuit = circuit
        self._sender = sender
        self._counters = counters
        self._log = logger

    async def run(self, timeout: float, *, started: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        reserve = min(max(0.0, timeout) * _SHUTDOWN_RESERVE, _SHUTDOWN_RESERVE_MAX)
        try:
            if started:
                await self._flush(deadline - reserve)
                await self._stop_tasks()
            await self._save_memory(deadline)
            await self._close_sender(deadline)
        finally:
            await self._spooler.close()

    async def _flush(self, until: float) -> None:
        """Send what memory holds, skipping the batch wait, until it is empty or ``until``."""
        sender = self._sender
        sender.flushing = True
        self._wake.set()
        # A batch waiting to retry would only be spooled after its wait: spool it now instead.
        for task in list(sender.backing_off):
            task.cancel()
        loop = asyncio.get_running_loop()
        # Only while the backend answers: once a send failed, what is left goes to the spool.
        while (
            (self._queue.entries or sender.in_flight)
            and not self._circuit.is_open
            and not self._circuit.degraded
        ):
            remaining = until - loop.time()
            if remaining <= 0:
                return
            waiting: set[asyncio.Task[None]] = set(sender.tasks)
            if sender.dispatcher is not None:
                waiting.add(sender.dispatcher)
            await asyncio.wait(waiting, timeout=min(remaining, 0.05), return_when=asyncio.FIRST_COMPLETED)

    async def _stop_tasks(self) -> None:
        tasks: list[asyncio.Task[None]] = [*self._sender.tasks]
        for task in (self._sender.dispatcher, self._spooler.lock_waiter):
            if task is not None:
                tasks.append(task)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        thread = self._spooler.thread
        if thread.started:
            # Let spool work already handed over finish and settle (ids of persisted batches).
            await thread.submit(lambda: None, lambda _: None)

    async def _save_memory(self, deadline: float) -> None:
        queue = self._queue
        spooler = self._spooler
        waiting = queue.take_all()
        # Batches cut off in flight came back to the queue in no particular order.
        fresh = sorted((entry for entry in waiting if entry.spool_id is None), key=lambda entry: entry.seq)
        # Rows already on disk stay there; only memory-only records need writing.
        spooled = [entry for entry in waiting if entry.spool_id is not None]
        queue.release(len(spooled), sum(entry.size for entry in spooled))
        spooler.held -= len(spooled)
        if not fresh:
            return
        if spooler.wanted and not spooler.ready:
            await spooler.take_before(deadline)
        if spooler.ready:
            size = sum(entry.size for entry in fresh)
            store = spooler.require_store()
            items = [(entry.seq, entry.record) for entry in fresh]
            try:
                now = time.time()
                await spooler.thread.run(lambda: store.insert(items, now, hold=False))
            except Exception as exc:
                self._log.error("could not spool %d records at shutdown; they are lost: %s", len(fresh), exc)
                self._counters.drop("shutdown", len(fresh))
            else:
                spooler.records += len(fresh)
                spooler.bytes += size
                self._counters.spooled += len(fresh)
        else:
            self._log.warning("shutdown: %d records could not be sent and there is no spool", len(fresh))
            self._counters.drop("shutdown", len(fresh))
        queue.release(len(fresh), sum(entry.size for entry in fresh))

    async def _close_sender(self, deadline: float) -> None:
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            await asyncio.wait_for(self._backend.close(), max(remaining, 0.001))
        except TimeoutError:
            self._log.warning("sender did not close within the shutdown timeout")
        except Exception:
            self._log.exception("sender failed to close")
