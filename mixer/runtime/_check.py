"""The precondition part of a Check: attribute producers, check rules, their handlers, the answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta

from mixer.adapter import CheckResult
from mixer.attributes import AttributeBag, AttributeManifest, AttributeValue, TrackingBag
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
from mixer.runtime._calls import HandlerCalls, PendingCheck
from mixer.runtime._check_cache import CachedPrecondition, CacheHit, CheckCache, Refs
from mixer.runtime._generate import GenerateRule, generate
from mixer.runtime._index import CheckAction, CheckRule, Scoped, identity_namespace
from mixer.runtime._produced import ProducedBag, conforming
from mixer.runtime._quota import QuotaDispatch
from mixer.runtime._select import CheckSelection, Deferred
from mixer.status import Code, Status

_REPLACE = HeaderOperationKind.REPLACE
_NOT_CACHED = timedelta(0)


class CheckDispatch:
    """Decides Checks for one runtime; quotas go to its :class:`QuotaDispatch`."""

    __slots__ = (
        "_cache",
        "_calls",
        "_check",
        "_generate",
        "_generation",
        "_logger",
        "_manifest",
        "_produce",
        "_quotas",
        "_select",
    )

    def __init__(
        self,
        *,
        check: Scoped[CheckRule],
        produce: Scoped[CheckRule],
        generate: Scoped[GenerateRule],
        quotas: QuotaDispatch,
        manifest: AttributeManifest,
        calls: HandlerCalls,
        logger: logging.Logger,
        cache: CheckCache,
        generation: int,
    ) -> None:
        self._check = check
        self._produce = produce
        self._generate = generate
        self._quotas = quotas
        self._manifest = manifest
        self._calls = calls
        self._select = CheckSelection(calls, logger)
        self._logger = logger
        self._cache = cache
        self._generation = generation

    async def decide(
        self,
        bag: AttributeBag,
        quotas: Mapping[str, QuotaRequest],
        deduplication_id: str,
        timeout: float | None,
    ) -> CheckOutcome:
        stats = self._calls.stats
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
        hit = None
        if not results or all(r is not None and r.status.code is Code.OK for r in results):
            hit = await self._preconditions(
                tracking, deduplication_id, names, results, request_ops, response_ops, deadline
            )

        status, valid_duration, valid_use_count, headers = _combine_check(names, results)
        if hit is not None:
            # A cached answer is only valid for what is left of its validity.
            valid_duration = min(valid_duration, timedelta(seconds=hit.seconds))
            valid_use_count = min(valid_use_count, hit.uses)
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
            quota_outcomes = await self._quotas.run(tracking, quotas, deduplication_id, deadline)

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
        pending: list[PendingCheck] = []
        self._select.select(rules, tracking, deduplication_id, names, results, pending, None, None, None)
        await self._calls.run_checks(pending, names, results, deadline)
        produced: dict[str, AttributeValue] = {}
        for index, _, _ in pending:
            result = results[index]
            if result is None or result.status.code is not Code.OK or not result.attributes:
                continue
            kept, dropped = conforming(result.attributes, self._manifest)
            if dropped:
                self._calls.stats.count_handler_error(names[index])
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
    ) -> CacheHit | None:
        """The check rules and their handlers that spend nothing (answered from the cache when
        it has them), then the plan checks. Returns the cache hit the answer came from, if any."""
        base = len(results)
        spending: list[tuple[int, CheckAction]] = []
        deferred: list[Deferred] = []
        cache = self._cache if self._cache.serves(self._generation) else None
        hit = cache.lookup(tracking._values) if cache is not None else None
        if hit is not None:
            entry = hit.entry
            names.extend(entry.names)
            results.extend(entry.results)
            request_ops.extend(entry.request_ops)
            response_ops.extend(entry.response_ops)
            tracking._refs.update(entry.refs)
            spending = [(base + slot, action) for slot, action in entry.spending]
        else:
            ops_base = (len(request_ops), len(response_ops))
            check = self._check
            rules = check.select(identity_namespace(tracking)) if check.needs_namespace else check.default
            pending: list[PendingCheck] = []
            self._select.select(
                rules,
                tracking,
                deduplication_id,
                names,
                results,
                pending,
                spending,
                request_ops,
                response_ops,
                deferred,
            )
            # What the plan checks read is theirs: the cached part is keyed without it.
            refs = tuple(tracking._refs.items())
            # A handler may say its answers changed while others are awaited.
            epoch = cache.epoch if cache is not None else 0
            await self._calls.run_checks(pending, names, results, deadline)
            if cache is not None and not deferred:
                cacheable = _cacheable(
                    names[base:],
                    results[base:],
                    [(index - base, action) for index, action in spending],
                    request_ops[ops_base[0] :],
                    response_ops[ops_base[1] :],
                    refs,
                )
                if cacheable is not None:
                    cache.store(tracking._values, *cacheable, epoch)

        # Plan checks spend quota, so like Mixer's quotas they run only once every other
        # precondition has passed: a request that a deny list refuses must not use up a plan.
        plans: list[PendingCheck] = []
        for index, action in spending:
            self._select.build(action, index, tracking, deduplication_id, results, plans)
        if plans:
            if all(r is None or r.status.code is Code.OK for r in results):
                await self._calls.run_checks(plans, names, results, deadline)
            else:
                skipped = {index for index, _, _ in plans}
                # In place: the caller owns the lists.
                names[:] = [n for i, n in enumerate(names) if i not in skipped]
                results[:] = [r for i, r in enumerate(results) if i not in skipped]
                deferred = []
        for rule, outputs in deferred:
            self._select.output_headers(rule, outputs, tracking, results, request_ops, response_ops)
        return hit


def _cacheable(
    names: list[str],
    results: list[CheckResult | None],
    spending: list[tuple[int, CheckAction]],
    request_ops: list[HeaderOperationResult],
    response_ops: list[HeaderOperationResult],
    refs: Refs,
) -> tuple[CachedPrecondition, float] | None:
    """The precondition's answer without its plan checks, and for how many seconds it may be
    cached; None when its handlers do not allow it."""
    slots = {index for index, _ in spending}
    kept = tuple(None if i in slots else result for i, result in enumerate(results))
    answered = [result for result in kept if result is not None]
    duration = min((r.valid_duration for r in answered), default=DEFAULT_VALID_DURATION)
    uses = min((r.valid_use_count for r in answered), default=DEFAULT_VALID_USE_COUNT)
    # The answer given now is the first use.
    if duration <= _NOT_CACHED or uses <= 1:
        return None
    entry = CachedPrecondition(
        names=tuple(names),
        results=kept,
        spending=tuple(spending),
        request_ops=tuple(request_ops),
        response_ops=tuple(response_ops),
        refs=refs,
        expires=0.0,
        uses=uses - 1,
    )
    return entry, duration.total_seconds()


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
