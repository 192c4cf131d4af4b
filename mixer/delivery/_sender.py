"""The sending loop: batches off the queue, concurrent sends, retries with backoff, probes."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from mixer.delivery._backoff import Backoff
from mixer.delivery._circuit import Circuit
from mixer.delivery._options import DeliveryOptions
from mixer.delivery._queue import Entry, RecordQueue
from mixer.delivery._settle import Settler
from mixer.delivery._spooler import Spooler
from mixer.delivery._stats import Counters
from mixer.delivery._types import BatchSender, PermanentError, RetryableError

__all__ = ["Sender"]


class Sender:
    """Takes batches off the queue and sends them, at most ``max_concurrent_sends`` at a time.

    ``closing`` (shutdown began) and ``flushing`` (shutdown sends what memory holds, without the
    batch wait) are set by the shutdown; ``tasks`` are the batches in flight and ``backing_off``
    those of them waiting to retry.
    """

    __slots__ = (
        "_backend",
        "_batch_timeout",
        "_circuit",
        "_clock",
        "_counters",
        "_log",
        "_max_concurrent",
        "_max_elapsed",
        "_name",
        "_options",
        "_queue",
        "_rng",
        "_send_timeout",
        "_settler",
        "_sleep",
        "_spooler",
        "_wake",
        "backing_off",
        "closing",
        "dispatcher",
        "flushing",
        "in_flight",
        "tasks",
    )

    def __init__(
        self,
        name: str,
        backend: BatchSender,
        options: DeliveryOptions,
        *,
        queue: RecordQueue,
        spooler: Spooler,
        circuit: Circuit,
        settler: Settler,
        counters: Counters,
        logger: logging.Logger,
        wake: asyncio.Event,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        rng: random.Random,
    ) -> None:
        self._name = name
        self._backend = backend
        self._options = options
        self._queue = queue
        self._spooler = spooler
        self._circuit = circuit
        self._settler = settler
        self._counters = counters
        self._log = logger
        self._wake = wake
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._max_concurrent = options.max_concurrent_sends
        self._batch_timeout = options.batch_timeout.total_seconds()
        self._send_timeout = options.send_timeout.total_seconds()
        self._max_elapsed = options.retry_max_elapsed.total_seconds()
        self.in_flight = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.backing_off: set[asyncio.Task[None]] = set()
        self.dispatcher: asyncio.Task[None] | None = None
        self.closing = False
        self.flushing = False

    def start(self) -> None:
        self.dispatcher = asyncio.create_task(self._dispatch(), name=f"delivery-{self._name}")

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
        if self._circuit.is_open and not self.flushing:
            await self._probe()
            return
        if self.in_flight >= self._max_concurrent:
            await self._wake.wait()
            return
        if not self.flushing:
            await self._spooler.replay()
        queue = self._queue
        if not queue.entries:
            await self._wake.wait()
            return
        if (
            not self.flushing
            and len(queue.entries) < queue.batch_records
            and queue.queue_bytes < queue.batch_bytes
        ):
            delay = queue.entries[0].arrival + self._batch_timeout - self._clock()
            if delay > 0:
                await self._wait_wake(delay)
                return
        self._launch(queue.take_batch(), probe=False)

    def _launch(self, batch: list[Entry], *, probe: bool) -> asyncio.Task[None]:
        self.in_flight += 1
        task = asyncio.create_task(self._deliver(batch, probe=probe))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _probe(self) -> None:
        """While the circuit is open: one batch at a time, after a growing, jittered pause."""
        if self.in_flight:
            await self._wake.wait()
            return
        await self._sleep(self._circuit.next_probe())
        await self._spooler.replay()
        if not self._queue.entries:
            await self._wake.wait()
            return
        if not self._circuit.is_open:
            return
        await self._launch(self._queue.take_batch(), probe=True)

    async def _wait_wake(self, timeout: float) -> None:
        waiter = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._sleep(timeout))
        try:
            await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()

    async def _deliver(self, batch: list[Entry], *, probe: bool) -> None:
        pending = batch
        backoff = Backoff.from_options(self._options, self._rng)
        settler = self._settler
        started = self._clock()
        try:
            while True:
                pending = await self._attempt(pending)
                if not pending:
                    return
                if probe or self._retries_stopped():
                    settler.park(pending)
                    pending = []
                    return
                settler.mark_degraded()
                await self._spooler.persist(pending)
                delay = backoff.next()
                if self._clock() - started + delay > self._max_elapsed:
                    settler.park(pending)
                    pending = []
                    self._circuit.open()
                    return
                task = asyncio.current_task()
                if task is not None:
                    self.backing_off.add(task)
                try:
                    await self._sleep(delay)
                finally:
                    if task is not None:
                        self.backing_off.discard(task)
                if self._retries_stopped():
                    settler.park(pending)
                    pending = []
                    return
                self._counters.retried += len(pending)
        except asyncio.CancelledError:
            self._queue.requeue_front(pending)
            pending = []
            raise
        finally:
            self.in_flight -= 1
            self._wake.set()

    def _retries_stopped(self) -> bool:
        """Another batch opened the circuit, or shutdown began: failing batches go to the spool."""
        return self._circuit.is_open or self.closing

    async def _attempt(self, batch: list[Entry]) -> list[Entry]:
        """Send once; settle what the backend decided; return the entries to try again."""
        records = [entry.record for entry in batch]
        start = self._clock()
        try:
            result = await asyncio.wait_for(self._backend.send(records), self._send_timeout)
        except PermanentError as exc:
            self._counters.observe(self._clock() - start)
            self._circuit.answered(clean=True)
            self._settler.reject([(entry, _reason(exc)) for entry in batch])
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
            self._circuit.answered(clean=True)
            self._settler.accept(batch)
            return []
        return self._settler.settle(batch, result)

    def _failed(self, batch: list[Entry], start: float, reason: str, *, trace: bool) -> None:
        self._counters.observe(self._clock() - start)
        self._counters.failed += len(batch)
        # The first failure after a success is news; the retries that follow are not.
        level = logging.DEBUG if self._circuit.degraded else logging.WARNING
        self._log.log(level, "send of %d records failed (%s); retrying", len(batch), reason, exc_info=trace)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__
