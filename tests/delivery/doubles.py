"""Test doubles for delivery tests: a scriptable BatchSender and a virtual clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Sequence

from mixer.delivery import Record, SendResult

#: What one send does: accept all (None), answer a partial result, raise, or decide from the batch.
Outcome = SendResult | BaseException | Callable[[Sequence[Record]], SendResult | None] | None


class FakeBatchSender:
    """A BatchSender test double: plays ``script`` outcomes in order, then ``default``.

    ``calls`` has every batch it was given, ``accepted`` the records it accepted, in order.
    While ``gate`` is set to an unset Event, sends wait on it (to hold batches in flight).
    """

    def __init__(self, *script: Outcome, default: Outcome = None) -> None:
        self.script: deque[Outcome] = deque(script)
        self.default: Outcome = default
        self.calls: list[list[Record]] = []
        self.accepted: list[Record] = []
        self.gate: asyncio.Event | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    @property
    def accepted_payloads(self) -> list[bytes]:
        return [record.payload for record in self.accepted]

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        self.calls.append(list(batch))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            outcome = self.script.popleft() if self.script else self.default
            if isinstance(outcome, BaseException):
                raise outcome
            result = outcome(batch) if callable(outcome) else outcome
            refused = set() if result is None else {*result.retry, *(i for i, _ in result.rejected)}
            self.accepted.extend(r for i, r in enumerate(batch) if i not in refused)
            return result
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        self.closed = True


class VirtualClock:
    """``clock()`` and ``sleep()`` on virtual time.

    ``auto=True``: every sleep advances time by its own length at once (for retry schedules).
    ``auto=False``: sleepers wait until :meth:`advance` moves time past their deadline.
    ``sleeps`` records every duration asked for.
    """

    def __init__(self, *, auto: bool) -> None:
        self.now = 1000.0
        self.auto = auto
        self.sleeps: list[float] = []
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.auto:
            self.now += max(0.0, seconds)
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (self.now + seconds, next(self._order), future))
        await future

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while self._waiters and self._waiters[0][0] <= self.now:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (real time) until ``predicate()`` holds; fail the test if it does not within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


async def settle(turns: int = 50) -> None:
    """Give every ready task a few loop turns (to show that something does NOT happen)."""
    for _ in range(turns):
        await asyncio.sleep(0)


def records(start: int, stop: int, *, route: str = "", key: bytes | None = None) -> list[Record]:
    return [Record(payload=str(i).encode(), route=route, key=key) for i in range(start, stop)]


def payloads(start: int, stop: int) -> list[bytes]:
    return [str(i).encode() for i in range(start, stop)]
