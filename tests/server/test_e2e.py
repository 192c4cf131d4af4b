"""Check and Report through a real `mixer serve` process, and its HTTP endpoints."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from mixer.api.mixer_v1 import CHECK_METHOD, REPORT_METHOD
from mixer.attributes import AttributeMatch, AttributeValue, Condition
from mixer.wire import (
    GLOBAL_WORD_COUNT,
    ReportEncoding,
    decode_referenced_attributes,
    encode_check_request,
    encode_report_request,
)
from tests.server.conftest import output_of
from tests.server.support import (
    ServerProcess,
    check,
    http_get,
    metric_value,
    read_json_lines,
    report,
    rpc_error,
    wait_until,
)


def http_bag(marker: str, **extra: AttributeValue) -> dict[str, AttributeValue]:
    now = datetime.now(UTC)
    return {
        "request.time": now,
        "response.time": now + timedelta(milliseconds=7),
        "context.protocol": "http",
        "context.reporter.kind": "inbound",
        "request.id": marker,
        "request.path": f"/{marker}",
        "request.method": "GET",
        "request.headers": {"x-request-id": marker},
        "destination.service.host": "reviews.default.svc.cluster.local",
        "response.code": 200,
        "response.duration": timedelta(milliseconds=7),
        **extra,
    }


# -- the embedded default, as `make run` starts it --------------------------------------------------


async def test_embedded_default_serves_check_and_report(
    default_server: ServerProcess, default_channel: grpc.aio.Channel
) -> None:
    marker = f"smoke-{uuid.uuid4().hex}"
    response = await check(default_channel, http_bag(marker))
    assert response.HasField("precondition")
    assert await report(default_channel, [http_bag(marker)]) == b""

    def access_log_line() -> dict[str, object] | None:
        for line in default_server.stdout().splitlines():
            if marker in line:
                entry: dict[str, object] = json.loads(line)
                return entry
        return None

    entry = wait_until(access_log_line, 10, "the access log line on stdout")
    assert entry["instance"] == "accesslog.instance.istio-system"
    assert entry["url"] == f"/{marker}"
    assert entry["requestId"] == marker

    prometheus = default_server.extra["env"]["MIXER_PROMETHEUS_LISTEN"]

    def scraped() -> str | None:
        status, body = http_get(f"http://{prometheus}/metrics")
        return body if status == 200 and "istio_requests_total{" in body else None

    body = wait_until(scraped, 10, "istio_requests_total on the Prometheus endpoint")
    assert 'destination_service="reviews.default.svc.cluster.local"' in body


async def test_embedded_default_access_log_keeps_no_api_key_in_clear(
    default_server: ServerProcess, default_channel: grpc.aio.Channel
) -> None:
    marker = f"keyed-{uuid.uuid4().hex}"
    key = f"demo-pro-key-{uuid.uuid4().hex}"
    bags = [http_bag(f"{marker}-{n}", **{"request.api_key": key}) for n in range(2)]
    bags.append(http_bag(f"{marker}-2", **{"request.headers": {"x-api-key": "another-key-" + marker}}))
    assert await report(default_channel, bags) == b""

    def access_log_lines() -> list[str] | None:
        lines = [line for line in default_server.stdout().splitlines() if marker in line]
        return lines if len(lines) == 3 else None

    lines = wait_until(access_log_lines, 10, "three access log lines on stdout")
    assert not any(key in line or "another-key-" in line for line in lines)
    hashes = [json.loads(line)["apiKey"] for line in sorted(lines, key=lambda t: json.loads(t)["url"])]
    # Hashed, not masked: records of one key can still be grouped, and told from another key's.
    assert all(h.startswith("sha256:") for h in hashes)
    assert hashes[0] == hashes[1] != hashes[2]


async def test_health_readiness_and_metrics(
    default_server: ServerProcess, default_channel: grpc.aio.Channel
) -> None:
    await check(default_channel, http_bag("metrics"))
    status, body = default_server.get("/healthz")
    assert status == 200
    status, body = default_server.get("/readyz")
    assert status == 200
    ready = json.loads(body)
    assert ready["status"] == "serving"
    assert ready["pid"] == default_server.pid
    assert ready["generation"] >= 1

    exposition = default_server.metrics()
    count = metric_value(exposition, "mixer_requests_total", api="mixer_v1", method="Check", code="OK")
    assert count is not None
    assert count >= 1
    assert metric_value(exposition, "mixer_request_duration_seconds_count", api="mixer_v1", method="Check")
    assert metric_value(exposition, "mixer_requests_in_flight", api="mixer_v1") == 0
    assert metric_value(exposition, "mixer_config_generation") == ready["generation"]
    assert metric_value(exposition, "mixer_config_reloads_total", result="failure") == 0
    assert metric_value(exposition, "mixer_check_calls_total")
    assert metric_value(exposition, "mixer_rule_match_errors_total") is not None
    assert metric_value(exposition, "mixer_instance_errors_total") is not None


def test_config_endpoint_says_embedded_and_redacts_secrets(default_server: ServerProcess) -> None:
    status, body = default_server.get("/config")
    assert status == 200
    shown = json.loads(body)
    assert shown["embedded"] is True
    assert "embedded default" in shown["note"]
    config = shown["config"]
    assert "stdio.istio-system" in config["handlers"]
    # The access log's apiKey variable reads request.api_key: shown as a secret would be.
    assert config["instances"]["accesslog.istio-system"]["params"]["variables"]["apiKey"] == "***"


def test_unknown_path_is_404(default_server: ServerProcess) -> None:
    status, _ = default_server.get("/nope")
    assert status == 404


# -- a config of our own ------------------------------------------------------------------------


async def test_denied_check_carries_the_denier_status_and_what_it_read(
    policy_channel: grpc.aio.Channel,
) -> None:
    response = await check(policy_channel, {"destination.service.host": "blocked.svc"})
    result = response.precondition
    assert result.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert result.status.message == "denyall.istio-system:not on the guest list"
    assert result.valid_duration.seconds == 7
    assert result.valid_use_count == 3
    referenced = decode_referenced_attributes(result.referenced_attributes)
    assert AttributeMatch("destination.service.host", Condition.EXACT) in referenced


async def test_check_with_no_matching_rule_is_ok_for_a_minute(policy_channel: grpc.aio.Channel) -> None:
    response = await check(
        policy_channel, {"destination.service.host": "fine.svc"}, quotas={"requestcount": (3, False)}
    )
    result = response.precondition
    assert result.status.code == 0
    assert result.valid_duration.seconds == 60
    assert result.valid_use_count == 10000
    referenced = decode_referenced_attributes(result.referenced_attributes)
    assert referenced == [AttributeMatch("destination.service.host", Condition.EXACT)]
    # No rule configures the quota: granted as asked.
    assert response.quotas["requestcount"].granted_amount == 3


async def test_report_reaches_the_stdio_handler(
    policy_server: ServerProcess, policy_channel: grpc.aio.Channel
) -> None:
    ids = [f"r-{uuid.uuid4().hex}" for _ in range(3)]
    assert await report(policy_channel, [{"request.id": i} for i in ids]) == b""

    def logged() -> bool:
        seen = {entry.get("requestId") for entry in read_json_lines(output_of(policy_server))}
        return set(ids) <= seen

    wait_until(logged, 10, "the reported ids in the stdio output file")


async def test_delta_encoded_report_is_accepted(
    policy_server: ServerProcess, policy_channel: grpc.aio.Channel
) -> None:
    ids = [f"d-{uuid.uuid4().hex}" for _ in range(2)]
    payload = encode_report_request(
        [{"request.id": i, "request.path": "/x"} for i in ids], ReportEncoding.DELTA_ENCODING
    ).SerializeToString()
    assert await policy_channel.unary_unary(REPORT_METHOD)(payload, timeout=10) == b""

    def logged() -> bool:
        seen = {entry.get("requestId") for entry in read_json_lines(output_of(policy_server))}
        return set(ids) <= seen

    wait_until(logged, 10, "the delta-encoded ids in the stdio output file")


@pytest.mark.parametrize("method", [CHECK_METHOD, REPORT_METHOD])
async def test_malformed_bytes_are_invalid_argument_and_the_server_keeps_serving(
    policy_server: ServerProcess, policy_channel: grpc.aio.Channel, method: str
) -> None:
    err = await rpc_error(policy_channel, method, b"\xff\xff\xff\xff")
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in (err.details() or "")
    response = await check(policy_channel, {"destination.service.host": "fine.svc"})
    assert response.precondition.status.code == 0
    exposition = policy_server.metrics()
    name = method.rsplit("/", 1)[1]
    assert metric_value(exposition, "mixer_decode_errors_total", api="mixer_v1", method=name)
    assert metric_value(
        exposition, "mixer_requests_total", api="mixer_v1", method=name, code="INVALID_ARGUMENT"
    )


async def test_message_above_max_size_is_resource_exhausted(policy_channel: grpc.aio.Channel) -> None:
    payload = encode_check_request({"request.path": "x" * (70 * 1024)}).SerializeToString()
    err = await rpc_error(policy_channel, CHECK_METHOD, payload)
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    response = await check(policy_channel, {"destination.service.host": "fine.svc"})
    assert response.precondition.status.code == 0


async def test_global_word_count_above_the_dictionary_is_internal(policy_channel: grpc.aio.Channel) -> None:
    payload = encode_check_request({}, global_word_count=GLOBAL_WORD_COUNT + 1).SerializeToString()
    err = await rpc_error(policy_channel, CHECK_METHOD, payload)
    assert err.code() is grpc.StatusCode.INTERNAL
    assert "global dictionary" in (err.details() or "")

    request = encode_report_request([{"request.id": "x"}])
    request.global_word_count = GLOBAL_WORD_COUNT + 1
    err = await rpc_error(policy_channel, REPORT_METHOD, request.SerializeToString())
    assert err.code() is grpc.StatusCode.INTERNAL


async def test_unknown_method_is_unimplemented(policy_channel: grpc.aio.Channel) -> None:
    err = await rpc_error(policy_channel, "/istio.mixer.v1.Mixer/Nope", b"")
    assert err.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_the_project_client_talks_to_the_server(policy_server: ServerProcess) -> None:
    from mixer.client import MixerCallError, MixerClient
    from mixer.status import Code

    async with MixerClient(policy_server.grpc_target) as client:
        denied = await client.check({"destination.service.host": "blocked.svc"})
        assert not denied.allowed
        assert denied.code is Code.PERMISSION_DENIED
        # The denier's 7 s, or what is left of them when the server answered from its cache.
        assert timedelta(0) < denied.valid_duration <= timedelta(seconds=7)
        allowed = await client.check({"destination.service.host": "fine.svc"})
        assert allowed.allowed
        assert 0 < allowed.valid_use_count <= 10000
        await client.report([{"request.id": f"c-{uuid.uuid4().hex}"}])
        with pytest.raises(MixerCallError) as info:
            await client.send_check(encode_check_request({}, global_word_count=GLOBAL_WORD_COUNT + 1))
        assert info.value.code is Code.INTERNAL
