"""ext_authz: attributes from the real request, answers the real stubs read, the servicer in process."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.rpc.error_details_pb2 import QuotaFailure, RetryInfo  # type: ignore[import-untyped]

from mixer.api import Admission, ServiceLimits
from mixer.api._details import rate_limit_details
from mixer.api._envoy import EnvoyRequestError
from mixer.api.envoy_authz import (
    CHECK_METHOD,
    ApiKeySources,
    EnvoyAuthorizationService,
    build_check_response,
    check_attributes,
)
from mixer.config import load_config_text
from mixer.decision import (
    CheckOutcome,
    HeaderOperationKind,
    HeaderOperationResult,
    RateLimitInfo,
    rate_limit_headers,
)
from mixer.defaults import embedded_config_text
from mixer.proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from mixer.runtime import build_runtime
from mixer.server import RuntimeHolder, ServerMetrics
from mixer.status import Code, Status
from tests.envoy.support import (
    Served,
    as_json,
    golden_bytes,
    golden_json,
    prometheus_on_a_free_port,
    real_registry,
    serve,
)
from tests.runtime.support import config, fq, handler, instance, registry, rule

GOLDEN_ATTRIBUTES: dict[str, Any] = {
    "source.ip": ipaddress.ip_address("10.44.0.7"),
    "source.port": 51234,
    "source.principal": "spiffe://cluster.local/ns/default/sa/productpage",
    "destination.ip": ipaddress.ip_address("10.44.1.9"),
    "destination.port": 9080,
    "destination.principal": "spiffe://cluster.local/ns/default/sa/reviews",
    "connection.mtls": True,
    "request.time": datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC),
    "request.headers": {
        "user-agent": "curl/8.5.0",
        ":path": "/reviews/0?verbose=1",
        ":authority": "reviews:9080",
        ":method": "GET",
        "x-api-key": "free-demo-key",
        "x-request-id": "1f2e3d4c-0000-4000-8000-000000000001",
    },
    "request.method": "GET",
    "request.host": "reviews:9080",
    "request.scheme": "http",
    "request.path": "/reviews/0?verbose=1",
    "request.url_path": "/reviews/0",
    "request.query_params": {"verbose": "1"},
    "request.id": "1f2e3d4c-0000-4000-8000-000000000001",
    "request.size": 0,
    "request.useragent": "curl/8.5.0",
    "request.api_key": "free-demo-key",
    "context.protocol": "http",
    "context.reporter.kind": "inbound",
    "context.extensions": {"operation": "list", "api": "reviews-api"},
    "api.service": "reviews-api",
    "api.operation": "list",
}


def golden_request() -> CheckRequest:
    return CheckRequest.FromString(golden_bytes("authz_check_request"))


def request_with(**http: Any) -> CheckRequest:
    request = CheckRequest()
    for name, value in http.items():
        if name == "headers":
            request.attributes.request.http.headers.update(value)
        else:
            setattr(request.attributes.request.http, name, value)
    return request


def denial(code: Code, message: str = "", rate_limits: tuple[RateLimitInfo, ...] = ()) -> CheckOutcome:
    return CheckOutcome(
        status=Status(code, message),
        valid_duration=timedelta(0),
        valid_use_count=0,
        response_header_operations=[
            HeaderOperationResult(name, value) for name, value in rate_limit_headers(rate_limits).items()
        ],
        rate_limits=rate_limits,
    )


FREE_MINUTE = RateLimitInfo("free-minute", 10, 0, 17.0, 60.0, 17.0)


# -- attributes ------------------------------------------------------------------------------------


def test_the_golden_request_becomes_istio_attributes() -> None:
    attrs = check_attributes(golden_request())
    assert {k: dict(v) if isinstance(v, dict) else v for k, v in attrs.items()} == GOLDEN_ATTRIBUTES


def test_raw_header_maps_are_joined_like_envoy_joins_repeated_headers() -> None:
    request = CheckRequest()
    headers = request.attributes.request.http.header_map.headers
    headers.add(key="X-Api-Key", value="k1")
    headers.add(key="accept", value="a")
    headers.add(key="accept", raw_value=b"b")
    attrs = check_attributes(request)
    assert attrs["request.headers"] == {"x-api-key": "k1", "accept": "a,b"}
    assert attrs["request.api_key"] == "k1"


def test_the_api_key_comes_from_the_header_then_the_query() -> None:
    in_query = request_with(path="/a?api_key=q2&key=q1")
    assert check_attributes(in_query)["request.api_key"] == "q1"
    both = request_with(path="/a?key=q1", headers={"x-api-key": "h"})
    assert check_attributes(both)["request.api_key"] == "h"
    custom = ApiKeySources(headers=("authorization-key",), query_params=())
    assert "request.api_key" not in check_attributes(in_query, api_keys=custom)
    assert (
        check_attributes(request_with(headers={"authorization-key": "c"}), api_keys=custom)["request.api_key"]
        == "c"
    )


def test_grpc_requests_unknown_sizes_and_missing_peers() -> None:
    attrs = check_attributes(
        request_with(headers={"content-type": "application/grpc+proto"}, size=-1, id="77", query="a=1&a=2")
    )
    assert attrs["context.protocol"] == "grpc"
    assert "request.size" not in attrs
    assert attrs["request.id"] == "77"
    assert attrs["request.query_params"] == {"a": "1"}
    for name in ("source.ip", "destination.port", "connection.mtls", "request.path", "request.url_path"):
        assert name not in attrs


def test_unix_socket_and_named_port_peers_give_no_address() -> None:
    request = CheckRequest()
    request.attributes.source.address.pipe.path = "/run/app.sock"
    request.attributes.destination.address.socket_address.address = "reviews.local"
    request.attributes.destination.address.socket_address.named_port = "http"
    request.attributes.destination.labels["app"] = "reviews"
    request.attributes.tls_session.sni = "reviews.example"
    attrs = check_attributes(request)
    assert not any(name.endswith((".ip", ".port")) for name in attrs)
    assert attrs["destination.labels"] == {"app": "reviews"}
    assert attrs["connection.requested_server_name"] == "reviews.example"


def test_requests_over_the_decoding_limits_are_refused() -> None:
    many = request_with(headers={f"h{i}": "v" for i in range(5)})
    with pytest.raises(EnvoyRequestError, match="max_map_entries"):
        check_attributes(many, limits=ServiceLimits(max_map_entries=4))
    with pytest.raises(EnvoyRequestError, match="max_string_length"):
        check_attributes(request_with(path="/" + "x" * 40), limits=ServiceLimits(max_string_length=32))


# -- answers -----------------------------------------------------------------------------------


def test_an_allowed_outcome_encodes_to_the_golden_ok_answer() -> None:
    outcome = CheckOutcome(
        status=Status(),
        valid_duration=timedelta(0),
        valid_use_count=1,
        request_header_operations=[HeaderOperationResult("x-plan", "free")],
        headers={"x-mixer-plan": "free", "x-mixer-subject": "demo-app"},
    )
    response = build_check_response(outcome)
    assert response == CheckResponse.FromString(golden_bytes("authz_check_response_ok"))
    assert as_json(response) == golden_json("authz_check_response_ok")


def test_a_rate_limited_denial_encodes_to_the_golden_429_answer() -> None:
    outcome = denial(Code.RESOURCE_EXHAUSTED, "quota exceeded for plan free", (FREE_MINUTE,))
    response = build_check_response(outcome)
    assert response == CheckResponse.FromString(golden_bytes("authz_check_response_429"))
    assert as_json(response) == golden_json("authz_check_response_429")


def test_the_server_adds_retry_info_and_quota_failure_to_the_golden_429() -> None:
    outcome = denial(Code.RESOURCE_EXHAUSTED, "quota exceeded for plan free", (FREE_MINUTE,))
    response = build_check_response(outcome, details=rate_limit_details(outcome))
    retry, failure = RetryInfo(), QuotaFailure()
    assert [response.status.details[0].Unpack(retry), response.status.details[1].Unpack(failure)] == [
        True,
        True,
    ]
    assert retry.retry_delay.seconds == 17
    assert [(v.subject, v.description) for v in failure.violations] == [
        ("free-minute", "10 per 60s; 0 left, whole again in 17s")
    ]
    del response.status.details[:]
    assert response == CheckResponse.FromString(golden_bytes("authz_check_response_429"))


@pytest.mark.parametrize(
    ("code", "http", "message"),
    [
        (Code.UNAUTHENTICATED, 401, "unauthenticated"),
        (Code.PERMISSION_DENIED, 403, "permission denied"),
        (Code.RESOURCE_EXHAUSTED, 429, "quota exceeded"),
        (Code.UNAVAILABLE, 503, "unavailable"),
        (Code.DEADLINE_EXCEEDED, 504, "deadline exceeded"),
        (Code.INVALID_ARGUMENT, 400, "invalid argument"),
        (Code.NOT_FOUND, 404, "not found"),
        (Code.INTERNAL, 500, "internal"),
        (Code.FAILED_PRECONDITION, 500, "failed precondition"),
    ],
)
def test_denials_carry_the_http_status_a_proxy_gives_their_code(code: Code, http: int, message: str) -> None:
    response = build_check_response(denial(code))
    assert response.WhichOneof("http_response") == "denied_response"
    assert response.denied_response.status.code == http
    assert (response.status.code, response.status.message) == (int(code), message)
    assert response.denied_response.body == message
    assert not response.HasField("dynamic_metadata")


def test_header_operations_become_set_append_and_remove() -> None:
    outcome = CheckOutcome(
        status=Status(),
        valid_duration=timedelta(0),
        valid_use_count=1,
        request_header_operations=[
            HeaderOperationResult("X-Mixer-Plan", "pro"),
            HeaderOperationResult("x-tag", "a", HeaderOperationKind.APPEND),
            HeaderOperationResult("Cookie", "", HeaderOperationKind.REMOVE),
        ],
        response_header_operations=[
            HeaderOperationResult("RateLimit", '"m";r=1;t=2'),
            HeaderOperationResult("server", "", HeaderOperationKind.REMOVE),
        ],
        headers={"x-mixer-plan": "pro", "x-mixer-subject": "bob", "x-mixer-overage": "per_day"},
    )
    ok = build_check_response(outcome).ok_response
    assert [(o.header.key, o.header.value, o.HasField("append")) for o in ok.headers] == [
        ("x-mixer-plan", "pro", False),
        ("x-tag", "a", True),
    ]
    assert ok.headers[1].append.value is True
    assert list(ok.headers_to_remove) == ["cookie"]
    assert [(o.header.key, o.header.value) for o in ok.response_headers_to_add] == [
        ("ratelimit", '"m";r=1;t=2')
    ]
    metadata = build_check_response(outcome).dynamic_metadata
    assert dict(metadata) == {"plan": "pro", "subject": "bob", "overage": "per_day"}


# -- the servicer -------------------------------------------------------------------------------


def authz(holder: RuntimeHolder, metrics: ServerMetrics, admission: Admission, limits: ServiceLimits) -> Any:
    return EnvoyAuthorizationService(holder, metrics, admission, limits)


@pytest.fixture
async def embedded() -> AsyncIterator[Served]:
    registry_ = real_registry()
    runtime = build_runtime(
        load_config_text(embedded_config_text(), registry_, environ=prometheus_on_a_free_port()), registry_
    )
    async with serve(authz, runtime) as served:
        yield served


async def check(served: Served, request: CheckRequest) -> CheckResponse:
    return CheckResponse.FromString(await served.unary(CHECK_METHOD, request.SerializeToString()))


def keyed(key: str, stream_id: str = "") -> CheckRequest:
    request = golden_request()
    request.attributes.request.http.headers["x-api-key"] = key
    request.attributes.request.http.id = stream_id
    return request


async def test_the_embedded_default_allows_a_demo_key_with_its_plan(embedded: Served) -> None:
    response = await check(embedded, keyed("demo-free-key"))
    assert response.status.code == 0
    assert [(o.header.key, o.header.value) for o in response.ok_response.headers] == [
        ("x-mixer-plan", "free"),
        ("x-mixer-subject", "alice"),
    ]
    assert dict(response.dynamic_metadata) == {"plan": "free", "subject": "alice"}
    added = {o.header.key: o.header.value for o in response.ok_response.response_headers_to_add}
    assert added["ratelimit-policy"] == '"per_minute";q=10;w=60, "per_day";q=1000;w=86400'
    assert embedded.sample("mixer_requests_total", api="envoy_authz", method="Check", code="OK") == 1


async def test_the_embedded_default_refuses_unknown_keys_401(embedded: Served) -> None:
    response = await check(embedded, golden_request())  # free-demo-key is not a demo key
    assert response.status.code == Code.UNAUTHENTICATED
    assert response.denied_response.status.code == 401
    assert "unknown API key" in response.denied_response.body
    assert list(response.denied_response.headers) == []


async def test_the_embedded_default_answers_429_once_the_free_plan_is_spent(embedded: Served) -> None:
    answers = [await check(embedded, keyed("demo-free-key")) for _ in range(11)]
    assert [a.status.code for a in answers] == [0] * 10 + [Code.RESOURCE_EXHAUSTED]
    denied = answers[-1]
    assert denied.denied_response.status.code == 429
    headers = [(o.header.key, o.header.value) for o in denied.denied_response.headers]
    assert [key for key, _ in headers] == ["retry-after", "ratelimit-policy", "ratelimit"]
    retry = RetryInfo()
    assert denied.status.details[0].Unpack(retry)
    assert retry.retry_delay.seconds == int(headers[0][1]) > 0
    assert 'limit "per_minute" exceeded' in denied.denied_response.body


async def test_a_retried_stream_does_not_spend_the_plan_twice(embedded: Served) -> None:
    for _ in range(15):
        assert (await check(embedded, keyed("demo-free-key", stream_id="42"))).status.code == 0
    # Other streams still had the whole minute's quota.
    codes = [(await check(embedded, keyed("demo-free-key"))).status.code for _ in range(10)]
    assert codes == [0] * 9 + [Code.RESOURCE_EXHAUSTED]


async def test_malformed_requests_and_overload_end_the_call(embedded: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await embedded.unary(CHECK_METHOD, b"\x0a\x05\x01")
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert embedded.sample("mixer_decode_errors_total", api="envoy_authz", method="Check") == 1
    embedded.admission.in_flight = embedded.admission.limit
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await check(embedded, keyed("demo-free-key"))
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    embedded.admission.in_flight = 0
    assert embedded.sample("mixer_requests_total", api="envoy_authz", method="Check", code="UNAVAILABLE") == 1


async def test_a_handler_that_outlives_the_caller_ends_deadline_exceeded() -> None:
    runtime = build_runtime(
        config(
            [handler("slow", delay=30.0)],
            [instance("who", "listentry", value='request.api_key | "x"')],
            [rule("r", None, (fq("slow"), [fq("who")]))],
        ),
        registry(),
    )
    async with serve(authz, runtime) as served:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await served.unary(CHECK_METHOD, keyed("k").SerializeToString(), timeout=0.3)
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_failing_handler_is_a_500_denial_not_a_failed_call() -> None:
    runtime = build_runtime(
        config(
            [handler("broken", raise_message="backend down")],
            [instance("who", "listentry", value='request.api_key | "x"')],
            [rule("r", None, (fq("broken"), [fq("who")]))],
        ),
        registry(),
    )
    async with serve(authz, runtime) as served:
        response = await check(served, keyed("k"))
    assert response.status.code == Code.INTERNAL
    assert response.denied_response.status.code == 500
    # A generic reason: what failed inside the handler is for the server log.
    assert "handler failed" in response.denied_response.body
    assert "backend down" not in response.denied_response.body
