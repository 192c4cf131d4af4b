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
from mixer.frozen import quick_init
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


@quick_init
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
    #: Precomputed plan shapes dropped to stay within their bound (see ``PlanEnforcer._shape``).
    shapes_dropped: int = 0


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
        # By plan name; an entry serves only the PlanConfig object it was made from, so a
        # reload that changes a plan makes a new one.
        self._shapes: dict[str, _PlanShape] = {}

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
        shape = self._shape(plan)
        group = shape.group(builtin)
        try:
            requests = [self._request(limit, keys, builtin, bag, group) for limit, keys in shape.limits]
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
        return self._shape(plan).group(builtin)

    def _shape(self, plan: PlanConfig) -> _PlanShape:
        shape = self._shapes.get(plan.name)
        if shape is None or shape.plan is not plan:
            if len(self._shapes) >= _MAX_SHAPES:
                # Only reloads that keep renaming plans get here; the live ones come back.
                self.stats.shapes_dropped += len(self._shapes)
                self._shapes.clear()
            shape = self._shapes[plan.name] = _PlanShape.of(plan, self.key_prefix)
        return shape

    def _request(
        self,
        limit: LimitConfig,
        keys: _LimitKeys,
        builtin: dict[str, str],
        bag: AttributeBag | None,
        group: str,
    ) -> CounterRequest:
        key = keys.prefix
        for escaped, dimension in keys.dimensions:
            key += f"/{escaped}={_escape(self._dimension(limit, dimension, builtin, bag))}"
        return CounterRequest(
            key=key,
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


#: Plans whose precomputed key parts one enforcer keeps: far more than a config defines.
_MAX_SHAPES = 1024


@dataclass(frozen=True, slots=True)
class _LimitKeys:
    """What a limit's counter keys start with, and its dimensions with their names escaped."""

    prefix: str
    dimensions: tuple[tuple[str, Dimension], ...]


@dataclass(frozen=True, slots=True)
class _PlanShape:
    """The parts of a plan's counter keys and group that only its config decides, escaped once
    rather than on every check (they were a tenth of a memquota Check's own CPU)."""

    plan: PlanConfig
    group_prefix: str
    #: The built-in dimensions every limit counts by, as (name, escaped name).
    group_names: tuple[tuple[str, str], ...]
    limits: tuple[tuple[LimitConfig, _LimitKeys], ...]

    @classmethod
    def of(cls, plan: PlanConfig, key_prefix: str) -> _PlanShape:
        common = [d.name for d in plan.limits[0].dimensions if d.expression is None] if plan.limits else []
        for limit in plan.limits[1:]:
            names = {d.name for d in limit.dimensions if d.expression is None}
            common = [name for name in common if name in names]
        head = f"{key_prefix}{_escape(plan.name)}"
        limits = tuple(
            (
                limit,
                _LimitKeys(
                    f"{head}/{_escape(limit.name)}",
                    tuple((_escape(d.name), d) for d in limit.dimensions),
                ),
            )
            for limit in plan.limits
        )
        return cls(plan, head, tuple((name, _escape(name)) for name in common), limits)

    def group(self, builtin: dict[str, str]) -> str:
        key = self.group_prefix
        for name, escaped in self.group_names:
            key += f"/{escaped}={_escape(builtin.get(name, ''))}"
        return key


#: What ``quote(text, safe="")`` leaves as it is: RFC 3986's unreserved characters.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _escape(text: str) -> str:
    # Names, subjects and most dimension values need no escaping, and quote() costs as much for
    # them as for text that does: one pass in C over the characters settles it.
    if _UNRESERVED.issuperset(text):
        return text
    return quote(text, safe="")
