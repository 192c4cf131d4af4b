"""google.rpc status details for rate-limited denials, in ext_authz and istio.mixer.v1 answers."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from google.rpc.error_details_pb2 import QuotaFailure, RetryInfo  # type: ignore[import-untyped]

from mixer.api import Admission, ServiceLimits
from mixer.api._details import rate_limit_details, retry_after_seconds
from mixer.api.mixer_v1 import CHECK_METHOD, MixerV1Service
from mixer.config import load_config_text
from mixer.decision import CheckOutcome, RateLimitInfo
from mixer.defaults import embedded_config_text
from mixer.proto.istio.mixer.v1.check_pb2 import CheckResponse
from mixer.runtime import build_runtime
from mixer.server import RuntimeHolder, ServerMetrics
from mixer.status import Code, Status
from mixer.wire import encode_check_request
from tests.envoy.support import prometheus_on_a_free_port, real_registry, serve

MINUTE = RateLimitInfo("per_minute", 10, 0, 30.0, 60.0, 30.0)
DAY = RateLimitInfo("per_day", 1000, 0, 3600.5, 86400.0, 3600.5)
LEFT = RateLimitInfo("per_second", 5, 4, 1.0, 1.0)


def outcome(code: Code, *rate_limits: RateLimitInfo) -> CheckOutcome:
    return CheckOutcome(Status(code, "x"), timedelta(0), 0, rate_limits=rate_limits)


def unpacked(details: list[Any]) -> list[Any]:
    messages = []
    for detail in details:
        message = RetryInfo() if detail.Is(RetryInfo.DESCRIPTOR) else QuotaFailure()
        assert detail.Unpack(message)
        messages.append(message)
    return messages


def test_only_denials_by_rate_limits_get_details() -> None:
    assert rate_limit_details(outcome(Code.OK, LEFT)) == []
    assert rate_limit_details(outcome(Code.PERMISSION_DENIED)) == []
    # A denial for another reason, with limits that did not refuse it.
    assert rate_limit_details(outcome(Code.UNAUTHENTICATED, LEFT)) == []


def test_the_longest_wait_and_every_refusing_limit() -> None:
    retry, failure = unpacked(rate_limit_details(outcome(Code.RESOURCE_EXHAUSTED, MINUTE, LEFT, DAY)))
    assert retry.retry_delay.ToTimedelta() == timedelta(seconds=3601)
    assert [v.subject for v in failure.violations] == ["per_minute", "per_day"]
    assert failure.violations[1].description == "1000 per 86400s; 0 left, whole again in 3601s"


def test_a_wait_no_retry_can_satisfy_gives_no_retry_info() -> None:
    never = RateLimitInfo("burst", 5, 0, math.inf, 60.0, math.inf)
    (failure,) = unpacked(rate_limit_details(outcome(Code.RESOURCE_EXHAUSTED, never)))
    assert isinstance(failure, QuotaFailure)
    assert failure.violations[0].description == "5 per 60s; 0 left, whole again in never"
    assert retry_after_seconds([0.1]) == 1
    assert retry_after_seconds([]) is None


def mixer(holder: RuntimeHolder, metrics: ServerMetrics, admission: Admission, limits: ServiceLimits) -> Any:
    return MixerV1Service(holder, metrics, admission, limits)


async def test_mixer_v1_precondition_statuses_carry_the_details() -> None:
    registry = real_registry()
    runtime = build_runtime(
        load_config_text(embedded_config_text(), registry, environ=prometheus_on_a_free_port()), registry
    )
    request = encode_check_request(
        {"context.protocol": "http", "request.headers": {"x-api-key": "demo-free-key"}}
    ).SerializeToString()
    async with serve(mixer, runtime) as served:
        answers = [CheckResponse.FromString(await served.unary(CHECK_METHOD, request)) for _ in range(11)]
    assert [len(a.precondition.status.details) for a in answers] == [0] * 10 + [2]
    status = answers[-1].precondition.status
    assert status.code == Code.RESOURCE_EXHAUSTED
    retry, failure = unpacked(list(status.details))
    headers = {
        op.name: op.value for op in answers[-1].precondition.route_directive.response_header_operations
    }
    assert retry.retry_delay.seconds == int(headers["Retry-After"])
    assert [v.subject for v in failure.violations] == ["per_minute"]
