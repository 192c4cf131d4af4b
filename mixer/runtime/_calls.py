"""Calling check and quota handlers: deadlines, failures turned into statuses, rule matches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from mixer import logcontext
from mixer.adapter import CheckHandler, CheckResult, QuotaArgs, QuotaHandler, QuotaResult
from mixer.attributes import AttributeBag
from mixer.runtime._index import Evaluate
from mixer.runtime._outcomes import RuntimeStats
from mixer.status import Code, Status
from mixer.templates import Instance, QuotaInstance

#: What a caller is told when a handler raised (the log has the exception).
HANDLER_FAILED = "handler failed, see the server log"

_NOT_CACHEABLE = timedelta(0)

T = TypeVar("T")

#: (index of the answer's slot, handler, instance) of one check handler call to make.
PendingCheck = tuple[int, CheckHandler, Instance]


def describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


def failed_check(code: Code, message: str) -> CheckResult:
    # A failure the runtime made (not a handler's verdict) must not be cached by the proxy.
    return CheckResult(Status(code, message), _NOT_CACHEABLE, 0)


def failed_quota(code: Code, message: str) -> QuotaResult:
    return QuotaResult(0, _NOT_CACHEABLE, Status(code, message))


class HandlerCalls:
    """Calls handlers for one runtime, counting what fails in its :class:`RuntimeStats`."""

    __slots__ = ("_logger", "stats")

    def __init__(self, stats: RuntimeStats, logger: logging.Logger) -> None:
        self.stats = stats
        self._logger = logger

    def matches(self, match: Evaluate, bag: AttributeBag, rule: str) -> bool:
        try:
            return bool(match(bag))
        except Exception as exc:
            self.stats.match_errors += 1
            self._logger.debug("rule %s: match failed, treated as false: %s", rule, exc)
            return False

    async def run_checks(
        self,
        pending: list[PendingCheck],
        names: list[str],
        results: list[CheckResult | None],
        deadline: float | None,
    ) -> None:
        """Answer ``pending`` into ``results``: handlers that never wait one after the other,
        the others concurrently (one alone is awaited directly)."""
        if len(pending) == 1:
            index, handler, instance = pending[0]
            results[index] = await self.call_check(names[index], handler, instance, deadline)
        elif pending:
            waiting = []
            for entry in pending:
                index, handler, instance = entry
                if handler.check_waits:
                    waiting.append(entry)
                else:
                    results[index] = await self.call_check(names[index], handler, instance, deadline)
            if len(waiting) == 1:
                index, handler, instance = waiting[0]
                results[index] = await self.call_check(names[index], handler, instance, deadline)
            elif waiting:
                answers = await asyncio.gather(
                    *(self.call_check(names[i], handler, inst, deadline) for i, handler, inst in waiting)
                )
                for (index, _, _), answer in zip(waiting, answers, strict=True):
                    results[index] = answer

    async def call_check(
        self, name: str, handler: CheckHandler, instance: Instance, deadline: float | None
    ) -> CheckResult:
        # A handler that never waits cannot be interrupted by a deadline (cancellation lands
        # only where a coroutine waits): no timer to arm and cancel for it.
        timed = deadline if handler.check_waits else None
        return await self._call(name, "check", lambda: handler.handle_check(instance), timed, failed_check)

    async def call_quota(
        self,
        name: str,
        handler: QuotaHandler,
        instance: QuotaInstance,
        args: QuotaArgs,
        deadline: float | None,
    ) -> QuotaResult:
        return await self._call(
            name, "quota", lambda: handler.handle_quota(instance, args), deadline, failed_quota
        )

    async def _call(
        self,
        name: str,
        kind: str,
        call: Callable[[], Awaitable[T]],
        deadline: float | None,
        failed: Callable[[Code, str], T],
    ) -> T:
        token = logcontext.handler.set(name)
        try:
            if deadline is None:
                return await call()
            async with asyncio.timeout_at(deadline):
                return await call()
        except TimeoutError:
            if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                self.stats.count_handler_timeout(name)
                return failed(Code.DEADLINE_EXCEEDED, "deadline exceeded")
            return self._failure(name, kind, TimeoutError("timed out"), failed)
        except Exception as exc:
            return self._failure(name, kind, exc, failed)
        finally:
            logcontext.handler.reset(token)

    def _failure(self, name: str, kind: str, exc: Exception, failed: Callable[[Code, str], T]) -> T:
        self.stats.count_handler_error(name)
        self._logger.warning("%s handler %s failed: %r", kind, name, exc)
        # The caller learns that it failed; what failed (hosts, paths, credentials) is for the log.
        return failed(Code.INTERNAL, HANDLER_FAILED)
