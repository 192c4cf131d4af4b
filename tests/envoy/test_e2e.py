"""Real `mixer serve` processes answering the three Envoy APIs on their gRPC port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from mixer.api.envoy_accesslog import STREAM_ACCESS_LOGS_METHOD
from mixer.api.envoy_authz import CHECK_METHOD
from mixer.api.envoy_ratelimit import SHOULD_RATE_LIMIT_METHOD
from mixer.proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from mixer.proto.envoy.service.ratelimit.v3.rls_pb2 import RateLimitRequest, RateLimitResponse
from mixer.status import Code
from tests.envoy.support import doc_config, golden_bytes
from tests.server.support import ServerProcess, launcher, metric_value, read_json_lines, wait_until

RATINGS = "outbound|9080||ratings.default.svc.cluster.local"


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """No --config: the embedded default, with its demo plans."""
    with launcher(tmp_path_factory.mktemp("embedded")) as launch:
        yield launch.start()


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The complete configuration of docs/envoy.md, access logs to a file."""
    directory = tmp_path_factory.mktemp("docs")
    config = directory / "envoy.yaml"
    config.write_text(doc_config("complete"), "utf-8")
    output = directory / "access.jsonl"
    with launcher(directory) as launch:
        server = launch.start(
            "--config", str(config), "--reload-interval", "0", env={"MIXER_ENVOY_ACCESS_LOG": str(output)}
        )
        server.extra["output"] = output
        yield server


@pytest.fixture
async def embedded(embedded_server: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(embedded_server.grpc_target) as channel:
        yield channel


@pytest.fixture
async def docs(docs_server: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(docs_server.grpc_target) as channel:
        yield channel


def authz_request(key: str) -> bytes:
    request = CheckRequest.FromString(golden_bytes("authz_check_request"))
    request.attributes.request.http.headers["x-api-key"] = key
    request.attributes.request.http.ClearField("id")
    return request.SerializeToString()


async def authorize(channel: grpc.aio.Channel, key: str) -> CheckResponse:
    answer = await channel.unary_unary(CHECK_METHOD)(authz_request(key), timeout=10)
    return CheckResponse.FromString(answer)


async def test_ext_authz_with_the_embedded_default_plans(
    embedded: grpc.aio.Channel, embedded_server: ServerProcess
) -> None:
    allowed = await authorize(embedded, "demo-free-key")
    assert allowed.status.code == 0
    headers = {o.header.key: o.header.value for o in allowed.ok_response.headers}
    assert headers["x-mixer-plan"] == "free"
    assert dict(allowed.dynamic_metadata) == {"plan": "free", "subject": "alice"}

    unknown = await authorize(embedded, "not-a-key")
    assert unknown.status.code == Code.UNAUTHENTICATED
    assert unknown.denied_response.status.code == 401

    answers = [await authorize(embedded, "demo-free-key") for _ in range(10)]
    assert [a.status.code for a in answers] == [0] * 9 + [Code.RESOURCE_EXHAUSTED]
    denied = answers[-1].denied_response
    assert denied.status.code == 429
    sent = {o.header.key: o.header.value for o in denied.headers}
    assert sent["ratelimit-policy"].startswith('"per_minute";q=10;w=60')
    assert sent["ratelimit"].startswith('"per_minute";r=0;t=')
    assert int(sent["retry-after"]) >= 1
    metrics = embedded_server.metrics()
    assert metric_value(metrics, "mixer_requests_total", api="envoy_authz", method="Check", code="OK") == 12


async def test_should_rate_limit_goes_over_a_quota(docs: grpc.aio.Channel) -> None:
    request = RateLimitRequest(domain="mesh")
    request.descriptors.add().entries.add(key="destination_cluster", value=RATINGS)
    call = docs.unary_unary(SHOULD_RATE_LIMIT_METHOD)
    codes = [
        RateLimitResponse.FromString(await call(request.SerializeToString(), timeout=10)) for _ in range(3)
    ]
    assert [r.overall_code for r in codes] == [RateLimitResponse.OK] * 2 + [RateLimitResponse.OVER_LIMIT]
    # memquota's refusal (as Mixer's) is valid for no time, so it sets no retry-after.
    assert list(codes[-1].response_headers_to_add) == []


async def test_ext_authz_is_plan_checked_by_the_docs_config(docs: grpc.aio.Channel) -> None:
    assert (await authorize(docs, "demo-pro-key")).status.code == 0
    assert (await authorize(docs, "free-demo-key")).denied_response.status.code == 401


async def test_access_log_streams_reach_the_stdio_handlers_file(
    docs: grpc.aio.Channel, docs_server: ServerProcess
) -> None:
    call = docs.stream_unary(STREAM_ACCESS_LOGS_METHOD)()
    await call.write(golden_bytes("als_http_message"))
    await call.write(golden_bytes("als_tcp_message"))
    await call.done_writing()
    assert await call == b""
    output = docs_server.extra["output"]
    assert isinstance(output, Path)
    lines = wait_until(
        lambda: len(read_json_lines(output)) >= 2 and read_json_lines(output), 10, "access log lines"
    )
    assert [(line["protocol"], line["method"], line["url"]) for line in lines] == [
        ("http", "GET", "/reviews/0"),
        ("tcp", "", ""),
    ]
    assert lines[0]["sourceUid"] == "kubernetes://productpage-v1-abc.default"
    assert (lines[1]["destinationServiceHost"], lines[1]["receivedBytes"]) == (
        "mysql.default.svc.cluster.local",
        80,
    )
    metrics = docs_server.metrics()
    assert metric_value(metrics, "mixer_envoy_access_log_entries_total", kind="http", result="reported") == 1
    assert metric_value(metrics, "mixer_envoy_access_log_entries_total", kind="tcp", result="reported") == 1
