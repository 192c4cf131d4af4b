"""The runtime snapshot: a thin facade over Check, quota and Report dispatch and handler lifecycle."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

from mixer import logcontext
from mixer.adapter import Handler, ReportHandler
from mixer.attributes import AttributeBag
from mixer.decision import CheckOutcome, QuotaRequest
from mixer.runtime._calls import HANDLER_FAILED, HandlerCalls
from mixer.runtime._check import CheckDispatch
from mixer.runtime._check_cache import CheckCache
from mixer.runtime._generate import GenerateRule
from mixer.runtime._index import CheckRule, QuotaRule, ReportRule, Scoped
from mixer.runtime._lifecycle import HandlerLifecycle, HandlerSlot
from mixer.runtime._outcomes import ReportOutcome, RuntimeDelta, RuntimeStats
from mixer.runtime._quota import QuotaDispatch
from mixer.runtime._report import MAX_REPORT_ERRORS, REPORT_SLICE_SECONDS, ReportDispatch, yield_for
from mixer.status import Code
from mixer.statusboard import DENIALS

if TYPE_CHECKING:
    from mixer.config import ValidatedConfig

__all__ = [
    "HANDLER_FAILED",
    "MAX_REPORT_ERRORS",
    "REPORT_SLICE_SECONDS",
    "HandlerSlot",
    "Runtime",
    "yield_for",
]

_NO_QUOTAS: Mapping[str, QuotaRequest] = MappingProxyType({})


class Runtime:
    """An immutable snapshot of a configuration, ready to dispatch. Build one with ``build_runtime``.

    The server swaps snapshots atomically on reload; a request keeps the snapshot it started with.
    """

    __slots__ = (
        "_check_cache",
        "_checks",
        "_lifecycle",
        "_reports",
        "config",
        "delta",
        "generation",
        "stats",
    )

    def __init__(
        self,
        *,
        config: ValidatedConfig,
        generation: int,
        slots: Sequence[HandlerSlot],
        check: Scoped[CheckRule],
        quota: Mapping[str, Scoped[QuotaRule]],
        report: Scoped[ReportRule],
        report_handlers: Sequence[tuple[str, ReportHandler]],
        stats: RuntimeStats,
        delta: RuntimeDelta,
        logger: logging.Logger,
        produce: Scoped[CheckRule] | None = None,
        generate: Scoped[GenerateRule] | None = None,
        check_cache: CheckCache | None = None,
    ) -> None:
        self.config = config
        self.generation = generation
        self.stats = stats
        self.delta = delta
        generating = generate if generate is not None else Scoped()
        calls = HandlerCalls(stats, logger)
        self._check_cache = check_cache if check_cache is not None else CheckCache(0, stats, time.monotonic)
        self._checks = CheckDispatch(
            check=check,
            produce=produce if produce is not None else Scoped(),
            generate=generating,
            quotas=QuotaDispatch(quota, calls, logger),
            manifest=config.manifest,
            calls=calls,
            logger=logger,
            cache=self._check_cache,
            generation=generation,
        )
        self._reports = ReportDispatch(report, report_handlers, generating, stats, logger)
        self._lifecycle = HandlerLifecycle(self, slots, stats, logger)

    def __repr__(self) -> str:
        return f"Runtime(generation={self.generation}, handlers={len(self._slots)})"

    @property
    def handlers(self) -> Mapping[str, Handler]:
        """The handlers this runtime dispatches to, by fully qualified name."""
        return MappingProxyType({slot.name: slot.handler for slot in self._slots})

    # -- Check ----------------------------------------------------------------------------------

    async def check(
        self,
        bag: AttributeBag,
        quotas: Mapping[str, QuotaRequest] = _NO_QUOTAS,
        deduplication_id: str = "",
        *,
        timeout: float | None = None,
    ) -> CheckOutcome:
        """Decide a Check: precondition, route directive, then quotas when the precondition is OK.

        Never raises for a handler's failure: a handler that raises becomes an INTERNAL status, one
        that outlives ``timeout`` (seconds, for the whole call) DEADLINE_EXCEEDED.
        """
        # What the log lines of this call say they are about (see mixer.logcontext).
        request = bag.get("request.id")
        generation_token = logcontext.generation.set(self.generation)
        if not isinstance(request, str):
            request = logcontext.request_id.get() or deduplication_id or None
        request_token = logcontext.request_id.set(
            request[: logcontext.MAX_REQUEST_ID] if request is not None else None
        )
        try:
            outcome = await self._checks.decide(bag, quotas, deduplication_id, timeout)
            if outcome.status.code is not Code.OK:
                DENIALS.record("check", outcome.status.code.name, outcome.status.message)
            return outcome
        finally:
            logcontext.request_id.reset(request_token)
            logcontext.generation.reset(generation_token)

    # -- Report ---------------------------------------------------------------------------------

    def report(self, bags: Sequence[AttributeBag]) -> ReportOutcome:
        """Turn bags into one :class:`ReportBatch` per handler and hand each over once.

        Instances are in bag order, then rule order. Never waits on a backend: handlers queue the
        batch or raise :class:`HandlerOverloaded`. Holds the event loop for the whole call: a large
        batch goes through :meth:`report_in_slices` instead. A handler that acknowledges from its
        spool returns what to wait for; those are in :attr:`ReportOutcome.pending`, and a caller
        answering the Report awaits :meth:`ReportOutcome.durable_status`.
        """
        token = logcontext.generation.set(self.generation)
        try:
            return self._reports.report(bags)
        finally:
            logcontext.generation.reset(token)

    async def report_in_slices(
        self, bags: Sequence[AttributeBag], *, slice_seconds: float = REPORT_SLICE_SECONDS
    ) -> ReportOutcome:
        """:meth:`report`, yielding to the event loop whenever a slice has taken ``slice_seconds``.

        Each slice's instances go to their handlers before the yield, so a large Report reaches a
        handler as several batches (in bag order) while other calls keep being served between
        them (see :func:`yield_for`). The caller holds this runtime (``RuntimeHolder.acquire``)
        until it returns, since a reload may swap runtimes during a yield.
        """
        token = logcontext.generation.set(self.generation)
        try:
            return await self._reports.report_in_slices(bags, slice_seconds)
        finally:
            logcontext.generation.reset(token)

    # -- Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the handlers not started yet (those a reload reused are already running).

        Call it before the servers take traffic, and on reload before swapping this runtime in.
        When it succeeds this runtime takes over the reused handlers, so the previous runtime's
        :meth:`shutdown` stops only the handlers this one retired.

        :raises RuntimeBuildError: a handler failed to start (those started here are shut down again),
            or a reused handler was already shut down with the previous runtime.
        """
        await self._lifecycle.start()
        # What the precondition cache holds was decided under an older configuration.
        self._check_cache.started(self.generation)

    async def shutdown(self, timeout: float) -> None:
        """Shut down, concurrently and within ``timeout`` seconds, the started handlers this runtime
        owns: all of them, or after a newer runtime started, those it did not reuse. Idempotent."""
        await self._lifecycle.shutdown(timeout)

    @property
    def closed(self) -> bool:
        return self._lifecycle.closed

    @property
    def check_cache(self) -> CheckCache:
        """The cache of precondition answers, shared with the runtimes built from this one."""
        return self._check_cache

    @property
    def _slots(self) -> tuple[HandlerSlot, ...]:
        # The builder of the next runtime reuses handlers from these.
        return self._lifecycle.slots
