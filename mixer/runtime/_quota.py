"""The quota part of a Check: requested quotas to the quota rules' handlers, answers combined."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import cast

from mixer.adapter import QuotaArgs, QuotaHandler, QuotaResult
from mixer.attributes import AttributeMatch, TrackingBag
from mixer.decision import DEFAULT_VALID_DURATION, QuotaOutcome, QuotaRequest
from mixer.runtime._calls import HandlerCalls, failed_quota
from mixer.runtime._index import QuotaRule, Scoped, identity_namespace
from mixer.status import Code, Status
from mixer.templates import QuotaInstance


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


_Pending = tuple[_QuotaPlan, int, QuotaHandler, QuotaInstance, QuotaArgs]


class QuotaDispatch:
    """Dispatches the quotas of a Check whose precondition passed; never caches an answer."""

    __slots__ = ("_calls", "_index", "_logger")

    def __init__(
        self, index: Mapping[str, Scoped[QuotaRule]], calls: HandlerCalls, logger: logging.Logger
    ) -> None:
        self._index = index
        self._calls = calls
        self._logger = logger

    async def run(
        self,
        tracking: TrackingBag,
        quotas: Mapping[str, QuotaRequest],
        deduplication_id: str,
        deadline: float | None,
    ) -> dict[str, QuotaOutcome]:
        outcomes: dict[str, QuotaOutcome] = {}
        plans: list[_QuotaPlan] = []
        pending: list[_Pending] = []
        for quota_name, request in quotas.items():
            self._calls.stats.quota_calls += 1
            scoped = self._index.get(quota_name.lower())
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
                if rule.match is not None and not self._calls.matches(rule.match, tracking, rule.name):
                    continue
                self._select(rule, tracking, plan, args, pending)
            plan.referenced = tracking.referenced()
            plans.append(plan)
        await self._call_all(pending, deadline)
        for plan in plans:
            outcomes[plan.quota] = plan.outcome()
        return outcomes

    def _select(
        self,
        rule: QuotaRule,
        tracking: TrackingBag,
        plan: _QuotaPlan,
        args: QuotaArgs,
        pending: list[_Pending],
    ) -> None:
        for action in rule.actions:
            plan.names.append(action.handler_name)
            try:
                instance = action.build(tracking)
            except Exception as exc:
                self._calls.stats.instance_errors += 1
                self._logger.debug("instance %s failed to build: %s", action.instance_name, exc)
                plan.results.append(failed_quota(Code.INTERNAL, f"instance {action.instance_name}: {exc}"))
                continue
            # Varieties were checked at build time: quota templates build QuotaInstances.
            pending.append((plan, len(plan.results), action.handler, cast(QuotaInstance, instance), args))
            plan.results.append(None)

    async def _call_all(self, pending: list[_Pending], deadline: float | None) -> None:
        call = self._calls.call_quota
        if len(pending) == 1:
            plan, slot, handler, instance, args = pending[0]
            plan.results[slot] = await call(plan.names[slot], handler, instance, args, deadline)
        elif pending:
            answers = await asyncio.gather(
                *(
                    call(plan.names[slot], handler, instance, args, deadline)
                    for plan, slot, handler, instance, args in pending
                )
            )
            for (plan, slot, _, _, _), answer in zip(pending, answers, strict=True):
                plan.results[slot] = answer
