"""The rate limit service: descriptors as bags, Mixer quotas and plan checks, answers Envoy reads."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from adapters.memquota._handler import MemquotaHandler
from mixer.api import Admission, ServiceLimits
from mixer.api.envoy_ratelimit import (
    SHOULD_RATE_LIMIT_METHOD,
    DescriptorVerdict,
    EnvoyRateLimitService,
    build_rate_limit_response,
    descriptor_attributes,
    descriptor_hits,
    limit_per_unit,
)
from mixer.decision import RateLimitInfo
from mixer.proto.envoy.service.ratelimit.v3.rls_pb2 import RateLimitRequest, RateLimitResponse
from mixer.runtime import Runtime, build_runtime
from mixer.server import RuntimeHolder, ServerMetrics
from mixer.status import Code
from tests.envoy.support import Served, as_json, doc_config, golden_bytes, golden_json, runtime_of, serve
from tests.quota.support import FakeClock
from tests.runtime.support import RecordingHandler, config, fq, handler, instance, registry, rule

Unit = RateLimitResponse.RateLimit.Unit
RATINGS = "outbound|9080||ratings.default.svc.cluster.local"
#: The golden request's key, on the free plan like the demo key.
GOLDEN_KEY = "free-demo-key: {subject: demo-app, plan: free}"


def golden_request() -> RateLimitRequest:
    return RateLimitRequest.FromString(golden_bytes("rls_request"))


def request(*descriptors: dict[str, str], domain: str = "mesh", hits: int = 0) -> RateLimitRequest:
    message = RateLimitRequest(domain=domain, hits_addend=hits)
    for entries in descriptors:
        descriptor = message.descriptors.add()
        for key, value in entries.items():
            descriptor.entries.add(key=key, value=value)
    return message


def rls(holder: RuntimeHolder, metrics: ServerMetrics, admission: Admission, limits: ServiceLimits) -> Any:
    return EnvoyRateLimitService(holder, metrics, admission, limits)


async def ask(served: Served, message: RateLimitRequest) -> RateLimitResponse:
    return RateLimitResponse.FromString(
        await served.unary(SHOULD_RATE_LIMIT_METHOD, message.SerializeToString())
    )


def with_clock(runtime: Runtime, clock: FakeClock) -> Runtime:
    quota = runtime.handlers["quota.istio-system"]
    assert isinstance(quota, MemquotaHandler)
    quota.store.clock = clock
    quota.enforcer.clock = clock
    return runtime


def docs_runtime(clock: FakeClock) -> Runtime:
    """The docs' complete config with plans through the rate limit service, and the golden's key."""
    text = doc_config("complete") + "---\n" + doc_config("addition")
    text = text.replace(
        "demo-pro-key: {subject: bob, plan: pro}",
        f"demo-pro-key: {{subject: bob, plan: pro}}\n          {GOLDEN_KEY}",
    )
    assert GOLDEN_KEY in text
    return with_clock(runtime_of(text), clock)


@pytest.fixture
def clock() -> FakeClock:
    # 43 s into a minute: a per-minute window is whole again in 17 s.
    return FakeClock(FakeClock().now + 43)


@pytest.fixture
async def served(clock: FakeClock) -> AsyncIterator[Served]:
    async with serve(rls, docs_runtime(clock)) as s:
        yield s


# -- descriptors and answers -----------------------------------------------------------------------


def test_the_golden_request_becomes_one_bag_per_descriptor() -> None:
    message = golden_request()
    bags = [
        descriptor_attributes(message.domain, d, descriptor_hits(message, d)) for d in message.descriptors
    ]
    assert bags == [
        {
            "ratelimit.domain": "mesh",
            "ratelimit.descriptor": {"plan": "free", "api_key": "free-demo-key"},
            "ratelimit.hits_addend": 1,
        },
        {
            "ratelimit.domain": "mesh",
            "ratelimit.descriptor": {
                "destination_cluster": "outbound|9080||reviews.default.svc.cluster.local"
            },
            "ratelimit.hits_addend": 1,
        },
    ]


def test_hits_come_from_the_descriptor_then_the_request_then_one() -> None:
    message = request({"a": "1"}, {"b": "2"})
    assert [descriptor_hits(message, d) for d in message.descriptors] == [1, 1]
    message.hits_addend = 3
    message.descriptors[1].hits_addend.value = 0
    assert [descriptor_hits(message, d) for d in message.descriptors] == [3, 0]


def test_verdicts_encode_to_the_golden_answer() -> None:
    per_minute = RateLimitInfo("per_minute", 10, 0, 17.0, 60.0, 17.0)
    response = build_rate_limit_response(
        [DescriptorVerdict(True, per_minute, 17.0, 17.0), DescriptorVerdict(False)]
    )
    assert response == RateLimitResponse.FromString(golden_bytes("rls_response"))
    assert as_json(response) == golden_json("rls_response")


def test_an_ok_answer_passes_plan_headers_on() -> None:
    info = RateLimitInfo("per_minute", 100, 42, 5.2, 60.0)
    response = build_rate_limit_response(
        [DescriptorVerdict(False, info, 5.2, None, (("x-mixer-plan", "pro"),)), DescriptorVerdict(False)]
    )
    assert response.overall_code == RateLimitResponse.OK
    first = response.statuses[0]
    assert (first.current_limit.requests_per_unit, first.current_limit.unit) == (100, Unit.MINUTE)
    assert (first.limit_remaining, first.duration_until_reset.seconds) == (42, 6)
    assert [(h.key, h.value) for h in response.request_headers_to_add] == [("x-mixer-plan", "pro")]
    assert list(response.response_headers_to_add) == []


@pytest.mark.parametrize(
    ("limit", "window", "expected"),
    [
        (5, 1.0, (5, Unit.SECOND)),
        (10, 60.0, (10, Unit.MINUTE)),
        (10, 30.0, (20, Unit.MINUTE)),
        (7, 90.0, (280, Unit.HOUR)),
        (1000, 86400.0, (1000, Unit.DAY)),
        (50, 7 * 86400.0, (50, Unit.WEEK)),
        (9, 30 * 86400.0, (9, Unit.MONTH)),
        (9, 365 * 86400.0, (9, Unit.YEAR)),
        (3, 0.5, (6, Unit.SECOND)),
        (20, 20 * 86400.0, (7, Unit.WEEK)),
        (2**40, 60.0, (2**32 - 1, Unit.MINUTE)),
    ],
)
def test_limits_are_expressed_in_envoys_units(limit: int, window: float, expected: tuple[int, int]) -> None:
    assert limit_per_unit(limit, window) == expected


# -- the servicer with the docs' configuration -----------------------------------------------------


async def test_the_golden_request_over_the_free_plan_gets_exactly_the_golden_answer(served: Served) -> None:
    spend = request({"api_key": "free-demo-key"})
    for _ in range(10):
        assert (await ask(served, spend)).overall_code == RateLimitResponse.OK
    response = await ask(served, golden_request())
    assert response == RateLimitResponse.FromString(golden_bytes("rls_response"))
    assert (
        served.sample("mixer_requests_total", api="envoy_ratelimit", method="ShouldRateLimit", code="OK")
        == 11
    )


async def test_a_plan_descriptor_within_its_limits_reports_what_is_left(served: Served) -> None:
    response = await ask(served, request({"api_key": "demo-pro-key"}, hits=1))
    assert response.overall_code == RateLimitResponse.OK
    status = response.statuses[0]
    # gcra 100 per minute with a burst of 20: the least left of the pro plan's limits.
    assert (status.current_limit.requests_per_unit, status.current_limit.unit) == (100, Unit.MINUTE)
    assert status.limit_remaining == 19
    assert {(h.key, h.value) for h in response.request_headers_to_add} == {
        ("x-mixer-plan", "pro"),
        ("x-mixer-subject", "bob"),
    }


async def test_an_unknown_key_is_over_limit_without_figures(served: Served) -> None:
    response = await ask(served, request({"api_key": "guess"}))
    assert response.overall_code == RateLimitResponse.OVER_LIMIT
    assert not response.statuses[0].HasField("current_limit")
    assert list(response.response_headers_to_add) == []


async def test_a_mixer_quota_per_cluster_runs_out(served: Served) -> None:
    ratings = request({"destination_cluster": RATINGS})
    codes = [(await ask(served, ratings)).overall_code for _ in range(2)]
    assert codes == [RateLimitResponse.OK] * 2
    over = await ask(served, ratings)
    assert over.overall_code == RateLimitResponse.OVER_LIMIT
    status = over.statuses[0]
    assert not status.HasField("current_limit")
    # memquota, as Mixer's, answers a refusal valid for no time: nothing says when to retry.
    assert not status.HasField("duration_until_reset")
    assert list(over.response_headers_to_add) == []
    # Other clusters have their own counters; descriptors no rule selects always pass.
    other = request(
        {"destination_cluster": "outbound|80||web.default.svc.cluster.local"}, {"generic_key": "x"}
    )
    assert [s.code for s in (await ask(served, other)).statuses] == [RateLimitResponse.OK] * 2


async def test_requests_without_a_domain_or_with_too_many_descriptors_are_invalid(clock: FakeClock) -> None:
    async with serve(rls, docs_runtime(clock), limits=ServiceLimits(max_map_entries=2)) as served:
        for message in (request({"a": "b"}, domain=""), request({"a": "1"}, {"a": "2"}, {"a": "3"})):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ask(served, message)
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (
            served.sample("mixer_decode_errors_total", api="envoy_ratelimit", method="ShouldRateLimit") == 2
        )


# -- with test doubles -----------------------------------------------------------------------------


def double_runtime(**params: Any) -> Runtime:
    """A check handler and a quota ``mesh`` on one test double with ``params``."""
    return build_runtime(
        config(
            [handler("h", **params)],
            [
                instance("who", "listentry", value='"x"'),
                instance("mesh", "quota", dimensions={"d": '"x"'}),
            ],
            [rule("check", None, (fq("h"), [fq("who")])), rule("quota", None, (fq("h"), [fq("mesh")]))],
        ),
        registry(),
    )


async def test_every_descriptor_asks_for_its_hits_with_its_own_deduplication_id() -> None:
    runtime = double_runtime()
    async with serve(rls, runtime) as served:
        message = request({"a": "1"}, {"b": "2"}, hits=3)
        message.descriptors[1].hits_addend.value = 5
        response = await ask(served, message)
        double = runtime.handlers["h.istio-system"]
        assert isinstance(double, RecordingHandler)
        assert [args.amount for _, args in double.quotas] == [3, 5]
        ids = [args.deduplication_id for _, args in double.quotas]
    assert len(set(ids)) == 2
    assert all(i.endswith("/mesh") for i in ids)
    assert response.overall_code == RateLimitResponse.OK


async def test_a_quota_granting_less_is_over_limit_for_its_valid_duration() -> None:
    async with serve(rls, double_runtime(grant_cap=1, valid_seconds=2.5)) as served:
        response = await ask(served, request({"a": "1"}, {"b": "2"}, hits=2))
    assert [s.code for s in response.statuses] == [RateLimitResponse.OVER_LIMIT] * 2
    assert response.statuses[0].duration_until_reset.seconds == 3
    assert [(h.key, h.value) for h in response.response_headers_to_add] == [("retry-after", "3")]


@pytest.mark.parametrize("code", [Code.PERMISSION_DENIED, Code.UNAUTHENTICATED, Code.RESOURCE_EXHAUSTED])
async def test_policy_denials_are_over_limit(code: Code) -> None:
    async with serve(rls, double_runtime(code=code, message="no")) as served:
        response = await ask(served, request({"a": "1"}))
    assert response.overall_code == RateLimitResponse.OVER_LIMIT
    assert response.statuses[0].code == RateLimitResponse.OVER_LIMIT


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"raise_message": "backend down"}, grpc.StatusCode.INTERNAL),
        ({"code": Code.UNAVAILABLE, "message": "store unavailable"}, grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_verdicts_that_are_not_decisions_end_the_call(
    params: dict[str, Any], status: grpc.StatusCode
) -> None:
    async with serve(rls, double_runtime(**params)) as served:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ask(served, request({"a": "1"}))
        assert info.value.code() is status
        assert (
            served.sample(
                "mixer_requests_total", api="envoy_ratelimit", method="ShouldRateLimit", code=status.name
            )
            == 1
        )


async def test_a_caller_that_gives_up_gets_deadline_exceeded() -> None:
    async with serve(rls, double_runtime(delay=30.0)) as served:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await served.unary(SHOULD_RATE_LIMIT_METHOD, request({"a": "1"}).SerializeToString(), timeout=0.3)
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def test_whole_seconds_never_shorten_a_wait() -> None:
    response = build_rate_limit_response(
        [DescriptorVerdict(True, None, 0.2, 0.2), DescriptorVerdict(True, None, math.inf, None)]
    )
    assert response.statuses[0].duration_until_reset.seconds == 1
    assert not response.statuses[1].HasField("duration_until_reset")
    assert [(h.key, h.value) for h in response.response_headers_to_add] == [("retry-after", "1")]
