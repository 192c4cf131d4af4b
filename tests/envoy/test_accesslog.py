"""The access log service: Envoy's entries as Istio attributes, reported per message from a stream."""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from mixer.api import Admission, ServiceLimits
from mixer.api.envoy_accesslog import (
    STREAM_ACCESS_LOGS_METHOD,
    EnvoyAccessLogService,
    http_entry_attributes,
    message_bags,
    tcp_entry_attributes,
)
from mixer.proto.envoy.config.core.v3.base_pb2 import RequestMethod
from mixer.proto.envoy.data.accesslog.v3.accesslog_pb2 import (
    AccessLogType,
    HTTPAccessLogEntry,
    TCPAccessLogEntry,
)
from mixer.proto.envoy.service.accesslog.v3.als_pb2 import StreamAccessLogsMessage
from mixer.server import RuntimeHolder, ServerMetrics
from tests.envoy.support import doc_config, golden_bytes, runtime_of, serve
from tests.server.support import read_json_lines

START = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
HTTP_ATTRIBUTES: dict[str, Any] = {
    "source.ip": ipaddress.ip_address("10.44.0.7"),
    "source.port": 51234,
    "destination.ip": ipaddress.ip_address("10.44.1.9"),
    "destination.port": 9080,
    "context.proxy_error_code": "-",
    "context.reporter.kind": "outbound",
    "destination.service.host": "reviews.default.svc.cluster.local",
    "destination.service.name": "reviews",
    "destination.service.namespace": "default",
    "context.reporter.uid": "kubernetes://productpage-v1-abc.default",
    "source.uid": "kubernetes://productpage-v1-abc.default",
    "source.name": "productpage-v1-abc",
    "source.namespace": "default",
    "request.time": START,
    "response.duration": timedelta(milliseconds=12),
    "response.time": START + timedelta(milliseconds=12),
    "request.headers": {
        ":method": "GET",
        ":authority": "reviews:9080",
        ":path": "/reviews/0",
        "user-agent": "curl/8.5.0",
        "x-request-id": "1f2e3d4c-0000-4000-8000-000000000001",
    },
    "request.method": "GET",
    "request.scheme": "http",
    "request.host": "reviews:9080",
    "request.path": "/reviews/0",
    "request.url_path": "/reviews/0",
    "request.useragent": "curl/8.5.0",
    "request.id": "1f2e3d4c-0000-4000-8000-000000000001",
    "request.size": 0,
    "request.total_size": 210,
    "response.code": 200,
    "response.size": 295,
    "response.total_size": 445,
    "context.protocol": "http",
}
TCP_ATTRIBUTES: dict[str, Any] = {
    "source.ip": ipaddress.ip_address("10.44.0.8"),
    "context.reporter.kind": "outbound",
    "destination.service.host": "mysql.default.svc.cluster.local",
    "destination.service.name": "mysql",
    "destination.service.namespace": "default",
    "connection.event": "close",
    "connection.received.bytes": 80,
    "connection.received.bytes_total": 80,
    "connection.sent.bytes": 1200,
    "connection.sent.bytes_total": 1200,
    "context.protocol": "tcp",
}


def golden(name: str) -> StreamAccessLogsMessage:
    return StreamAccessLogsMessage.FromString(golden_bytes(name))


def plain(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: dict(v) if isinstance(v, dict) else v for k, v in attrs.items()}


def test_the_golden_http_entry_becomes_istio_attributes() -> None:
    message = golden("als_http_message")
    (entry,) = message.http_logs.log_entry
    assert plain(http_entry_attributes(entry, message.identifier)) == HTTP_ATTRIBUTES


def test_the_golden_tcp_entry_becomes_istio_attributes() -> None:
    message = golden("als_tcp_message")
    (entry,) = message.tcp_logs.log_entry
    assert plain(tcp_entry_attributes(entry, message.identifier)) == TCP_ATTRIBUTES


def test_an_inbound_grpc_entry_with_tls_flags_and_trailers() -> None:
    entry = HTTPAccessLogEntry()
    common = entry.common_properties
    common.upstream_cluster = "inbound|9080|grpc|reviews.default.svc.cluster.local"
    common.downstream_local_address.socket_address.address = "10.44.1.9"
    common.downstream_local_address.socket_address.port_value = 9080
    common.duration.FromTimedelta(timedelta(milliseconds=40))
    common.response_flags.no_healthy_upstream = True
    common.response_flags.upstream_connection_failure = True
    common.response_flags.unauthorized_details.SetInParent()
    tls = common.tls_properties
    tls.tls_sni_hostname = "outbound_.9080_._.reviews.default.svc.cluster.local"
    tls.peer_certificate_properties.subject_alt_name.add(
        uri="spiffe://cluster.local/ns/default/sa/productpage"
    )
    tls.local_certificate_properties.subject_alt_name.add(dns="reviews")
    tls.local_certificate_properties.subject_alt_name.add(uri="spiffe://cluster.local/ns/default/sa/reviews")
    entry.request.request_method = RequestMethod.POST
    entry.request.request_headers["content-type"] = "application/grpc"
    entry.request.path = "/pkg.Reviews/List?x=1"
    entry.response.response_trailers["grpc-status"] = "14"
    entry.response.response_trailers["grpc-message"] = "no healthy upstream"
    identifier = StreamAccessLogsMessage.Identifier()
    identifier.node.id = "sidecar~10.44.1.9~reviews-v2-xyz.default~default.svc.cluster.local"
    attrs = http_entry_attributes(entry, identifier)
    assert attrs["context.reporter.kind"] == "inbound"
    assert (attrs["destination.ip"], attrs["destination.port"]) == (ipaddress.ip_address("10.44.1.9"), 9080)
    assert attrs["destination.uid"] == "kubernetes://reviews-v2-xyz.default"
    assert "source.uid" not in attrs
    assert attrs["context.proxy_error_code"] == "UH,UF,UAEX"
    assert attrs["connection.mtls"] is True
    assert attrs["source.principal"] == "spiffe://cluster.local/ns/default/sa/productpage"
    assert attrs["destination.principal"] == "spiffe://cluster.local/ns/default/sa/reviews"
    assert attrs["connection.requested_server_name"] == tls.tls_sni_hostname
    assert attrs["response.duration"] == timedelta(milliseconds=40)
    assert "request.time" not in attrs
    assert "response.code" not in attrs
    assert (attrs["request.method"], attrs["request.url_path"]) == ("POST", "/pkg.Reviews/List")
    assert attrs["context.protocol"] == "grpc"
    assert (attrs["response.grpc_status"], attrs["response.grpc_message"]) == ("14", "no healthy upstream")


@pytest.mark.parametrize(
    ("log_type", "event"),
    [
        (AccessLogType.TcpUpstreamConnected, "open"),
        (AccessLogType.TcpPeriodic, "continue"),
        (AccessLogType.TcpConnectionEnd, "close"),
        (AccessLogType.NotSet, "close"),
    ],
)
def test_tcp_log_types_are_connection_events(log_type: int, event: str) -> None:
    entry = TCPAccessLogEntry()
    entry.common_properties.access_log_type = log_type  # type: ignore[assignment]
    entry.common_properties.stream_id = "c-1"
    entry.common_properties.duration.FromTimedelta(timedelta(seconds=3))
    entry.common_properties.start_time.FromDatetime(START)
    attrs = tcp_entry_attributes(entry)
    assert attrs["connection.event"] == event
    assert (attrs["connection.id"], attrs["connection.duration"], attrs["context.time"]) == (
        "c-1",
        timedelta(seconds=3),
        START,
    )


def test_entries_over_the_limits_are_skipped_and_counted() -> None:
    message = StreamAccessLogsMessage()
    good = message.http_logs.log_entry.add()
    good.request.path = "/ok"
    bad = message.http_logs.log_entry.add()
    bad.request.path = "/" + "x" * 100
    unknown_method = message.http_logs.log_entry.add()
    unknown_method.request.request_method = 42  # type: ignore[assignment]
    kind, bags, invalid = message_bags(message, None, ServiceLimits(max_string_length=64))
    assert (kind, invalid) == ("http", 1)
    assert [bag.get("request.path") for bag in bags] == ["/ok", None]
    assert bags[1].get("request.method") is None
    assert message_bags(StreamAccessLogsMessage(), None, ServiceLimits()) == ("", [], 0)


# -- the stream --------------------------------------------------------------------------------------


def als(holder: RuntimeHolder, metrics: ServerMetrics, admission: Admission, limits: ServiceLimits) -> Any:
    return EnvoyAccessLogService(holder, metrics, admission, limits)


async def test_a_stream_reports_every_message_and_keeps_the_identifier(tmp_path: Path) -> None:
    output = tmp_path / "access.jsonl"
    runtime = runtime_of(doc_config("complete"), {"MIXER_ENVOY_ACCESS_LOG": str(output)})
    later = golden("als_http_message")
    later.ClearField("identifier")
    later.http_logs.log_entry[0].request.request_id = "second"
    payloads = [
        golden_bytes("als_http_message"),
        b"\x12\x03\x0a\x01",  # a message that does not parse
        later.SerializeToString(),
        golden_bytes("als_tcp_message"),
    ]
    async with serve(als, runtime, limits=ServiceLimits(max_string_length=4096)) as served:
        answer = await served.stream(STREAM_ACCESS_LOGS_METHOD, payloads)
        assert answer == b""
        assert served.sample("mixer_envoy_access_log_entries_total", kind="http", result="reported") == 2
        assert served.sample("mixer_envoy_access_log_entries_total", kind="tcp", result="reported") == 1
        assert (
            served.sample("mixer_decode_errors_total", api="envoy_accesslog", method="StreamAccessLogs") == 1
        )
        assert (
            served.sample("mixer_requests_total", api="envoy_accesslog", method="StreamAccessLogs", code="OK")
            == 1
        )
    lines = read_json_lines(output)
    assert [(line["protocol"], line.get("requestId")) for line in lines] == [
        ("http", "1f2e3d4c-0000-4000-8000-000000000001"),
        ("http", "second"),
        ("tcp", ""),
    ]
    # The stream's first message named the node; its later messages are reported as from it too.
    assert [line.get("sourceUid") for line in lines[:2]] == ["kubernetes://productpage-v1-abc.default"] * 2
    assert lines[0]["latency"] == "12ms"
    assert lines[0]["responseCode"] == 200
    assert lines[0]["destinationServiceHost"] == "reviews.default.svc.cluster.local"
    assert (lines[2]["connectionEvent"], lines[2]["sentBytes"]) == ("close", 1200)


async def test_entries_arriving_over_the_concurrency_limit_are_dropped(tmp_path: Path) -> None:
    output = tmp_path / "access.jsonl"
    runtime = runtime_of(doc_config("complete"), {"MIXER_ENVOY_ACCESS_LOG": str(output)})
    async with serve(als, runtime, limit=1) as served:
        served.admission.in_flight = 1
        assert await served.stream(STREAM_ACCESS_LOGS_METHOD, [golden_bytes("als_http_message")]) == b""
        served.admission.in_flight = 0
        assert served.sample("mixer_envoy_access_log_entries_total", kind="http", result="dropped") == 1
        assert served.sample("mixer_envoy_access_log_entries_total", kind="http", result="reported") == 0
    assert read_json_lines(output) == []


async def test_a_cancelled_stream_keeps_what_it_sent(tmp_path: Path) -> None:
    output = tmp_path / "access.jsonl"
    runtime = runtime_of(doc_config("complete"), {"MIXER_ENVOY_ACCESS_LOG": str(output)})
    async with serve(als, runtime) as served:
        call = served.channel.stream_unary(STREAM_ACCESS_LOGS_METHOD)()
        await call.write(golden_bytes("als_tcp_message"))
        async with asyncio.timeout(5):
            while not served.sample("mixer_envoy_access_log_entries_total", kind="tcp", result="reported"):
                await asyncio.sleep(0.01)
        assert served.sample("mixer_requests_in_flight", api="envoy_accesslog") == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        async with asyncio.timeout(5):
            while served.sample("mixer_requests_in_flight", api="envoy_accesslog"):
                await asyncio.sleep(0.01)
        assert served.sample("mixer_envoy_access_log_entries_total", kind="tcp", result="reported") == 1
    assert [line["connectionEvent"] for line in read_json_lines(output)] == ["close"]


def _many_entries(n: int) -> bytes:
    message = golden("als_http_message")
    entry = message.http_logs.log_entry[0]
    for i in range(1, n):
        copy = message.http_logs.log_entry.add()
        copy.CopyFrom(entry)
        copy.request.request_id = f"many-{i}"
    return message.SerializeToString()


async def test_a_message_of_many_entries_is_reported_in_slices(tmp_path: Path) -> None:
    output = tmp_path / "access.jsonl"
    runtime = runtime_of(doc_config("complete"), {"MIXER_ENVOY_ACCESS_LOG": str(output)})
    async with serve(
        als, runtime, limits=ServiceLimits(max_string_length=4096, max_report_records=1000)
    ) as served:
        assert await served.stream(STREAM_ACCESS_LOGS_METHOD, [_many_entries(1000)]) == b""
        assert served.sample("mixer_envoy_access_log_entries_total", kind="http", result="reported") == 1000
    async with asyncio.timeout(10):
        while len(lines := read_json_lines(output)) < 1000:
            await asyncio.sleep(0.05)
    assert [line["requestId"] for line in lines[1:]] == [f"many-{i}" for i in range(1, 1000)]


async def test_a_message_over_the_record_bound_ends_the_stream(tmp_path: Path) -> None:
    output = tmp_path / "access.jsonl"
    runtime = runtime_of(doc_config("complete"), {"MIXER_ENVOY_ACCESS_LOG": str(output)})
    async with serve(
        als, runtime, limits=ServiceLimits(max_string_length=4096, max_report_records=10)
    ) as served:
        payloads = [golden_bytes("als_tcp_message"), _many_entries(11), golden_bytes("als_tcp_message")]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await served.stream(STREAM_ACCESS_LOGS_METHOD, payloads)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "more than 10 entries" in (info.value.details() or "")
        assert served.sample("mixer_envoy_access_log_entries_total", kind="tcp", result="reported") == 1
        assert served.sample("mixer_envoy_access_log_entries_total", kind="http", result="reported") == 0
        assert (
            served.sample(
                "mixer_requests_total",
                api="envoy_accesslog",
                method="StreamAccessLogs",
                code="RESOURCE_EXHAUSTED",
            )
            == 1
        )
