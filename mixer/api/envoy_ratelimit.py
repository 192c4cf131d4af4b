"""Envoy's rate limit service API (``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit``).

Envoy's rate limit filters send a domain and a list of descriptors (each a list of key/value
entries built by the route's rate limit actions) and expect one status per descriptor. Each
descriptor is decided by one runtime Check (in request order) of a bag holding only
(:func:`descriptor_attributes`):

- ``ratelimit.domain`` (STRING): the request's domain;
- ``ratelimit.descriptor`` (STRING_MAP): the descriptor's entries (a repeated key keeps its last value);
- ``ratelimit.hits_addend`` (INT64): the units this descriptor asks for (the descriptor's own
  ``hits_addend``, else the request's, else 1);

with one Mixer quota named after the domain, for that many units. Config decides the rest: quota
rules whose instance is named like the domain map descriptor entries to dimensions (memquota
counts them), and check rules matched on ``ratelimit.*`` may apply plan checks
(``plancheck`` with ``api_key: ratelimit.descriptor["api_key"]``). Check rules that match every
bag apply to descriptors too; scope them (docs/envoy.md).

A descriptor is OVER_LIMIT when the quota granted less than asked or the precondition was denied
for a policy reason; its ``current_limit``, ``limit_remaining`` and ``duration_until_reset`` come
from the rate limits of plan checks (the limit that refused the request, else the one with the
least left). A Mixer quota that refused gives no limit figures: its ``duration_until_reset`` is
the quota answer's valid duration when it has one (memquota, as Mixer's, answers a refusal with
none: no duration, and no ``Retry-After`` from it). An over-limit answer carries ``Retry-After``
when some figure gives one; Envoy derives its own ``x-ratelimit-*`` headers from the statuses.
An OK answer passes the plan headers (``x-mixer-plan``, ...) on as ``request_headers_to_add``.

A verdict the runtime could not reach (INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, ...) ends the
call with that gRPC status so Envoy applies ``failure_mode_deny``; so do a malformed request
(INVALID_ARGUMENT), an empty domain (INVALID_ARGUMENT) and overload (UNAVAILABLE).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import grpc

from mixer.api._details import retry_after_seconds
from mixer.api._envelope import CallFailure, Lease
from mixer.api._envoy import FAILURE_CODES, EnvoyRequestError, check_limits, parse
from mixer.api._grpc import GrpcServicer, deadline_failure, expired, time_budget
from mixer.attributes import AttributeBag, AttributeValue
from mixer.decision import CheckOutcome, QuotaRequest, RateLimitInfo
from mixer.proto.envoy.config.core.v3.base_pb2 import HeaderValue
from mixer.proto.envoy.extensions.common.ratelimit.v3.ratelimit_pb2 import RateLimitDescriptor
from mixer.proto.envoy.service.ratelimit.v3.rls_pb2 import RateLimitRequest, RateLimitResponse
from mixer.status import Code

if TYPE_CHECKING:
    from mixer.api._registry import ServiceContext

__all__ = [
    "API",
    "DESCRIPTOR",
    "DOMAIN",
    "HITS_ADDEND",
    "SERVICE_NAME",
    "SHOULD_RATE_LIMIT_METHOD",
    "DescriptorVerdict",
    "EnvoyRateLimitService",
    "build_rate_limit_response",
    "descriptor_attributes",
    "descriptor_verdict",
    "grpc_service",
]

SERVICE_NAME: Final = "envoy.service.ratelimit.v3.RateLimitService"
SHOULD_RATE_LIMIT_METHOD: Final = f"/{SERVICE_NAME}/ShouldRateLimit"
#: The ``api`` label of this service's metrics.
API: Final = "envoy_ratelimit"

DOMAIN: Final = "ratelimit.domain"
DESCRIPTOR: Final = "ratelimit.descriptor"
HITS_ADDEND: Final = "ratelimit.hits_addend"

_OK: Final = RateLimitResponse.OK
_OVER_LIMIT: Final = RateLimitResponse.OVER_LIMIT
_Unit = RateLimitResponse.RateLimit.Unit
#: Envoy's limit units, shortest first.
_UNITS: Final = (
    (1.0, _Unit.SECOND),
    (60.0, _Unit.MINUTE),
    (3600.0, _Unit.HOUR),
    (86400.0, _Unit.DAY),
    (7 * 86400.0, _Unit.WEEK),
)
_UINT32_MAX: Final = 2**32 - 1
#: Calendar windows (plan limits ``per: month``) vary in length.
_MONTH: Final = (28 * 86400.0, 31 * 86400.0)
_YEAR: Final = (365 * 86400.0, 366 * 86400.0)


@dataclass(frozen=True, slots=True)
class DescriptorVerdict:
    """The answer for one descriptor.

    ``limit`` is the rate limit to advertise (None: no figures); ``reset`` the seconds until the
    limit is whole again; ``retry_after`` the seconds until a refused request could pass.
    ``headers`` are request headers an OK answer adds (the caller's plan).
    """

    over_limit: bool
    limit: RateLimitInfo | None = None
    reset: float | None = None
    retry_after: float | None = None
    headers: tuple[tuple[str, str], ...] = ()


def descriptor_attributes(
    domain: str, descriptor: RateLimitDescriptor, hits: int
) -> dict[str, AttributeValue]:
    """The attributes of one descriptor: ``ratelimit.domain``, ``.descriptor`` and ``.hits_addend``."""
    return {
        DOMAIN: domain,
        DESCRIPTOR: {entry.key: entry.value for entry in descriptor.entries},
        HITS_ADDEND: hits,
    }


def descriptor_hits(request: RateLimitRequest, descriptor: RateLimitDescriptor) -> int:
    """The units a descriptor asks for: its own hits_addend, else the request's, else 1."""
    if descriptor.HasField("hits_addend"):
        return int(descriptor.hits_addend.value)
    return int(request.hits_addend) or 1


def descriptor_verdict(outcome: CheckOutcome, quota: str, amount: int) -> DescriptorVerdict:
    """The verdict for one descriptor from the outcome of its Check.

    :raises CallFailure: the runtime could not decide (a failure code, not a refusal).
    """
    status = outcome.status
    if status.code in FAILURE_CODES:
        raise CallFailure(status.code, status.message)
    over_limit = not status.ok
    quota_wait: float | None = None
    grant = outcome.quotas.get(quota)
    if grant is not None:
        if grant.status.code in FAILURE_CODES:
            raise CallFailure(grant.status.code, grant.status.message)
        if not grant.status.ok or grant.granted_amount < amount:
            over_limit = True
            # A refusal valid for no time (memquota's, as Mixer's) says nothing of when to retry.
            quota_wait = grant.valid_duration.total_seconds() or None
    refused = [rl for rl in outcome.rate_limits if rl.retry_after is not None]
    limit: RateLimitInfo | None = None
    if refused:
        limit = max(refused, key=lambda rl: rl.retry_after or 0.0)
    elif outcome.rate_limits:
        limit = min(outcome.rate_limits, key=lambda rl: rl.remaining)
    reset = limit.reset if limit is not None else quota_wait
    retry_after: float | None = None
    if over_limit:
        waits = [w for w in (limit.retry_after if limit is not None else None, quota_wait) if w is not None]
        retry_after = max(waits) if waits else None
    headers = tuple(outcome.headers.items()) if not over_limit else ()
    return DescriptorVerdict(over_limit, limit, reset, retry_after, headers)


def build_rate_limit_response(verdicts: Sequence[DescriptorVerdict]) -> RateLimitResponse:
    """The RateLimitResponse for the verdicts of a request's descriptors, in request order."""
    response = RateLimitResponse()
    over_limit = any(v.over_limit for v in verdicts)
    response.overall_code = _OVER_LIMIT if over_limit else _OK
    for verdict in verdicts:
        status = response.statuses.add()
        status.code = _OVER_LIMIT if verdict.over_limit else _OK
        if verdict.limit is not None:
            per_unit, unit = limit_per_unit(verdict.limit.limit, verdict.limit.window)
            status.current_limit.requests_per_unit = per_unit
            status.current_limit.unit = unit
            status.limit_remaining = min(max(verdict.limit.remaining, 0), _UINT32_MAX)
        if verdict.reset is not None and math.isfinite(verdict.reset):
            status.duration_until_reset.FromTimedelta(timedelta(seconds=_whole(verdict.reset)))
    if over_limit:
        wait = retry_after_seconds(
            v.retry_after for v in verdicts if v.over_limit and v.retry_after is not None
        )
        if wait is not None:
            response.response_headers_to_add.append(HeaderValue(key="retry-after", value=str(wait)))
    else:
        added: dict[str, str] = {}
        for verdict in verdicts:
            added.update(verdict.headers)
        response.request_headers_to_add.extend(HeaderValue(key=k, value=v) for k, v in added.items())
    return response


def limit_per_unit(limit: int, window: float) -> tuple[int, RateLimitResponse.RateLimit.Unit]:
    """A limit of ``limit`` per ``window`` seconds in Envoy's terms: requests per unit.

    A window that is a unit keeps the numbers (calendar months and years included); any other is
    scaled to the shortest unit that holds the window (``10`` per ``30s`` is ``20`` per MINUTE),
    or to a WEEK when none does, rounded down.
    """
    limit = max(limit, 0)
    if _MONTH[0] <= window <= _MONTH[1]:
        return min(limit, _UINT32_MAX), _Unit.MONTH
    if _YEAR[0] <= window <= _YEAR[1]:
        return min(limit, _UINT32_MAX), _Unit.YEAR
    seconds, unit = next(((s, u) for s, u in _UNITS if window <= s), _UNITS[-1])
    scaled = limit if window == seconds or window <= 0 else math.floor(limit * seconds / window)
    return min(scaled, _UINT32_MAX), unit


def _whole(seconds: float) -> int:
    return max(math.ceil(seconds - 1e-9), 0)


class EnvoyRateLimitService(GrpcServicer):
    """ShouldRateLimit for one server process; :meth:`rpc_handler` registers it with grpc.aio."""

    api = API
    methods = ("ShouldRateLimit",)
    title = "rate limit service"

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME, {"ShouldRateLimit": grpc.unary_unary_rpc_method_handler(self.should_rate_limit)}
        )

    async def should_rate_limit(self, request: bytes, context: Any) -> bytes:
        return await self._calls.run(
            self._methods["ShouldRateLimit"], "ShouldRateLimit", context, self._should_rate_limit, request
        )

    async def _should_rate_limit(self, lease: Lease, context: Any, request: bytes) -> bytes:
        runtime = lease.runtime()
        message: RateLimitRequest = parse(RateLimitRequest, request)
        domain = message.domain
        if not domain:
            raise EnvoyRequestError("RateLimitRequest has no domain")
        limits = self._limits
        if len(message.descriptors) > limits.max_map_entries:
            raise EnvoyRequestError(
                f"RateLimitRequest has {len(message.descriptors)} descriptors: "
                f"exceeds max_map_entries ({limits.max_map_entries})"
            )
        bags = []
        for descriptor in message.descriptors:
            hits = descriptor_hits(message, descriptor)
            attrs = descriptor_attributes(domain, descriptor, hits)
            check_limits(attrs, limits, "RateLimitRequest descriptor")
            bags.append((AttributeBag(attrs), hits))
        # Each call spends afresh: RLS has no retry identity, and descriptors never share one.
        call_id = uuid.uuid4().hex
        verdicts: list[DescriptorVerdict] = []
        for index, (bag, hits) in enumerate(bags):
            timeout = time_budget(limits, context)
            if timeout <= 0:
                raise deadline_failure()
            outcome = await runtime.check(
                bag, {domain: QuotaRequest(hits)}, f"{call_id}/{index}/", timeout=timeout
            )
            if outcome.status.code is Code.DEADLINE_EXCEEDED and expired(context):
                raise deadline_failure()
            verdicts.append(descriptor_verdict(outcome, domain, hits))
        answer: bytes = build_rate_limit_response(verdicts).SerializeToString()
        return answer


def grpc_service(context: ServiceContext) -> grpc.GenericRpcHandler:
    """The rate limit service for a server (see :mod:`mixer.api._registry`)."""
    return EnvoyRateLimitService.service(context)
