"""Plan enforcement: one check of a subject on a plan becomes one all-or-nothing allocation.

Independent of where counters live: the in-memory and Redis quota adapters both hand their
:class:`~mixer.quota.CounterStore` to a :class:`PlanEnforcer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from mixer.attributes import AttributeBag
from mixer.decision import RateLimitInfo
from mixer.plans._model import Dimension, LimitConfig, Overage, PlanConfig
from mixer.quota import Algorithm, CounterRequest, CounterStore
from mixer.status import Code, Status
from mixer.statusboard import USAGE

#: Request headers an allowed check adds (the upstream learns who called on which plan).
PLAN_HEADER = "x-mixer-plan"
SUBJECT_HEADER = "x-mixer-subject"
#: Names the shadow limits a request went over, comma-separated.
OVERAGE_HEADER = "x-mixer-overage"


class PlanEvaluationError(Exception):
    """A limit's cost or dimension expression failed on the request."""


@dataclass(frozen=True, slots=True)
class PlanVerdict:
    """What a plan check decided: the status, request headers to add, the limits applied."""

    status: Status
    headers: dict[str, str] = field(default_factory=dict)
    rate_limits: tuple[RateLimitInfo, ...] = ()
    #: Shadow limits the request went over (it was allowed).
    overages: tuple[str, ...] = ()
    replayed: bool = False


@dataclass(slots=True)
class PlanStats:
    """Counters for self-metrics, keyed by ``plan/limit`` (bounded by the configured plans)."""

    checks: int = 0
    denied: dict[str, int] = field(default_factory=dict)
    shadow_overages: dict[str, int] = field(default_factory=dict)
    evaluation_errors: int = 0


class PlanEnforcer:
    """Allocates every limit of a plan at once in a counter store.

    Counter keys are ``<key_prefix><plan>/<limit>`` followed by ``/<dimension>=<value>`` for each
    of the limit's dimensions, values percent-encoded so that no two keys collide.
    ``dedup_seconds`` is how long a check's answer is replayed for the same deduplication id.
    """

    def __init__(
        self,
        store: CounterStore,
        *,
        dedup_seconds: float = 1.0,
        key_prefix: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.dedup_seconds = dedup_seconds
        self.key_prefix = key_prefix
        self.clock = clock
        self.stats = PlanStats()

    async def enforce(
        self,
        plan: PlanConfig,
        subject: str,
        *,
        api: str = "",
        operation: str = "",
        bag: AttributeBag | None = None,
        deduplication_id: str = "",
    ) -> PlanVerdict:
        """Decide one check. Cost and dimension expressions read ``bag`` (the request's attributes).

        :raises Exception: the store cannot answer.
        """
        self.stats.checks += 1
        builtin = {"subject": subject, "api": api, "operation": operation}
        group = self.counter_group(plan, builtin)
        try:
            requests = [self._request(plan, limit, builtin, bag, group) for limit in plan.limits]
        except PlanEvaluationError as exc:
            self.stats.evaluation_errors += 1
            return PlanVerdict(Status(Code.INTERNAL, f'plan "{plan.name}": {exc}'))
        allocation = await self.store.allocate(
            requests, deduplication_id=deduplication_id, dedup_seconds=self.dedup_seconds
        )
        now = self.clock()
        rate_limits: list[RateLimitInfo] = []
        denied: list[LimitConfig] = []
        overages: list[str] = []
        for limit, request, decision in zip(plan.limits, requests, allocation.decisions, strict=True):
            if not request.enforce:
                if not decision.allowed:
                    overages.append(limit.name)
                # A limit on trial is not advertised: clients would slow down for nothing.
                continue
            refused = not allocation.allowed and not decision.allowed
            if refused:
                denied.append(limit)
            rate_limits.append(
                RateLimitInfo(
                    limit.name,
                    limit.max,
                    decision.remaining,
                    decision.reset_after,
                    limit.window_length(now),
                    decision.retry_after if refused else None,
                )
            )
        if not allocation.replayed:
            self._count(plan, denied, overages)
            USAGE.count(plan.name, subject, denied=bool(denied))
        if denied:
            reasons = ", ".join(
                f'limit "{limit.name}" exceeded ({limit.max} per {limit.per})' for limit in denied
            )
            return PlanVerdict(
                Status(Code.RESOURCE_EXHAUSTED, f'plan "{plan.name}": {reasons}'),
                rate_limits=tuple(rate_limits),
                replayed=allocation.replayed,
            )
        headers = {PLAN_HEADER: plan.name, SUBJECT_HEADER: subject}
        if overages:
            headers[OVERAGE_HEADER] = ",".join(overages)
        return PlanVerdict(Status(), headers, tuple(rate_limits), tuple(overages), allocation.replayed)

    def counter_key(self, plan: PlanConfig, limit: LimitConfig, values: list[tuple[str, str]]) -> str:
        parts = [f"{self.key_prefix}{_escape(plan.name)}/{_escape(limit.name)}"]
        parts.extend(f"{_escape(name)}={_escape(value)}" for name, value in values)
        return "/".join(parts)

    def counter_group(self, plan: PlanConfig, builtin: dict[str, str]) -> str:
        """The group of a check's counters (one hash slot on a Redis Cluster): the plan and the
        built-in dimensions every limit of it counts by (by default ``subject``), so that the
        counters of different subjects spread over the cluster while one counter keeps one group.
        """
        common = [d.name for d in plan.limits[0].dimensions if d.expression is None] if plan.limits else []
        for limit in plan.limits[1:]:
            names = {d.name for d in limit.dimensions if d.expression is None}
            common = [name for name in common if name in names]
        parts = [f"{self.key_prefix}{_escape(plan.name)}"]
        parts.extend(f"{_escape(name)}={_escape(builtin.get(name, ''))}" for name in common)
        return "/".join(parts)

    def _request(
        self,
        plan: PlanConfig,
        limit: LimitConfig,
        builtin: dict[str, str],
        bag: AttributeBag | None,
        group: str,
    ) -> CounterRequest:
        values = [(d.name, self._dimension(limit, d, builtin, bag)) for d in limit.dimensions]
        return CounterRequest(
            key=self.counter_key(plan, limit, values),
            amount=self._cost(limit, bag),
            limit=limit.max,
            algorithm=limit.algorithm,
            window=limit.window,
            period=limit.period,
            bucket_seconds=limit.bucket_seconds if limit.algorithm is Algorithm.ROLLING_WINDOW else 0.0,
            burst=limit.burst,
            enforce=limit.overage is Overage.REJECT,
            group=group,
        )

    @staticmethod
    def _cost(limit: LimitConfig, bag: AttributeBag | None) -> int:
        if limit.cost is None:
            return 1
        if bag is None:
            raise PlanEvaluationError(f'limit "{limit.name}": cost needs the request attributes')
        try:
            cost = limit.cost.evaluate(bag)
        except Exception as exc:
            raise PlanEvaluationError(f'limit "{limit.name}": cost {limit.cost.text!r}: {exc}') from exc
        if not isinstance(cost, int) or isinstance(cost, bool) or cost < 0:
            raise PlanEvaluationError(f'limit "{limit.name}": cost {limit.cost.text!r} gave {cost!r}')
        return cost

    @staticmethod
    def _dimension(
        limit: LimitConfig, dimension: Dimension, builtin: dict[str, str], bag: AttributeBag | None
    ) -> str:
        if dimension.expression is None:
            return builtin.get(dimension.name, "")
        if bag is None:
            raise PlanEvaluationError(
                f'limit "{limit.name}": dimension {dimension.name} needs the request attributes'
            )
        try:
            value = dimension.expression.evaluate(bag)
        except Exception as exc:
            raise PlanEvaluationError(
                f'limit "{limit.name}": dimension {dimension.name} {dimension.expression.text!r}: {exc}'
            ) from exc
        return value if isinstance(value, str) else str(value)

    def _count(self, plan: PlanConfig, denied: list[LimitConfig], overages: list[str]) -> None:
        stats = self.stats
        for limit in denied:
            key = f"{plan.name}/{limit.name}"
            stats.denied[key] = stats.denied.get(key, 0) + 1
        for name in overages:
            key = f"{plan.name}/{name}"
            stats.shadow_overages[key] = stats.shadow_overages.get(key, 0) + 1


def _escape(text: str) -> str:
    return quote(text, safe="")
