"""The otlp adapter: trace context, span mapping, the export request, the sender's error classes
against a real gRPC receiver, delivery end to end, params, and the stock Istio 1.4 tracing config."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import ValidationError

import mixer
from adapters.otlp import (
    ADAPTER,
    InvalidSpan,
    InvalidSpanLog,
    OtlpConfig,
    OtlpHandler,
    OtlpSender,
    any_value,
    encode_instance,
    encode_span,
    export_request,
    parse_traceparent,
    rewrite_span_id,
    span_from_instance,
    unix_nanos,
)
from mixer import HandlerEnv, ReportBatch
from mixer.attributes import AttributeBag
from mixer.config import load_config
from mixer.delivery import DeliveryOptions, PermanentError, Record, RetryableError
from mixer.templates import Instance, MetricInstance, TraceSpanInstance
from plugins.manager import create_plugin_manager
from tests.fakes.fake_otlp import FakeOtlpReceiver, attribute_values

_LOG = logging.getLogger("test.otlp")
T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
TRACE_128 = "463ac35c9f6413ad48485a3953bb6124"
TRACE_64 = "48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"
PARENT = "0020000000000001"
STOCK = Path(__file__).resolve().parents[2] / "deploy" / "config" / "istio-1.4"


def span_instance(**fields: Any) -> TraceSpanInstance:
    """A server span of reviews-v1 called by productpage-v1; keyword arguments replace fields."""
    values: dict[str, Any] = {
        "trace_id": TRACE_128,
        "span_id": SPAN,
        "parent_span_id": PARENT,
        "span_name": "reviews.default.svc.cluster.local",
        "start_time": T0,
        "end_time": T0 + timedelta(milliseconds=7, microseconds=250),
        "http_status_code": 200,
        "client_span": False,
        "source_name": "productpage-v1",
        "destination_name": "reviews-v1",
        "source_ip": ipaddress.ip_address("10.0.0.7"),
        "destination_ip": ipaddress.ip_address("10.0.0.9"),
        "span_tags": {"http.method": "GET", "http.url": "/reviews/0"},
    }
    values.update(fields)
    return TraceSpanInstance("tracespan.istio-system", **values)


def decoded(instance: TraceSpanInstance) -> tuple[Span, dict[str, Any], str]:
    record = encode_instance(instance)
    return Span.FromString(record.payload), json.loads(record.route), record.route


def fast_delivery(**changes: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "batch_timeout": "10ms",
        "retry_initial_interval": "10ms",
        "retry_max_interval": "50ms",
        "retry_max_elapsed": "20s",
        "send_timeout": "2s",
    }
    options.update(changes)
    return options


def config(receiver: FakeOtlpReceiver, **params: Any) -> OtlpConfig:
    return OtlpConfig.model_validate({"endpoint": receiver.endpoint, "timeout": "2s", **params})


@pytest.fixture
async def receiver() -> AsyncIterator[FakeOtlpReceiver]:
    async with FakeOtlpReceiver() as fake:
        yield fake


# --- trace context -------------------------------------------------------------------------------


def test_b3_128_bit_ids() -> None:
    span, _, _ = decoded(span_instance())
    assert span.trace_id.hex() == TRACE_128
    assert span.span_id.hex() == SPAN
    assert span.parent_span_id.hex() == PARENT


def test_b3_64_bit_trace_id_is_left_padded_to_128_bits() -> None:
    span, _, _ = decoded(span_instance(trace_id=TRACE_64))
    assert span.trace_id == bytes(8) + bytes.fromhex(TRACE_64)


def test_uppercase_b3_ids_are_read() -> None:
    span, _, _ = decoded(span_instance(trace_id=TRACE_128.upper(), span_id=SPAN.upper()))
    assert span.trace_id.hex() == TRACE_128
    assert span.span_id.hex() == SPAN


def test_root_span_has_no_parent_and_no_remote_parent_flag() -> None:
    span, _, _ = decoded(span_instance(parent_span_id=""))
    assert span.parent_span_id == b""
    assert span.flags == 0x01
    child, _, _ = decoded(span_instance())
    assert child.flags == 0x01 | 0x100 | 0x200


def test_w3c_traceparent_from_the_span_tag() -> None:
    parent = "00f067aa0ba902b7"
    instance = span_instance(
        trace_id="",
        span_id="",
        parent_span_id="",
        span_tags={
            "traceparent": f"00-{TRACE_128}-{parent}-01",
            "tracestate": "congo=t61rcWkgMzE",
            "http.method": "GET",
        },
    )
    span, _, _ = decoded(instance)
    assert span.trace_id.hex() == TRACE_128
    assert span.span_id.hex() == parent
    assert span.parent_span_id == b""
    assert span.trace_state == "congo=t61rcWkgMzE"
    assert span.flags & 0xFF == 0x01
    names = {kv.key for kv in span.attributes}
    assert "traceparent" not in names
    assert "tracestate" not in names
    assert "http.request.method" in names


def test_w3c_traceparent_in_the_trace_id_field_keeps_the_b3_span_id() -> None:
    span, _, _ = decoded(span_instance(trace_id=f"00-{TRACE_128}-00f067aa0ba902b7-03"))
    assert span.trace_id.hex() == TRACE_128
    assert span.span_id.hex() == SPAN
    assert span.flags & 0xFF == 0x03


def test_a_b3_trace_id_wins_over_the_traceparent_tag() -> None:
    other = "0af7651916cd43dd8448eb211c80319c"
    span, _, _ = decoded(span_instance(span_tags={"traceparent": f"00-{other}-00f067aa0ba902b7-01"}))
    assert span.trace_id.hex() == TRACE_128


def test_future_traceparent_versions_may_carry_more_fields() -> None:
    parsed = parse_traceparent(f"01-{TRACE_128}-00f067aa0ba902b7-01-extra")
    assert parsed.trace_id.hex() == TRACE_128
    assert parsed.sampled


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"trace_id": "abc"}, "trace id"),
        ({"trace_id": TRACE_128 + "00"}, "trace id"),
        ({"trace_id": "g" * 32}, "trace id"),
        ({"trace_id": "0" * 32}, "all zeros"),
        ({"trace_id": "", "span_tags": {}}, "no trace id"),
        ({"span_id": ""}, "span_id is empty"),
        ({"span_id": SPAN[:-1]}, "span id"),
        ({"span_id": "0" * 16}, "all zeros"),
        ({"parent_span_id": "xyz"}, "parent span id"),
        ({"trace_id": f"ff-{TRACE_128}-00f067aa0ba902b7-01"}, "version"),
        ({"trace_id": f"00-{TRACE_128}-00f067aa0ba902b7-01-x"}, "version"),
        ({"trace_id": f"00-{TRACE_128.upper()}-00f067aa0ba902b7-01"}, "malformed ids"),
        ({"trace_id": f"00-{TRACE_128}-00f067aa0ba902b7-1"}, "flags"),
        ({"trace_id": "", "span_tags": {"traceparent": "garbage"}}, "traceparent"),
        ({"start_time": None}, "start_time"),
        ({"end_time": T0 - timedelta(seconds=1)}, "before start_time"),
    ],
)
def test_invalid_spans_are_refused_with_a_reason(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidSpan, match=reason):
        span_from_instance(span_instance(**fields))


def test_rewrite_client_span_id_follows_mixer() -> None:
    # Mixer's own test vector: a2fb4a1d1a96d312 becomes 9d9164ded28611b9.
    assert rewrite_span_id(bytes.fromhex(SPAN)).hex() == "9d9164ded28611b9"
    client, _, _ = decoded(span_instance(client_span=True, rewrite_client_span_id=True))
    assert client.span_id.hex() == "9d9164ded28611b9"
    assert client.parent_span_id.hex() == PARENT
    server, _, _ = decoded(span_instance(rewrite_client_span_id=True))
    assert server.span_id.hex() == SPAN
    assert server.parent_span_id.hex() == "9d9164ded28611b9"


# --- span mapping --------------------------------------------------------------------------------


def test_kind_times_and_server_side_resource() -> None:
    span, resource, _ = decoded(span_instance())
    assert span.kind == Span.SPAN_KIND_SERVER
    assert span.name == "reviews.default.svc.cluster.local"
    assert span.start_time_unix_nano == 1_714_979_289_123_456_000
    assert span.end_time_unix_nano - span.start_time_unix_nano == 7_250_000
    assert resource == {"service.name": "reviews-v1"}
    attributes = attribute_values(span.attributes)
    assert attributes["peer.service"] == "productpage-v1"
    assert attributes["client.address"] == "10.0.0.7"
    assert attributes["network.peer.address"] == "10.0.0.7"
    assert attributes["network.local.address"] == "10.0.0.9"


def test_client_span_belongs_to_the_source() -> None:
    span, resource, _ = decoded(span_instance(client_span=True))
    assert span.kind == Span.SPAN_KIND_CLIENT
    assert resource == {"service.name": "productpage-v1"}
    attributes = attribute_values(span.attributes)
    assert attributes["peer.service"] == "reviews-v1"
    assert attributes["network.peer.address"] == "10.0.0.9"
    assert "client.address" not in attributes


def test_naive_times_are_utc() -> None:
    assert unix_nanos(datetime(1970, 1, 1, 0, 0, 1, 5)) == 1_000_005_000
    assert unix_nanos(datetime(1970, 1, 1, 2, tzinfo=dt.timezone(timedelta(hours=2)))) == 0


@pytest.mark.parametrize(
    ("status", "client", "expected"),
    [
        (200, False, Status.STATUS_CODE_UNSET),
        (302, True, Status.STATUS_CODE_UNSET),
        (404, False, Status.STATUS_CODE_UNSET),
        (404, True, Status.STATUS_CODE_ERROR),
        (500, False, Status.STATUS_CODE_ERROR),
        (503, True, Status.STATUS_CODE_ERROR),
        (0, False, Status.STATUS_CODE_UNSET),
    ],
)
def test_status_follows_the_http_conventions(status: int, client: bool, expected: int) -> None:
    span, _, _ = decoded(span_instance(http_status_code=status, client_span=client))
    assert span.status.code == expected
    attributes = attribute_values(span.attributes)
    if status:
        assert attributes["http.response.status_code"] == status
    else:
        assert "http.response.status_code" not in attributes


def test_attributes_are_typed_and_legacy_names_mapped() -> None:
    instance = span_instance(
        span_tags={
            "http.method": "POST",
            "http.url": "/reviews/0",
            "http.status_code": "201",
            "http.user_agent": "curl/8",
            "retries": 3,
            "cached": True,
            "ratio": 0.5,
            "labels": {"app": "reviews"},
            "raw": b"\x00\x01",
            "latency": timedelta(microseconds=7250),
            "huge": 2**70,
            "empty": "",
            "absent": None,
        },
        request_size=120,
        response_total_size=900,
        api_protocol="HTTP",
    )
    span, _, _ = decoded(instance)
    attributes = attribute_values(span.attributes)
    assert attributes["http.request.method"] == "POST"
    assert attributes["url.path"] == "/reviews/0"
    # An explicit tag wins over the instance's http_status_code, as in Mixer; text becomes an int.
    assert attributes["http.response.status_code"] == 201
    assert attributes["user_agent.original"] == "curl/8"
    assert attributes["retries"] == 3
    assert attributes["cached"] is True
    assert attributes["ratio"] == 0.5
    assert attributes["labels"] == {"app": "reviews"}
    assert attributes["raw"] == b"\x00\x01"
    assert attributes["latency"] == "7.25ms"
    assert attributes["huge"] == str(2**70)
    assert attributes["http.request.body.size"] == 120
    assert attributes["http.response.size"] == 900
    assert attributes["network.protocol.name"] == "http"
    assert "empty" not in attributes
    assert "absent" not in attributes
    assert "http.method" not in attributes


def test_full_urls_and_grpc() -> None:
    span, _, _ = decoded(span_instance(span_tags={"http.url": "https://r/x?y=1"}, api_protocol="grpc"))
    attributes = attribute_values(span.attributes)
    assert attributes["url.full"] == "https://r/x?y=1"
    assert attributes["rpc.system"] == "grpc"


def test_unspecified_addresses_and_names_are_left_out() -> None:
    instance = span_instance(
        source_ip=ipaddress.ip_address("0.0.0.0"),
        destination_ip=ipaddress.ip_address("::"),
        source_name="",
        destination_name="",
        span_name="",
    )
    span, resource, _ = decoded(instance)
    attributes = attribute_values(span.attributes)
    assert not {"network.peer.address", "network.local.address", "client.address", "peer.service"} & set(
        attributes
    )
    assert resource == {"service.name": "unknown_service"}
    assert span.name == "unknown"


_SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)


@settings(deadline=None)
@given(
    key=st.text(),
    value=_SCALARS | st.lists(_SCALARS, max_size=3) | st.dictionaries(st.text(), _SCALARS, max_size=3),
)
def test_hand_written_attributes_are_what_protobuf_writes(key: str, value: Any) -> None:
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    from mixer.spans.otlp import _key_value_bytes

    assert _key_value_bytes(key, value) == KeyValue(key=key, value=any_value(value)).SerializeToString()


def test_a_lone_surrogate_does_not_break_encoding() -> None:
    span, _, _ = decoded(span_instance(span_tags={"bad\ud800": "x\udfff", "nested": {"k": "\ud800"}}))
    attributes = attribute_values(span.attributes)
    assert attributes["bad?"] == "x?"
    assert attributes["nested"] == {"k": "?"}


def test_spans_are_written_in_canonical_field_order() -> None:
    for instance in (span_instance(), span_instance(http_status_code=503, parent_span_id="")):
        payload = encode_instance(instance).payload
        assert Span.FromString(payload).SerializeToString() == payload


def test_export_request_groups_spans_by_resource() -> None:
    records = [
        encode_instance(span_instance(span_id="1000000000000001")),
        encode_instance(span_instance(span_id="1000000000000002", client_span=True)),
        encode_instance(span_instance(span_id="1000000000000003")),
    ]
    request = ExportTraceServiceRequest.FromString(export_request(records))
    grouped = {
        attribute_values(rs.resource.attributes)["service.name"]: [
            (ss.scope.name, [s.span_id.hex() for s in ss.spans]) for ss in rs.scope_spans
        ]
        for rs in request.resource_spans
    }
    assert grouped == {
        "reviews-v1": [("mesh-mixer", ["1000000000000001", "1000000000000003"])],
        "productpage-v1": [("mesh-mixer", ["1000000000000002"])],
    }
    assert request.resource_spans[0].scope_spans[0].scope.version == mixer.__version__


def test_export_request_matches_the_protobuf_library() -> None:
    record = encode_instance(span_instance())
    expected = ExportTraceServiceRequest()
    resource_spans = expected.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "reviews-v1"
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "mesh-mixer"
    scope_spans.scope.version = mixer.__version__
    scope_spans.spans.append(Span.FromString(record.payload))
    assert export_request([record]) == expected.SerializeToString()


def test_a_malformed_route_falls_back_to_an_unknown_service() -> None:
    record = Record(encode_span(span_from_instance(span_instance())), route="not json")
    request = ExportTraceServiceRequest.FromString(export_request([record]))
    assert attribute_values(request.resource_spans[0].resource.attributes) == {
        "service.name": "unknown_service"
    }


def test_invalid_span_log_counts_all_and_logs_sparingly(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = InvalidSpanLog(_LOG, "otlp.test", interval=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.otlp"):
        for _ in range(5):
            log.record("tracespan.istio-system", InvalidSpan("span_id is empty"))
        now[0] = 61.0
        log.record("tracespan.istio-system", InvalidSpan("span_id is empty"))
    assert log.count == 6
    assert len(caplog.records) == 2
    assert "4 more since the last report" in caplog.records[1].getMessage()


# --- the sender against a gRPC receiver -----------------------------------------------------------


async def test_spans_arrive_gzipped_with_metadata(receiver: FakeOtlpReceiver) -> None:
    sender = OtlpSender(config(receiver, headers={"Authorization": "Bearer s3cret"}), _LOG)
    sender.open()
    try:
        result = await sender.send(
            [encode_instance(span_instance()), encode_instance(span_instance(client_span=True))]
        )
    finally:
        await sender.close()
    assert result is None
    (export,) = receiver.exports
    assert export.compression == "gzip"
    assert export.metadata["authorization"] == "Bearer s3cret"
    spans = receiver.spans()
    assert [(s.resource["service.name"], s.span.kind) for s in spans] == [
        ("reviews-v1", Span.SPAN_KIND_SERVER),
        ("productpage-v1", Span.SPAN_KIND_CLIENT),
    ]
    assert spans[0].span.trace_id.hex() == TRACE_128


async def test_compression_can_be_turned_off(receiver: FakeOtlpReceiver) -> None:
    sender = OtlpSender(config(receiver, compression="none"), _LOG)
    try:
        assert await sender.send([encode_instance(span_instance())]) is None
    finally:
        await sender.close()
    assert [e.compression for e in receiver.exports] == ["identity"]


@pytest.mark.parametrize(
    ("code", "retry_delay", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, None, RetryableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, None, RetryableError),
        (grpc.StatusCode.ABORTED, None, RetryableError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 0.01, RetryableError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, None, PermanentError),
        (grpc.StatusCode.INVALID_ARGUMENT, None, PermanentError),
        (grpc.StatusCode.UNAUTHENTICATED, None, PermanentError),
        (grpc.StatusCode.INTERNAL, None, PermanentError),
    ],
)
async def test_errors_are_classified_as_the_otlp_spec_says(
    receiver: FakeOtlpReceiver, code: grpc.StatusCode, retry_delay: float | None, expected: type[Exception]
) -> None:
    receiver.fail_next(code, message="scripted", retry_delay=retry_delay)
    sender = OtlpSender(config(receiver), _LOG)
    try:
        with pytest.raises(expected, match=code.name):
            await sender.send([encode_instance(span_instance())])
    finally:
        await sender.close()
    assert receiver.exports == []


async def test_retry_info_delays_the_next_send(receiver: FakeOtlpReceiver) -> None:
    receiver.fail_next(grpc.StatusCode.UNAVAILABLE, retry_delay=0.3)
    sender = OtlpSender(config(receiver), _LOG)
    try:
        with pytest.raises(RetryableError):
            await sender.send([encode_instance(span_instance())])
        started = time.monotonic()
        assert await sender.send([encode_instance(span_instance())]) is None
        assert time.monotonic() - started >= 0.25
    finally:
        await sender.close()
    assert len(receiver.spans()) == 1


async def test_partial_success_is_counted_and_logged(
    receiver: FakeOtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.partial_success_next(1, "span too old")
    sender = OtlpSender(config(receiver), _LOG, name="otlp.test")
    try:
        with caplog.at_level(logging.WARNING, "test.otlp"):
            result = await sender.send([encode_instance(span_instance()), encode_instance(span_instance())])
    finally:
        await sender.close()
    assert result is None
    assert sender.rejected_spans == 1
    assert "rejected 1 of 2 spans: span too old" in caplog.text


async def test_no_receiver_is_retryable() -> None:
    fake = FakeOtlpReceiver()
    await fake.start()
    endpoint = fake.endpoint
    await fake.stop()
    sender = OtlpSender(OtlpConfig(endpoint=endpoint, timeout=timedelta(seconds=2)), _LOG)
    try:
        with pytest.raises(RetryableError, match="UNAVAILABLE"):
            await sender.send([encode_instance(span_instance())])
    finally:
        await sender.close()


async def test_the_receiver_refuses_malformed_spans_as_invalid_argument(receiver: FakeOtlpReceiver) -> None:
    # The double checks what a collector checks, so a broken encoder shows up as a permanent error.
    bad = Record(Span(trace_id=b"\x01" * 8, span_id=b"\x02" * 8, name="short").SerializeToString())
    sender = OtlpSender(config(receiver), _LOG)
    try:
        with pytest.raises(PermanentError, match=r"INVALID_ARGUMENT.*trace_id"):
            await sender.send([bad])
    finally:
        await sender.close()


def _self_signed(directory: Path) -> tuple[bytes, bytes, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "collector.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("collector.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(cert_pem)
    return key_pem, cert_pem, ca_file


async def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    key_pem, cert_pem, ca_file = _self_signed(tmp_path)
    async with FakeOtlpReceiver(tls=(key_pem, cert_pem)) as fake:
        params = {
            "endpoint": fake.endpoint,
            "timeout": "2s",
            "tls": {"insecure": False, "ca_file": str(ca_file), "server_name_override": "collector.test"},
        }
        sender = OtlpSender(OtlpConfig.model_validate(params), _LOG)
        sender.open()
        try:
            assert await sender.send([encode_instance(span_instance())]) is None
        finally:
            await sender.close()
        plaintext = OtlpSender(OtlpConfig(endpoint=fake.endpoint, timeout=timedelta(seconds=2)), _LOG)
        try:
            with pytest.raises(RetryableError):
                await plaintext.send([encode_instance(span_instance())])
        finally:
            await plaintext.close()
    assert len(fake.spans()) == 1


def test_a_missing_tls_file_fails_the_start() -> None:
    params = {"tls": {"insecure": False, "ca_file": "/nonexistent/ca.pem"}}
    sender = OtlpSender(OtlpConfig.model_validate(params), _LOG)
    with pytest.raises(OSError, match="nonexistent"):
        sender.open()


# --- the handler, through Delivery ---------------------------------------------------------------


def handler(receiver: FakeOtlpReceiver, tmp_path: Path, **delivery: Any) -> OtlpHandler:
    params = {"endpoint": receiver.endpoint, "timeout": "2s", "delivery": fast_delivery(**delivery)}
    built = ADAPTER.factory(
        OtlpConfig.model_validate(params), HandlerEnv("otlp.istio-system", _LOG, tmp_path)
    )
    assert isinstance(built, OtlpHandler)
    return built


def many_spans(count: int) -> list[Instance]:
    return [span_instance(span_id=f"{i + 1:016x}") for i in range(count)]


async def test_handler_exports_and_counts_invalid_spans(receiver: FakeOtlpReceiver, tmp_path: Path) -> None:
    otlp = handler(receiver, tmp_path)
    await otlp.start()
    try:
        otlp.handle_report(
            ReportBatch(
                "otlp.istio-system",
                [
                    *many_spans(3),
                    span_instance(span_id="bad"),
                    MetricInstance("requestcount.istio-system", value=1),
                ],
            )
        )
        spans = await receiver.wait_for_spans(3)
    finally:
        await otlp.shutdown(5.0)
    assert sorted(s.span.span_id.hex() for s in spans) == [f"{i + 1:016x}" for i in range(3)]
    assert otlp.stats.invalid_spans == 1
    assert otlp.stats.delivery.sent == 3


async def test_unavailable_is_retried_until_every_span_arrives(
    receiver: FakeOtlpReceiver, tmp_path: Path
) -> None:
    receiver.fail_next(grpc.StatusCode.UNAVAILABLE, times=3)
    otlp = handler(receiver, tmp_path, batch_max_records=10)
    await otlp.start()
    try:
        otlp.handle_report(ReportBatch("otlp.istio-system", many_spans(25)))
        spans = await receiver.wait_for_spans(25, timeout=10.0)
        await asyncio.sleep(0.05)
    finally:
        await otlp.shutdown(5.0)
    ids = [s.span.span_id.hex() for s in receiver.spans()]
    assert sorted(ids) == [f"{i + 1:016x}" for i in range(25)]
    assert len(spans) == 25
    assert receiver.calls >= 3 + 3
    assert otlp.stats.delivery.retried > 0
    assert otlp.stats.delivery.dead_lettered == 0


async def test_invalid_argument_goes_to_the_dead_letter(receiver: FakeOtlpReceiver, tmp_path: Path) -> None:
    receiver.fail_next(grpc.StatusCode.INVALID_ARGUMENT, message="bad span batch")
    otlp = handler(receiver, tmp_path)
    await otlp.start()
    try:
        otlp.handle_report(ReportBatch("otlp.istio-system", many_spans(2)))
        async with asyncio.timeout(5.0):
            while otlp.stats.delivery.dead_lettered < 2:
                await asyncio.sleep(0.01)
        otlp.handle_report(ReportBatch("otlp.istio-system", [span_instance(span_id="00000000000000ff")]))
        spans = await receiver.wait_for_spans(1)
    finally:
        await otlp.shutdown(5.0)
    assert [s.span.span_id.hex() for s in spans] == ["00000000000000ff"]
    dead = "".join(p.read_text() for p in tmp_path.rglob("dead-letter*.jsonl"))
    assert "bad span batch" in dead
    assert otlp.stats.delivery.dead_lettered == 2


# --- params --------------------------------------------------------------------------------------


def test_defaults() -> None:
    params = OtlpConfig()
    assert params.endpoint == "127.0.0.1:4317"
    assert params.compression == "gzip"
    assert params.tls.insecure is True
    assert params.timeout == timedelta(seconds=10)
    assert params.delivery == DeliveryOptions()
    assert ADAPTER.templates == frozenset({"tracespan"})


@pytest.mark.parametrize(
    "endpoint", ["127.0.0.1:4317", "collector.observability:4317", "[::1]:4317", " otel:1 "]
)
def test_valid_endpoints(endpoint: str) -> None:
    assert OtlpConfig(endpoint=endpoint).endpoint == endpoint.strip()


@pytest.mark.parametrize(
    "endpoint", ["127.0.0.1", "http://127.0.0.1:4317", ":4317", "otel:0", "otel:70000", "::1:4317", ""]
)
def test_invalid_endpoints(endpoint: str) -> None:
    with pytest.raises(ValidationError, match="endpoint"):
        OtlpConfig(endpoint=endpoint)


def test_headers_are_lowercased_and_redacted() -> None:
    params = OtlpConfig.model_validate({"headers": {"Authorization": "Bearer s3cret", "x-tenant": "a"}})
    assert set(params.headers) == {"authorization", "x-tenant"}
    assert params.headers["authorization"].get_secret_value() == "Bearer s3cret"
    assert "s3cret" not in repr(params)


@pytest.mark.parametrize(
    "headers",
    [{"grpc-timeout": "1S"}, {"trace-bin": "x"}, {"bad header": "x"}, {"x-a": "line\nbreak"}, {"x-a": "é"}],
)
def test_invalid_headers(headers: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="header"):
        OtlpConfig.model_validate({"headers": headers})


@pytest.mark.parametrize(
    "params",
    [
        {"tls": {"ca_file": "/ca.pem"}},
        {"tls": {"insecure": False, "cert_file": "/c.pem"}},
        {"tls": {"insecure": False, "verify": False}},
        {"compression": "zstd"},
        {"timeout": "0s"},
        {"delivery": {"batch_max_records": 0}},
        {"delivery": {"unknown": 1}},
        {"endpoints": ["a:1"]},
    ],
)
def test_invalid_params(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OtlpConfig.model_validate(params)


def test_durations_in_go_syntax() -> None:
    params = OtlpConfig.model_validate({"timeout": "1500ms", "delivery": {"batch_timeout": "1s"}})
    assert params.timeout == timedelta(milliseconds=1500)
    assert params.delivery.batch_timeout == timedelta(seconds=1)


# --- the stock Istio 1.4 tracing config ----------------------------------------------------------


@pytest.fixture(scope="module")
def stock() -> Any:
    registry = create_plugin_manager(load_entry_points=False, blocked=()).registry()
    return {form: load_config([STOCK / form], registry, environ={}) for form in ("v1.1", "legacy")}


def _request(headers: dict[str, str], **attributes: Any) -> AttributeBag:
    values: dict[str, Any] = {
        "context.protocol": "http",
        "context.reporter.kind": "outbound",
        "request.headers": headers,
        "request.time": T0,
        "response.time": T0 + timedelta(milliseconds=12),
        "response.code": 503,
        "request.method": "GET",
        "request.path": "/reviews/0",
        "destination.service.host": "reviews.default.svc.cluster.local",
        "source.workload.name": "productpage-v1",
        "destination.workload.name": "reviews-v1",
        "source.ip": ipaddress.ip_address("10.0.0.7"),
    }
    values.update(attributes)
    return AttributeBag(values)


@pytest.mark.parametrize("form", ["v1.1", "legacy"])
@pytest.mark.parametrize(
    ("headers", "protocol", "sampled"),
    [
        ({"x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN, "x-b3-sampled": "1"}, "http", True),
        ({"x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN, "x-b3-sampled": "true"}, "grpc", True),
        ({"x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN, "x-b3-flags": "1"}, "http", True),
        ({"x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN, "x-b3-sampled": "0"}, "http", False),
        ({"x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN}, "http", False),
        ({"traceparent": f"00-{TRACE_128}-{SPAN}-01"}, "http", True),
        ({"traceparent": f"00-{TRACE_128}-{SPAN}-00"}, "http", False),
        ({"x-b3-sampled": "1"}, "tcp", False),
    ],
)
def test_the_stock_rule_sends_only_sampled_requests(
    stock: Any, form: str, headers: dict[str, str], protocol: str, sampled: bool
) -> None:
    (rule,) = [r for r in stock[form].rules if r.name.startswith("tracing.")]
    assert rule.match is not None
    assert rule.match.evaluate(_request(headers, **{"context.protocol": protocol})) is sampled


@pytest.mark.parametrize("form", ["v1.1", "legacy"])
def test_the_stock_instance_becomes_an_otlp_span(stock: Any, form: str) -> None:
    config = stock[form]
    (name,) = [n for n in config.instances if n.startswith("tracespan.")]
    bag = _request(
        {
            "x-b3-traceid": TRACE_64,
            "x-b3-spanid": SPAN,
            "x-b3-parentspanid": PARENT,
            "x-b3-sampled": "1",
            "x-request-id": "7f3a",
        }
    )
    instance = config.instances[name].builder.build(bag)
    assert isinstance(instance, TraceSpanInstance)
    span, resource, _ = decoded(instance)
    assert span.trace_id == bytes(8) + bytes.fromhex(TRACE_64)
    assert span.span_id.hex() == SPAN
    assert span.parent_span_id.hex() == PARENT
    assert span.kind == Span.SPAN_KIND_CLIENT
    assert span.name == "reviews.default.svc.cluster.local"
    assert span.end_time_unix_nano - span.start_time_unix_nano == 12_000_000
    assert span.status.code == Status.STATUS_CODE_ERROR
    assert resource == {"service.name": "productpage-v1"}
    attributes = attribute_values(span.attributes)
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.path"] == "/reviews/0"
    assert attributes["guid:x-request-id"] == "7f3a"
    assert attributes["peer.service"] == "reviews-v1"
    assert attributes["network.local.address"] == "10.0.0.7"
    assert "network.peer.address" not in attributes  # destination.ip fell back to 0.0.0.0
    (params,) = [h.params for h in config.handlers.values() if h.adapter == "otlp"]
    assert isinstance(params, OtlpConfig)
    assert params.endpoint == "127.0.0.1:4317"


def test_the_stock_endpoint_comes_from_the_environment() -> None:
    registry = create_plugin_manager(load_entry_points=False, blocked=()).registry()
    loaded = load_config([STOCK / "v1.1"], registry, environ={"MIXER_OTLP_ENDPOINT": "collector:4317"})
    (params,) = [h.params for h in loaded.handlers.values() if h.adapter == "otlp"]
    assert isinstance(params, OtlpConfig)
    assert params.endpoint == "collector:4317"


def test_stock_traceparent_only_request(stock: Any) -> None:
    config = stock["v1.1"]
    (name,) = [n for n in config.instances if n.startswith("tracespan.")]
    bag = _request({"traceparent": f"00-{TRACE_128}-00f067aa0ba902b7-01", "tracestate": "a=b"})
    instance = config.instances[name].builder.build(bag)
    assert isinstance(instance, TraceSpanInstance)
    span, _, _ = decoded(instance)
    assert span.trace_id.hex() == TRACE_128
    assert span.span_id.hex() == "00f067aa0ba902b7"
    assert span.trace_state == "a=b"


def test_report_batch_of_the_stock_instance_is_counted_when_headers_are_missing(stock: Any) -> None:
    config = stock["v1.1"]
    (name,) = [n for n in config.instances if n.startswith("tracespan.")]
    instance = config.instances[name].builder.build(_request({"x-b3-sampled": "1"}))
    assert isinstance(instance, TraceSpanInstance)
    with pytest.raises(InvalidSpan, match="no trace id"):
        span_from_instance(instance)


def test_cached_attribute_fields_keep_types_apart() -> None:
    from mixer.protowire import field
    from mixer.spans.otlp import _attribute_field, _key_value_bytes

    for value in (True, 1, 1.0, "1", False, 0):
        assert _attribute_field("k", value) == field(9, _key_value_bytes("k", value))
    assert _attribute_field("k", True) != _attribute_field("k", 1)
    assert _attribute_field("k", 1) != _attribute_field("k", 1.0)
