"""Report: bags matched against the report rules, instances built and handed to their handlers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Final

from mixer import logcontext
from mixer.adapter import HandlerOverloaded, ReportBatch, ReportHandler
from mixer.attributes import AttributeBag
from mixer.runtime._calls import describe
from mixer.runtime._generate import GenerateRule, generate
from mixer.runtime._index import ReportRule, Scoped, identity_namespace
from mixer.runtime._outcomes import ReportOutcome, RuntimeStats
from mixer.runtime._produced import _Layered
from mixer.templates import Instance

#: How many error messages one Report keeps; the counts stay complete.
MAX_REPORT_ERRORS = 10
#: How long :meth:`Runtime.report_in_slices` may hold the event loop before it yields (seconds).
#: Building one Istio request's instances takes 50 to 250 µs, so a slice is some tens of bags.
REPORT_SLICE_SECONDS: Final = 0.002
#: Bags built between two looks at the clock.
_REPORT_STEP: Final = 8


async def yield_for(busy: float) -> None:
    """Give the event loop back for as long as the slice before took (``busy`` seconds).

    A bare ``sleep(0)`` is one loop turn, and a Check needs several turns (its request read, its
    handler, its answer written): a slice in every turn would still add many slices to each
    Check. Pausing as long as the slice ran keeps a large batch to at most half the loop.
    """
    await asyncio.sleep(busy)


@dataclass(slots=True)
class _ReportTally:
    """What the slices of one Report did so far."""

    dispatched: int = 0
    match_errors: int = 0
    instance_errors: int = 0
    errors: list[str] = field(default_factory=list)
    overloaded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: Handlers that acknowledge from their spool, and the commit to wait for.
    pending: list[tuple[str, Awaitable[None]]] = field(default_factory=list)


class ReportDispatch:
    """Dispatches Reports for one runtime: never waits on a backend."""

    __slots__ = ("_generate", "_handlers", "_logger", "_rules", "stats")

    def __init__(
        self,
        rules: Scoped[ReportRule],
        handlers: Sequence[tuple[str, ReportHandler]],
        generate: Scoped[GenerateRule],
        stats: RuntimeStats,
        logger: logging.Logger,
    ) -> None:
        self._rules = rules
        self._handlers = tuple(handlers)
        self._generate = generate
        self.stats = stats
        self._logger = logger

    def report(self, bags: Sequence[AttributeBag]) -> ReportOutcome:
        """See :meth:`Runtime.report`."""
        tally = _ReportTally()
        self._report_part(bags, 0, len(bags), tally)
        return self._end_report(tally, len(bags))

    async def report_in_slices(self, bags: Sequence[AttributeBag], slice_seconds: float) -> ReportOutcome:
        """See :meth:`Runtime.report_in_slices`."""
        return await self._report_slices(bags, slice_seconds)

    async def _report_slices(self, bags: Sequence[AttributeBag], slice_seconds: float) -> ReportOutcome:
        tally = _ReportTally()
        total = len(bags)
        position = 0
        while position < total:
            started = perf_counter()
            deadline = started + slice_seconds
            end = position
            batches = self._new_batches()
            # At least one step per slice, however late the clock says it is.
            while True:
                step = min(total, end + _REPORT_STEP)
                self._build_report(bags, end, step, batches, tally)
                end = step
                if end >= total or perf_counter() >= deadline:
                    break
            self._dispatch_report(batches, tally)
            position = end
            if position < total:
                await yield_for(perf_counter() - started)
        return self._end_report(tally, total)

    def _new_batches(self) -> list[list[Instance]]:
        return [[] for _ in self._handlers]

    def _report_part(self, bags: Sequence[AttributeBag], start: int, end: int, tally: _ReportTally) -> None:
        batches = self._new_batches()
        self._build_report(bags, start, end, batches, tally)
        self._dispatch_report(batches, tally)

    def _build_report(
        self,
        bags: Sequence[AttributeBag],
        start: int,
        end: int,
        batches: list[list[Instance]],
        tally: _ReportTally,
    ) -> None:
        scoped = self._rules
        default_rules = scoped.default
        by_namespace = scoped.by_namespace
        errors = tally.errors
        generating: Scoped[GenerateRule] | None = self._generate
        if not (self._generate.default or self._generate.needs_namespace):
            generating = None
        for index in range(start, end):
            received = bag = bags[index]
            if generating is not None:
                generated = generate(generating, received, self.stats, self._logger)
                if generated:
                    # Only names the bag lacks, so the layering order does not matter.
                    bag = AttributeBag(_Layered(generated, received._values))
            rules = default_rules
            if by_namespace is not None:
                namespace = identity_namespace(bag)
                if namespace is not None:
                    rules = by_namespace.get(namespace, default_rules)
            for match, sampler, actions, rule_name in rules:
                if match is not None:
                    try:
                        if not match(bag):
                            continue
                    except Exception as exc:
                        tally.match_errors += 1
                        if len(errors) < MAX_REPORT_ERRORS:
                            errors.append(f"rule {rule_name}: match: {exc}")
                        continue
                if sampler is not None and not sampler(bag):
                    continue
                for handler_index, build, instance_name in actions:
                    try:
                        instance = build(bag)
                    except Exception as exc:
                        tally.instance_errors += 1
                        if len(errors) < MAX_REPORT_ERRORS:
                            errors.append(f"instance {instance_name}: {exc}")
                        continue
                    batches[handler_index].append(instance)

    def _dispatch_report(self, batches: list[list[Instance]], tally: _ReportTally) -> None:
        stats = self.stats
        errors = tally.errors
        for (name, handler), instances in zip(self._handlers, batches, strict=True):
            if not instances:
                continue
            handler_token = logcontext.handler.set(name)
            try:
                commit = handler.handle_report(ReportBatch(name, instances))
            except HandlerOverloaded:
                if name not in tally.overloaded:
                    tally.overloaded.append(name)
                stats.count_overloaded(name)
                continue
            except Exception as exc:
                if name not in tally.failed:
                    tally.failed.append(name)
                stats.count_handler_error(name)
                self._logger.warning("report handler %s failed: %r", name, exc)
                if len(errors) < MAX_REPORT_ERRORS:
                    errors.append(f"{name}: {describe(exc)}")
                continue
            finally:
                logcontext.handler.reset(handler_token)
            tally.dispatched += len(instances)
            if commit is not None:
                tally.pending.append((name, commit))

    def _end_report(self, tally: _ReportTally, records: int) -> ReportOutcome:
        stats = self.stats
        stats.report_calls += 1
        stats.report_records += records
        stats.report_instances += tally.dispatched
        stats.match_errors += tally.match_errors
        stats.instance_errors += tally.instance_errors
        return ReportOutcome(
            records=records,
            instances=tally.dispatched,
            overloaded=tuple(tally.overloaded),
            failed=tuple(tally.failed),
            match_errors=tally.match_errors,
            instance_errors=tally.instance_errors,
            errors=tuple(tally.errors),
            pending=tuple(tally.pending),
        )
