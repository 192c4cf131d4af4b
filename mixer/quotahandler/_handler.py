"""The quota handler every counter-store adapter builds on: Mixer quotas and plan checks against
one :class:`~mixer.quota.CounterStore`; the adapter supplies the store (memquota's in memory,
redisquota's in Redis)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from mixer.adapter import CheckHandler, CheckResult, HandlerEnv, QuotaArgs, QuotaHandler, QuotaResult
from mixer.plans import (
    PLAN_HEADER,
    SUBJECT_HEADER,
    CachedKeyStore,
    InlineKeyStore,
    PlanConfig,
    PlanEnforcer,
    SubjectResolver,
)
from mixer.quota import Algorithm, CounterRequest, CounterStore, EpochWindow, MemoryCounterStore
from mixer.quotahandler._params import (
    FailurePolicy,
    OverrideParams,
    QuotaHandlerParams,
    QuotaParams,
    RateLimitAlgorithm,
)
from mixer.redact import redact_text
from mixer.status import Code, Status
from mixer.templates import ApiKeyInstance, Instance, PlanCheckInstance, QuotaInstance, field_is_verified

#: A plan answer must not be cached by the proxy: a cached OK would let requests by uncounted.
#: (Mixer's own quotas were allocated on every Check, apart from the precondition cache.)
PLAN_VALID_DURATION = timedelta(0)
PLAN_VALID_USE_COUNT = 1
#: Quota instance names resolved to their configured quota, kept at most (names come from config).
MAX_RESOLVED_NAMES = 4096
#: Mixer memquota's rolling window step (ticksPerSecond = 10).
MIXER_TICK_SECONDS = 0.1
#: Longer windows get longer steps, so that one counter never holds more buckets than this.
MAX_DEFAULT_BUCKETS = 600
#: The message of a check or quota refused because the counter store could not answer.
STORE_UNAVAILABLE = "quota store unavailable"


@dataclass(frozen=True, slots=True)
class _Limit:
    """A quota's effective limit for one instance: after overrides."""

    max_amount: int
    valid_duration: timedelta


class CounterStoreHandler(CheckHandler, QuotaHandler):
    """Quota (Mixer semantics) and plancheck (plan tiers) against one :class:`CounterStore`.

    Shared by the counter-store adapters: memquota hands it a :class:`MemoryCounterStore`,
    redisquota a Redis store. ``failure_policy`` None lets a store error propagate (the runtime
    answers INTERNAL); a store that can fail sets it, and a failed allocation is then granted
    (``FAIL_OPEN``) or answered UNAVAILABLE (``FAIL_CLOSED``), counted in ``store_failures`` and
    ``fail_open_grants``.
    """

    failure_policy: FailurePolicy | None = None
    #: The algorithm of a quota that names none (Mixer's redisquota: FIXED_WINDOW).
    default_algorithm = RateLimitAlgorithm.FIXED_WINDOW
    #: Mixer's memquota: windows of whole seconds sliding in 100 ms ticks; a refused allocation
    #: (nothing granted, not best effort) and a request for nothing are valid for no time.
    mixer_memquota = False

    def __init__(
        self,
        config: QuotaHandlerParams,
        env: HandlerEnv,
        store: CounterStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.env = env
        self.plans: Mapping[str, PlanConfig] = env.plans
        self.store = store
        dedup_seconds = config.min_deduplication_duration.total_seconds()
        self.dedup_seconds = dedup_seconds
        self.enforcer = PlanEnforcer(store, dedup_seconds=dedup_seconds, key_prefix="plan/", clock=clock)
        _check_plans(config, env.plans)
        try:
            self.resolver = SubjectResolver.build(config.subjects, env.logger, env.key_stores)
        except ValueError as exc:
            raise ValueError(f"subjects.keys: {exc}") from exc
        _bound_key_caches(self.resolver)
        # Counters in memory and keys inline: a check never waits on anything outside the process.
        self.check_waits = not (
            isinstance(store, MemoryCounterStore)
            and all(isinstance(key_store, InlineKeyStore) for key_store in self.resolver.stores)
        )
        self._quotas = {quota.name.lower(): quota for quota in config.quotas}
        self._resolved: dict[str, QuotaParams | None] = {}
        self.resolved_drops = 0
        self.unknown_plans = 0
        self.store_failures = 0
        self.fail_open_grants = 0
        # Logged once per outage (and once on recovery), not once per refused request.
        self._store_down = False
        self._started = False
        self._stopped = False

    async def start(self) -> None:
        await self.resolver.start()
        self._started = True

    async def shutdown(self, timeout: float) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.resolver.shutdown(timeout)

    def _store_failed(self, exc: Exception) -> bool:
        """Count a failed allocation; True to grant (fail open). Re-raises without a policy."""
        if self.failure_policy is None:
            raise exc
        self.store_failures += 1
        if not self._store_down:
            self._store_down = True
            self.env.logger.warning(
                "%s: quota store unavailable, %s until it answers again: %r",
                self.env.handler_name,
                "granting uncounted" if self.failure_policy is FailurePolicy.FAIL_OPEN else "refusing",
                exc,
            )
        if self.failure_policy is FailurePolicy.FAIL_OPEN:
            self.fail_open_grants += 1
            return True
        return False

    def _store_answered(self) -> None:
        if self._store_down:
            self._store_down = False
            self.env.logger.warning(
                "%s: quota store answers again (%d failed allocations in all)",
                self.env.handler_name,
                self.store_failures,
            )

    # -- plancheck ------------------------------------------------------------------------------

    async def handle_check(self, instance: Instance) -> CheckResult:
        plan_verified = principal_verified = False
        if isinstance(instance, PlanCheckInstance):
            api_key, claim, principal = instance.api_key, instance.plan, instance.principal
            api, operation = instance.api, instance.operation
            if not api_key:
                # A plan or principal the caller merely asserted must not pick a plan or a counter.
                trusted = self.resolver.trusted
                plan_verified = field_is_verified(instance, "plan", trusted)
                principal_verified = field_is_verified(instance, "principal", trusted)
        elif isinstance(instance, ApiKeyInstance):
            # Istio's apikey template names the key and the API; the key alone decides the plan.
            api_key, claim, principal = instance.api_key, "", ""
            api, operation = instance.api, instance.api_operation
        else:
            return _check(
                Status(Code.INTERNAL, f"{self.env.handler_name} cannot check a {instance.template} instance")
            )
        try:
            who = await self.resolver.resolve(
                api_key or "",
                claim or "",
                principal or "",
                plan_verified=plan_verified,
                principal_verified=principal_verified,
            )
        except Exception as exc:
            # The caller gets a generic reason; the store's error may name hosts or credentials.
            self.env.logger.warning("key store failed: %s", redact_text(repr(exc)))
            return _check(Status(Code.UNAVAILABLE, "key store unavailable"))
        if not who.ok:
            return _check(who.status)
        plan = self.plans.get(who.plan)
        if plan is None:
            self.unknown_plans += 1
            return _check(Status(Code.PERMISSION_DENIED, f'plan "{who.plan}" is not configured'))
        dedup = instance.deduplication_id + instance.name if instance.deduplication_id else ""
        try:
            verdict = await self.enforcer.enforce(
                plan,
                who.subject,
                api=api or "",
                operation=operation or "",
                bag=instance.attributes,
                deduplication_id=dedup,
            )
        except Exception as exc:
            if self._store_failed(exc):
                headers = {PLAN_HEADER: plan.name, SUBJECT_HEADER: who.subject}
                return CheckResult(Status(), PLAN_VALID_DURATION, PLAN_VALID_USE_COUNT, headers)
            return _check(Status(Code.UNAVAILABLE, STORE_UNAVAILABLE))
        self._store_answered()
        return CheckResult(
            verdict.status, PLAN_VALID_DURATION, PLAN_VALID_USE_COUNT, verdict.headers, verdict.rate_limits
        )

    # -- quota ----------------------------------------------------------------------------------

    async def handle_quota(self, instance: QuotaInstance, args: QuotaArgs) -> QuotaResult:
        quota = self._quota(instance.name)
        if quota is None:
            return QuotaResult(
                0,
                timedelta(0),
                Status(Code.INTERNAL, f"quota {instance.name} is not configured in {self.env.handler_name}"),
            )
        if args.amount < 0:
            return QuotaResult(0, timedelta(0), Status(Code.INVALID_ARGUMENT, "negative quota amount"))
        if args.amount == 0 and self.mixer_memquota:
            return QuotaResult(0, timedelta(0))
        limit = _effective(quota, instance.dimensions)
        seconds = limit.valid_duration.total_seconds()
        if (quota.rate_limit_algorithm or self.default_algorithm) is RateLimitAlgorithm.ROLLING_WINDOW:
            if self.mixer_memquota:
                seconds = float(math.ceil(seconds))
                bucket = quota.bucket_duration.total_seconds() or max(
                    MIXER_TICK_SECONDS, seconds / MAX_DEFAULT_BUCKETS
                )
            else:
                bucket = quota.bucket_duration.total_seconds() or seconds / 10
            request = CounterRequest(
                _quota_key(quota.name, instance.dimensions),
                args.amount,
                limit.max_amount,
                Algorithm.ROLLING_WINDOW,
                period=seconds,
                bucket_seconds=min(bucket, seconds),
                best_effort=args.best_effort,
            )
        else:
            request = CounterRequest(
                _quota_key(quota.name, instance.dimensions),
                args.amount,
                limit.max_amount,
                Algorithm.FIXED_WINDOW,
                window=EpochWindow(seconds),
                best_effort=args.best_effort,
            )
        try:
            allocation = await self.store.allocate(
                [request], deduplication_id=args.deduplication_id, dedup_seconds=self.dedup_seconds
            )
        except Exception as exc:
            if self._store_failed(exc):
                return QuotaResult(args.amount, limit.valid_duration)
            return QuotaResult(0, timedelta(0), Status(Code.UNAVAILABLE, STORE_UNAVAILABLE))
        self._store_answered()
        granted = allocation.decisions[0].granted
        if granted == 0 and not args.best_effort and self.mixer_memquota:
            # Mixer's memquota: a refusal is valid for no time, so the proxy asks again next time.
            return QuotaResult(0, timedelta(0))
        # OK with what was granted (nothing, when exhausted), valid for the window.
        return QuotaResult(granted, limit.valid_duration)

    def _quota(self, instance_name: str) -> QuotaParams | None:
        if instance_name in self._resolved:
            return self._resolved[instance_name]
        found = next(
            (self._quotas[alias] for alias in _aliases(instance_name) if alias in self._quotas), None
        )
        if len(self._resolved) < MAX_RESOLVED_NAMES:
            self._resolved[instance_name] = found
        else:
            self.resolved_drops += 1
        return found


def _bound_key_caches(resolver: SubjectResolver) -> None:
    """Keep the key cache in front of a store within what the store allows (``max_cache_seconds``):
    a key revoked in a shared store must stop working everywhere within that time."""
    for store in resolver.stores:
        if isinstance(store, CachedKeyStore):
            ceiling = getattr(store.inner, "max_cache_seconds", None)
            if isinstance(ceiling, int | float):
                store.ttl = min(store.ttl, float(ceiling))
                store.negative_ttl = min(store.negative_ttl, float(ceiling))


def _check(status: Status) -> CheckResult:
    return CheckResult(status, PLAN_VALID_DURATION, PLAN_VALID_USE_COUNT)


def _check_plans(config: QuotaHandlerParams, plans: Mapping[str, PlanConfig]) -> None:
    missing = [
        f"subjects.{where}: {plan!r}" for where, plan in config.subjects.plan_names() if plan not in plans
    ]
    if missing:
        known = ", ".join(sorted(plans)) or "none"
        raise ValueError(f"unknown plan(s) {'; '.join(missing)} (configured plans: {known})")


def _aliases(instance_name: str) -> list[str]:
    """The names a quota may be configured under for an instance: Istio wrote ``name``,
    ``name.namespace``, ``name.instance.namespace`` (1.1+) and ``name.quota.namespace`` (1.0)."""
    fq = instance_name.lower()
    base, _, namespace = fq.rpartition(".")
    if not base:
        return [fq]
    base = base.removesuffix(".quota")
    return list(
        dict.fromkeys(
            [fq, base, f"{base}.{namespace}", f"{base}.instance.{namespace}", f"{base}.quota.{namespace}"]
        )
    )


def _effective(quota: QuotaParams, dimensions: Mapping[str, Any]) -> _Limit:
    for override in quota.overrides:
        if _matches(override, dimensions):
            return _Limit(override.max_amount, override.valid_duration or quota.valid_duration)
    return _Limit(quota.max_amount, quota.valid_duration)


def _matches(override: OverrideParams, dimensions: Mapping[str, Any]) -> bool:
    for key, wanted in override.dimensions.items():
        if key not in dimensions or _text(dimensions[key]) != wanted:
            return False
    return True


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _quota_key(name: str, dimensions: Mapping[str, Any]) -> str:
    parts = [f"quota/{quote(name.lower(), safe='')}"]
    parts.extend(f"{quote(k, safe='')}={quote(_text(v), safe='')}" for k, v in sorted(dimensions.items()))
    return "/".join(parts)
