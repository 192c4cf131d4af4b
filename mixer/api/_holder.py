"""The current runtime snapshot, swapped atomically on reload, with the requests still using each."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mixer.runtime import Runtime


@dataclass(frozen=True, slots=True)
class ConfigInfo:
    """Where the current config came from: the embedded default, or the files read."""

    embedded: bool
    source: str
    files: tuple[str, ...] = ()


class RuntimeHolder:
    """Holds the runtime that new requests use.

    A request that awaits takes its runtime with :meth:`acquire` and hands it back with
    :meth:`release`, so a reload can wait (:meth:`drained`) until the requests that started on the
    retired runtime have finished before shutting its handlers down; Reports count, since they
    yield between slices. Code that never awaits between reading :attr:`current` and finishing
    with it (a syslog batch) may read it directly: nothing can swap it underneath.
    """

    __slots__ = ("_active", "_waiters", "current", "info")

    def __init__(self, runtime: Runtime, info: ConfigInfo) -> None:
        self.current = runtime
        self.info = info
        self._active: dict[Runtime, int] = {}
        self._waiters: dict[Runtime, asyncio.Event] = {}

    def acquire(self) -> Runtime:
        runtime = self.current
        active = self._active
        active[runtime] = active.get(runtime, 0) + 1
        return runtime

    def release(self, runtime: Runtime) -> None:
        active = self._active
        left = active[runtime] - 1
        if left:
            active[runtime] = left
            return
        del active[runtime]
        waiter = self._waiters.get(runtime)
        if waiter is not None:
            waiter.set()

    def in_use(self, runtime: Runtime) -> int:
        """How many requests are still running on ``runtime``."""
        return self._active.get(runtime, 0)

    def swap(self, runtime: Runtime, info: ConfigInfo) -> Runtime:
        """Make ``runtime`` current for new requests; returns the one it replaces."""
        previous = self.current
        self.current = runtime
        self.info = info
        return previous

    async def drained(self, runtime: Runtime, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until no request uses ``runtime``; whether that happened."""
        if runtime not in self._active:
            return True
        waiter = self._waiters.setdefault(runtime, asyncio.Event())
        try:
            async with asyncio.timeout(timeout):
                await waiter.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.pop(runtime, None)
