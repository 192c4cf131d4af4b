"""The runtime snapshot: dispatch of Check, quota and Report to handlers, and handler lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from time import perf_counter
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, cast

from pydantic import BaseModel

from mixer import logcontext
from mixer.adapter import (
    CheckHandler,
    CheckResult,
    Handler,
    HandlerOverloaded,
    QuotaArgs,
    QuotaHandler,
    QuotaResult,
    ReportBatch,
    ReportHandler,
)
from mixer.attributes import AttributeBag, AttributeMatch, AttributeValue, TrackingBag
from mixer.decision import (
    DEFAULT_VALID_DURATION,
    DEFAULT_VALID_USE_COUNT,
    CheckOutcome,
    HeaderOperationKind,
    HeaderOperationResult,
    QuotaOutcome,
    QuotaRequest,
    rate_limit_headers,
)
from mixer.runtime._generate import GenerateRule, generate
from mixer.runtime._index import (
    CheckRule,
    Evaluate,
    HeaderOp,
    QuotaRule,
    ReportRule,
    Scoped,
    identity_namespace,
)
from mixer.runtime._outcomes import (
    ReportOutcome,
    RuntimeBuildError,
    RuntimeDelta,
    RuntimeStats,
)
from mixer.runtime._produced import FieldSources, ProducedBag, _Layered, conforming
from mixer.status import Code, Status
from mixer.statusboard import DENIALS
from mixer.templates import Instance, QuotaInstance, RequestContext

if TYPE_CHECKING:
    from mixer.config import ValidatedConfig

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


_NO_QUOTAS: Mapping[str, QuotaRequest] = MappingProxyType({})
_NOT_CACHEABLE = timedelta(0)
_REPLACE = HeaderOperationKind.REPLACE
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


class Runtime:
    """An immutable snapshot of a configuration, ready to dispatch. Build one with ``build_runtime``.

    The server swaps snapshots atomically on reload; a request keeps the snapshot it started with.
    """

    __slots__ = (
        "_check",
        "_closed",
        "_generate",
        "_logger",
        "_produce",
        "_quota",
        "_report",
        "_report_handlers",
        "_slots",
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
    ) -> None:
        self.config = config
        self.generation = generation
        self.stats = stats
        self.delta = delta
        self._slots = tuple(slots)
        self._check = check
        self._produce = produce if produce is not None else Scoped()
        self._generate = generate if generate is not None else Scoped()
        self._quota = quota
        self._report = report
        self._report_handlers = tuple(report_handlers)
        self._logger = logger
        self._closed = False

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
            outcome = await self._decide_check(bag, quotas, deduplication_id, timeout)
            if outcome.status.code is not Code.OK:
                DENIALS.record("check", outcome.status.code.name, outcome.status.message)
            return outcome
        finally:
            logcontext.request_id.reset(request_token)
            logcontext.generation.reset(generation_token)

    async def _decide_check(
        self,
        bag: AttributeBag,
        quotas: Mapping[str, QuotaRequest],
        deduplication_id: str,
        timeout: float | None,
    ) -> CheckOutcome:
        stats = self.stats
        stats.check_calls += 1
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        tracking = bag.tracking()

        names: list[str] = []
        results: list[CheckResult | None] = []
        request_ops: list[HeaderOperationResult] = []
        response_ops: list[HeaderOperationResult] = []
        generating = self._generate
        if generating.default or generating.needs_namespace:
            generated = generate(generating, tracking, stats, self._logger)
            if generated:
                tracking = ProducedBag(tracking, generated)
        produce = self._produce
        if produce.default or produce.needs_namespace:
            tracking = await self._produce_attributes(tracking, deduplication_id, names, results, deadline)
        # A producer that refused the request (an invalid token) decides the Check alone.
        if not results or all(r is not None and r.status.code is Code.OK for r in results):
            await self._preconditions(
                tracking, deduplication_id, names, results, request_ops, response_ops, deadline
            )

        status, valid_duration, valid_use_count, headers = _combine_check(names, results)
        referenced = tracking.referenced()
        if headers:
            request_ops[:0] = [
                HeaderOperationResult(name, value, _REPLACE) for name, value in headers.items()
            ]
        rate_limits = tuple(rl for result in results if result is not None for rl in result.rate_limits)
        if rate_limits:
            # Ahead of the configured operations, so that operators' rules have the last word.
            response_ops[:0] = [
                HeaderOperationResult(name, value, _REPLACE)
                for name, value in rate_limit_headers(rate_limits).items()
            ]

        quota_outcomes: dict[str, QuotaOutcome] = {}
        if quotas and status.code is Code.OK:
            quota_outcomes = await self._quotas(tracking, quotas, deduplication_id, deadline)

        return CheckOutcome(
            status=status,
            valid_duration=valid_duration,
            valid_use_count=valid_use_count,
            referenced=referenced,
            request_header_operations=request_ops,
            response_header_operations=response_ops,
            quotas=quota_outcomes,
            headers=headers,
            rate_limits=rate_limits,
        )

    async def _produce_attributes(
        self,
        tracking: TrackingBag,
        deduplication_id: str,
        names: list[str],
        results: list[CheckResult | None],
        deadline: float | None,
    ) -> TrackingBag:
        """Run the rules of attribute-producing handlers; the bag the rest of the Check reads."""
        rules = self._produce.default
        if self._produce.needs_namespace:
            rules = self._produce.select(identity_namespace(tracking))
        pending: list[tuple[int, CheckHandler, Instance]] = []
        self._select(rules, tracking, deduplication_id, names, results, pending, None, None, None)
        await self._run_checks(pending, names, results, deadline)
        produced: dict[str, AttributeValue] = {}
        for index, _, _ in pending:
            result = results[index]
            if result is None or result.status.code is not Code.OK or not result.attributes:
                continue
            kept, dropped = conforming(result.attributes, self.config.manifest)
            if dropped:
                self.stats.count_handler_error(names[index])
                self._logger.warning(
                    "check handler %s produced attributes of the wrong type, dropped: %s",
                    names[index],
                    ", ".join(sorted(dropped)),
                )
            # In rule order: a later producer's value for the same attribute wins.
            produced.update(kept)
        if not produced:
            return tracking
        return ProducedBag(tracking, produced)

    async def _preconditions(
        self,
        tracking: TrackingBag,
        deduplication_id: str,
        names: list[str],
        results: list[CheckResult | None],
        request_ops: list[HeaderOperationResult],
        response_ops: list[HeaderOperationResult],
        deadline: float | None,
    ) -> None:
        check = self._check
        rules = check.default
        if check.needs_namespace:
            rules = check.select(identity_namespace(tracking))
        pending: list[tuple[int, CheckHandler, Instance]] = []
        spenders: set[int] = set()
        deferred: list[tuple[CheckRule, list[tuple[int, str]]]] = []
        self._select(
            rules,
            tracking,
            deduplication_id,
            names,
            results,
            pending,
            spenders,
            request_ops,
            response_ops,
            deferred,
        )

        # Plan checks spend quota, so like Mixer's quotas they run only once every other
        # precondition has passed: a request that a deny list refuses must not use up a plan.
        spending = [p for p in pending if p[0] in spenders]
        if spending:
            pending = [p for p in pending if p[0] not in spenders]
        await self._run_checks(pending, names, results, deadline)
        if spending:
            if all(r is None or r.status.code is Code.OK for r in results):
                await self._run_checks(spending, names, results, deadline)
            else:
                skipped = {index for index, _, _ in spending}
                # In place: the caller owns the lists.
                names[:] = [n for i, n in enumerate(names) if i not in skipped]
                results[:] = [r for i, r in enumerate(results) if i not in skipped]
                deferred = []
        for rule, outputs in deferred:
            self._output_headers(rule, outputs, tracking, results, request_ops, response_ops)

    def _output_headers(
        self,
        rule: CheckRule,
        outputs: list[tuple[int, str]],
        tracking: TrackingBag,
        results: list[CheckResult | None],
        request_ops: list[HeaderOperationResult],
        response_ops: list[HeaderOperationResult],
    ) -> None:
        """A rule's header operations over the request's bag plus its actions' outputs
        (``<action name>.output.<field>``), as Mixer evaluated them once the handlers answered."""
        produced: dict[str, AttributeValue] = {}
        for index, prefix in outputs:
            result = results[index]
            if result is not None and result.status.code is Code.OK:
                for name, value in result.outputs.items():
                    produced[prefix + name] = value
        # The outputs derive from what the instances read, which the tracking bag has recorded.
        bag = ProducedBag(tracking, produced) if produced else tracking
        if rule.request_headers:
            self._header_operations(rule.request_headers, bag, rule.name, request_ops)
        if rule.response_headers:
            self._header_operations(rule.response_headers, bag, rule.name, response_ops)

    def _select(
        self,
        rules: tuple[CheckRule, ...],
        tracking: TrackingBag,
        deduplication_id: str,
        names: list[str],
        results: list[CheckResult | None],
        pending: list[tuple[int, CheckHandler, Instance]],
        spenders: set[int] | None,
        request_ops: list[HeaderOperationResult] | None,
        response_ops: list[HeaderOperationResult] | None,
        deferred: list[tuple[CheckRule, list[tuple[int, str]]]] | None = None,
    ) -> None:
        """Match ``rules``, evaluate header operations and build instances: ``names`` and
        ``results`` get one slot per action (None until answered), ``pending`` what to call.
        Rules whose header operations read action outputs go to ``deferred`` instead."""
        stats = self.stats
        for rule in rules:
            if rule.match is not None and not self._matches(rule.match, tracking, rule.name):
                continue
            outputs: list[tuple[int, str]] | None = None
            if rule.deferred_headers and deferred is not None:
                outputs = []
                deferred.append((rule, outputs))
            else:
                if rule.request_headers and request_ops is not None:
                    self._header_operations(rule.request_headers, tracking, rule.name, request_ops)
                if rule.response_headers and response_ops is not None:
                    self._header_operations(rule.response_headers, tracking, rule.name, response_ops)
            for action in rule.actions:
                if outputs is not None and action.output_prefix:
                    outputs.append((len(results), action.output_prefix))
                names.append(action.handler_name)
                try:
                    instance = action.build(tracking)
                except Exception as exc:
                    # Mixer failed the Check when an instance could not be built; the failure is
                    # attributed to the handler that would have received it.
                    stats.instance_errors += 1
                    self._logger.debug("instance %s failed to build: %s", action.instance_name, exc)
                    results.append(_failed_check(Code.INTERNAL, f"instance {action.instance_name}: {exc}"))
                    continue
                if action.request_context:
                    # What the handler reads from the tracking bag counts as referenced, since
                    # references are collected only after every handler has answered.
                    scoped = cast(RequestContext, instance)
                    scoped.attributes = tracking
                    scoped.deduplication_id = deduplication_id
                    if action.fields:
                        scoped.sources = FieldSources(action.fields, tracking)
                    if isinstance(tracking, ProducedBag):
                        scoped.produced = frozenset(tracking.produced)
                    if spenders is not None:
                        spenders.add(len(results))
                pending.append((len(results), action.handler, instance))
                results.append(None)

    async def _run_checks(
        self,
        pending: list[tuple[int, CheckHandler, Instance]],
        names: list[str],
        results: list[CheckResult | None],
        deadline: float | None,
    ) -> None:
        if len(pending) == 1:
            index, handler, instance = pending[0]
            results[index] = await self._call_check(names[index], handler, instance, deadline)
        elif pending:
            waiting = []
            for entry in pending:
                index, handler, instance = entry
                if handler.check_waits:
                    waiting.append(entry)
                else:
                    results[index] = await self._call_check(names[index], handler, instance, deadline)
            if len(waiting) == 1:
                index, handler, instance = waiting[0]
                results[index] = await self._call_check(names[index], handler, instance, deadline)
            elif waiting:
                answers = await asyncio.gather(
                    *(self._call_check(names[i], handler, inst, deadline) for i, handler, inst in waiting)
                )
                for (index, _, _), answer in zip(waiting, answers, strict=True):
                    results[index] = answer

    def _matches(self, match: Evaluate, bag: AttributeBag, rule: str) -> bool:
        try:
            return bool(match(bag))
        except Exception as exc:
            self.stats.match_errors += 1
            self._logger.debug("rule %s: match failed, treated as false: %s", rule, exc)
            return False

    def _header_operations(
        self, ops: tuple[HeaderOp, ...], bag: AttributeBag, rule: str, out: list[HeaderOperationResult]
    ) -> None:
        for op in ops:
            if not op.values:
                out.append(HeaderOperationResult(op.name, "", op.operation))
                continue
            for evaluate in op.values:
                try:
                    value = evaluate(bag)
                except Exception as exc:
                    self.stats.header_errors += 1
                    self._logger.debug("rule %s: header %s failed: %s", rule, op.name, exc)
                    continue
                text = value if isinstance(value, str) else str(value)
                out.append(HeaderOperationResult(op.name, text, op.operation))

    async def _call_check(
        self, name: str, handler: CheckHandler, instance: Instance, deadline: float | None
    ) -> CheckResult:
        token = logcontext.handler.set(name)
        try:
            # A handler that never waits cannot be interrupted by a deadline (cancellation lands
            # only where a coroutine waits): no timer to arm and cancel for it.
            if deadline is None or not handler.check_waits:
                return await handler.handle_check(instance)
            async with asyncio.timeout_at(deadline):
                return await handler.handle_check(instance)
        except TimeoutError:
            if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                self.stats.count_handler_timeout(name)
                return _failed_check(Code.DEADLINE_EXCEEDED, "deadline exceeded")
            return self._check_error(name, TimeoutError("timed out"))
        except Exception as exc:
            return self._check_error(name, exc)
        finally:
            logcontext.handler.reset(token)

    def _check_error(self, name: str, exc: Exception) -> CheckResult:
        self.stats.count_handler_error(name)
        self._logger.warning("check handler %s failed: %r", name, exc)
        # The caller learns that it failed; what failed (hosts, paths, credentials) is for the log.
        return _failed_check(Code.INTERNAL, HANDLER_FAILED)

    # -- Quota ----------------------------------------------------------------------------------

    async def _quotas(
        self,
        tracking: TrackingBag,
        quotas: Mapping[str, QuotaRequest],
        deduplication_id: str,
        deadline: float | None,
    ) -> dict[str, QuotaOutcome]:
        stats = self.stats
        index = self._quota
        outcomes: dict[str, QuotaOutcome] = {}
        plans: list[_QuotaPlan] = []
        pending: list[tuple[_QuotaPlan, int, QuotaHandler, QuotaInstance, QuotaArgs]] = []
        for quota_name, request in quotas.items():
            stats.quota_calls += 1
            scoped = index.get(quota_name.lower())
            if scoped is None:
                outcomes[quota_name] = QuotaOutcome(request.amount, DEFAULT_VALID_DURATION)
                continue
            # Each quota's answer is cached under its own attributes: Mixer reset the references
            # between the precondition and every quota.
            tracking.clear_references()
            rules = scoped.default
            if scoped.needs_namespace:
                rules = scoped.select(identity_namespace(tracking))
            plan = _QuotaPlan(quota_name, request)
            args = QuotaArgs(deduplication_id + quota_name, request.amount, request.best_effort)
            for rule in rules:
                if rule.match is not None and not self._matches(rule.match, tracking, rule.name):
                    continue
                for action in rule.actions:
                    plan.names.append(action.handler_name)
                    try:
                        instance = action.build(tracking)
                    except Exception as exc:
                        stats.instance_errors += 1
                        self._logger.debug("instance %s failed to build: %s", action.instance_name, exc)
                        plan.results.append(
                            _failed_quota(Code.INTERNAL, f"instance {action.instance_name}: {exc}")
                        )
                        continue
                    # Varieties were checked at build time: quota templates build QuotaInstances.
                    pending.append(
                        (plan, len(plan.results), action.handler, cast(QuotaInstance, instance), args)
                    )
                    plan.results.append(None)
            plan.referenced = tracking.referenced()
            plans.append(plan)

        if len(pending) == 1:
            plan, slot, handler, instance, args = pending[0]
            plan.results[slot] = await self._call_quota(plan.names[slot], handler, instance, args, deadline)
        elif pending:
            answers = await asyncio.gather(
                *(
                    self._call_quota(plan.names[slot], handler, instance, args, deadline)
                    for plan, slot, handler, instance, args in pending
                )
            )
            for (plan, slot, _, _, _), answer in zip(pending, answers, strict=True):
                plan.results[slot] = answer

        for plan in plans:
            outcomes[plan.quota] = plan.outcome()
        return outcomes

    async def _call_quota(
        self,
        name: str,
        handler: QuotaHandler,
        instance: QuotaInstance,
        args: QuotaArgs,
        deadline: float | None,
    ) -> QuotaResult:
        token = logcontext.handler.set(name)
        try:
            if deadline is None:
                return await handler.handle_quota(instance, args)
            async with asyncio.timeout_at(deadline):
                return await handler.handle_quota(instance, args)
        except TimeoutError:
            if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                self.stats.count_handler_timeout(name)
                return _failed_quota(Code.DEADLINE_EXCEEDED, "deadline exceeded")
            return self._quota_error(name, TimeoutError("timed out"))
        except Exception as exc:
            return self._quota_error(name, exc)
        finally:
            logcontext.handler.reset(token)

    def _quota_error(self, name: str, exc: Exception) -> QuotaResult:
        self.stats.count_handler_error(name)
        self._logger.warning("quota handler %s failed: %r", name, exc)
        return _failed_quota(Code.INTERNAL, HANDLER_FAILED)

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
            tally = _ReportTally()
            self._report_part(bags, 0, len(bags), tally)
            return self._end_report(tally, len(bags))
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
            return await self._report_slices(bags, slice_seconds)
        finally:
            logcontext.generation.reset(token)

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
        return [[] for _ in self._report_handlers]

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
        scoped = self._report
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
        for (name, handler), instances in zip(self._report_handlers, batches, strict=True):
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
                    errors.append(f"{name}: {_describe(exc)}")
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

    # -- Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the handlers not started yet (those a reload reused are already running).

        Call it before the servers take traffic, and on reload before swapping this runtime in.
        When it succeeds this runtime takes over the reused handlers, so the previous runtime's
        :meth:`shutdown` stops only the handlers this one retired.

        :raises RuntimeBuildError: a handler failed to start (those started here are shut down again),
            or a reused handler was already shut down with the previous runtime.
        """
        for slot in self._slots:
            if slot.stopped:
                raise RuntimeBuildError(
                    f"handler {slot.name} was shut down with a previous runtime; build again"
                )
        to_start = [slot for slot in self._slots if not slot.started]
        answers = await asyncio.gather(*(slot.handler.start() for slot in to_start), return_exceptions=True)
        failures: list[str] = []
        for slot, answer in zip(to_start, answers, strict=True):
            if isinstance(answer, BaseException):
                failures.append(f"{slot.name}: {_describe(answer)}")
            else:
                slot.started = True
        if failures:
            started_here = [slot for slot in to_start if slot.started]
            await self._stop(started_here, timeout=5.0)
            raise RuntimeBuildError("handlers failed to start: " + "; ".join(failures))
        for slot in self._slots:
            slot.owner = self

    async def shutdown(self, timeout: float) -> None:
        """Shut down, concurrently and within ``timeout`` seconds, the started handlers this runtime
        owns: all of them, or after a newer runtime started, those it did not reuse. Idempotent."""
        if self._closed:
            return
        self._closed = True
        owned = [slot for slot in self._slots if slot.owner is self and slot.started and not slot.stopped]
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


@dataclass(slots=True)
class _QuotaPlan:
    """One requested quota while it is dispatched: handler names in rule order and their answers."""

    quota: str
    request: QuotaRequest
    names: list[str] = field(default_factory=list)
    results: list[QuotaResult | None] = field(default_factory=list)
    referenced: list[AttributeMatch] = field(default_factory=list)

    def outcome(self) -> QuotaOutcome:
        if not self.results:
            # Configured by some rules, none of which matched this request: nothing limits it.
            return QuotaOutcome(self.request.amount, DEFAULT_VALID_DURATION, Status(), self.referenced)
        code = Code.OK
        messages: list[str] = []
        granted: int | None = None
        valid_duration: timedelta | None = None
        for name, result in zip(self.names, self.results, strict=True):
            assert result is not None
            if granted is None or result.granted_amount < granted:
                granted = result.granted_amount
            if valid_duration is None or result.valid_duration < valid_duration:
                valid_duration = result.valid_duration
            status = result.status
            if status.code is not Code.OK:
                if code is Code.OK:
                    code = status.code
                messages.append(f"{name}:{status.message}")
        assert granted is not None
        assert valid_duration is not None
        status = Status(code, ", ".join(messages)) if code is not Code.OK else Status()
        return QuotaOutcome(granted, valid_duration, status, self.referenced)


#: What a caller is told when a handler raised (the log has the exception).
HANDLER_FAILED = "handler failed, see the server log"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


def _failed_check(code: Code, message: str) -> CheckResult:
    # A failure the runtime made (not a handler's verdict) must not be cached by the proxy.
    return CheckResult(Status(code, message), _NOT_CACHEABLE, 0)


def _failed_quota(code: Code, message: str) -> QuotaResult:
    return QuotaResult(0, _NOT_CACHEABLE, Status(code, message))


def _combine_check(
    names: list[str], results: list[CheckResult | None]
) -> tuple[Status, timedelta, int, dict[str, str]]:
    if not results:
        return Status(), DEFAULT_VALID_DURATION, DEFAULT_VALID_USE_COUNT, {}
    code = Code.OK
    messages: list[str] = []
    valid_duration: timedelta | None = None
    valid_use_count: int | None = None
    headers: dict[str, str] = {}
    for name, result in zip(names, results, strict=True):
        assert result is not None
        if valid_duration is None or result.valid_duration < valid_duration:
            valid_duration = result.valid_duration
        if valid_use_count is None or result.valid_use_count < valid_use_count:
            valid_use_count = result.valid_use_count
        status = result.status
        if status.code is not Code.OK:
            if code is Code.OK:
                code = status.code
            messages.append(f"{name}:{status.message}")
        elif result.headers:
            headers.update(result.headers)
    assert valid_duration is not None
    assert valid_use_count is not None
    if code is not Code.OK:
        return Status(code, ", ".join(messages)), valid_duration, valid_use_count, {}
    return Status(), valid_duration, valid_use_count, headers
