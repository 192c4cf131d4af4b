"""Handler lifecycle: the built handlers of a runtime, started, taken over and shut down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from mixer.adapter import Handler
from mixer.runtime._calls import describe
from mixer.runtime._outcomes import RuntimeBuildError, RuntimeStats

_CANCEL_GRACE = 0.5


@dataclass(eq=False, slots=True)
class HandlerSlot:
    """One built handler and who is responsible for it.

    A slot moves from a runtime to the runtime built from it when the handler is reused; ``owner``
    is the runtime whose shutdown stops the handler, and changes only when the newer runtime has
    started, so a reload that fails to start leaves the older runtime whole.
    """

    name: str
    adapter: str
    params: BaseModel
    data_dir: Path | None
    handler: Handler
    owner: object | None = None
    started: bool = False
    stopped: bool = False
    #: The plans the handler was built with, for adapters that read plans (else empty).
    plans_fingerprint: str = ""

    def same_config(self, name: str, adapter: str, params: BaseModel, data_dir: Path | None) -> bool:
        return (
            self.name == name
            and self.adapter == adapter
            and self.data_dir == data_dir
            and type(self.params) is type(params)
            and self.params == params
        )


class HandlerLifecycle:
    """Starts and stops the handlers of one runtime (``owner``), which shares slots with the
    runtimes built from it and before it."""

    __slots__ = ("_closed", "_logger", "_owner", "slots", "stats")

    def __init__(
        self, owner: object, slots: Sequence[HandlerSlot], stats: RuntimeStats, logger: logging.Logger
    ) -> None:
        self._owner = owner
        self.slots = tuple(slots)
        self.stats = stats
        self._logger = logger
        self._closed = False

    async def start(self) -> None:
        """See :meth:`Runtime.start`."""
        for slot in self.slots:
            if slot.stopped:
                raise RuntimeBuildError(
                    f"handler {slot.name} was shut down with a previous runtime; build again"
                )
        to_start = [slot for slot in self.slots if not slot.started]
        answers = await asyncio.gather(*(slot.handler.start() for slot in to_start), return_exceptions=True)
        failures: list[str] = []
        for slot, answer in zip(to_start, answers, strict=True):
            if isinstance(answer, BaseException):
                failures.append(f"{slot.name}: {describe(answer)}")
            else:
                slot.started = True
        if failures:
            started_here = [slot for slot in to_start if slot.started]
            await self._stop(started_here, timeout=5.0)
            raise RuntimeBuildError("handlers failed to start: " + "; ".join(failures))
        for slot in self.slots:
            slot.owner = self._owner

    async def shutdown(self, timeout: float) -> None:
        """See :meth:`Runtime.shutdown`."""
        if self._closed:
            return
        self._closed = True
        owned = [
            slot for slot in self.slots if slot.owner is self._owner and slot.started and not slot.stopped
        ]
        await self._stop(owned, timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    async def _stop(self, slots: list[HandlerSlot], timeout: float) -> None:
        if not slots:
            return
        for slot in slots:
            slot.stopped = True
        tasks = [asyncio.ensure_future(self._stop_one(slot, timeout)) for slot in slots]
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            names = ", ".join(slot.name for slot, task in zip(slots, tasks, strict=True) if task in late)
            self._logger.warning("handlers did not shut down within %.1fs: %s", timeout, names)
            # Cancellation normally lands at once; a handler that shields itself is abandoned.
            await asyncio.wait(late, timeout=_CANCEL_GRACE)

    async def _stop_one(self, slot: HandlerSlot, timeout: float) -> None:
        try:
            await slot.handler.shutdown(timeout)
        except Exception as exc:
            self.stats.count_handler_error(slot.name)
            self._logger.warning("handler %s failed to shut down: %r", slot.name, exc)
