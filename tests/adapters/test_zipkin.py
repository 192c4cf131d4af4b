"""The zipkin adapter: v2 JSON spans checked by a strict Zipkin double, the sender's error classes,
delivery end to end, and params."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.otlp import span_from_instance
from adapters.zipkin import (
    ADAPTER,
    ZipkinConfig,
    ZipkinHandler,
    ZipkinSender,
    encode_instance,
    span_json,
    spans_body,
    tag_text,
)
from adapters.zipkin._handler import retry_after
from mixer import HandlerEnv, ReportBatch
from mixer.delivery import PermanentError, Record, RetryableError
from mixer.templates import TraceSpanInstance
from tests.fakes.fake_zipkin import FakeZipkin, span_problem

_LOG = logging.getLogger("test.zipkin")
T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
T0_MICROS = 1_714_979_289_123_456
TRACE_128 = "463ac35c9f6413ad48485a3953bb6124"
TRACE_64 = "48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"
PARENT = "0020000000000001"


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
        "destination_ip": ipaddress.ip_address("2001:db8::9"),
        "span_tags": {"http.method": "GET", "http.path": "/reviews/0"},
    }
    values.update(fields)
    return TraceSpanInstance("tracespan.istio-system", **values)


def as_json(instance: TraceSpanInstance) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(encode_instance(instance).payload)
    return decoded


@pytest.fixture
async def zipkin() -> AsyncIterator[FakeZipkin]:
    async with FakeZipkin() as fake:
        yield fake


def sender_for(zipkin: FakeZipkin, **params: Any) -> ZipkinSender:
    return ZipkinSender(ZipkinConfig.model_validate({"url": zipkin.url, "timeout": "2s", **params}), _LOG)


# --- encoding ------------------------------------------------------------------------------------


def test_server_span_json() -> None:
    assert as_json(span_instance()) == {
        "traceId": TRACE_128,
        "id": SPAN,
        "parentId": PARENT,
        "name": "reviews.default.svc.cluster.local",
        "kind": "SERVER",
        "timestamp": T0_MICROS,
        "duration": 7250,
        "localEndpoint": {"serviceName": "reviews-v1", "ipv6": "2001:db8::9"},
        "remoteEndpoint": {"serviceName": "productpage-v1", "ipv4": "10.0.0.7"},
        "tags": {"http.method": "GET", "http.path": "/reviews/0", "http.status_code": "200"},
        "shared": True,
    }


def test_client_span_json_keeps_a_64_bit_trace_id() -> None:
    body = as_json(span_instance(trace_id=TRACE_64.upper(), client_span=True, parent_span_id=""))
    assert body["traceId"] == TRACE_64
    assert body["kind"] == "CLIENT"
    assert "parentId" not in body
    assert "shared" not in body
    assert body["localEndpoint"] == {"serviceName": "productpage-v1", "ipv4": "10.0.0.7"}
    assert body["remoteEndpoint"] == {"serviceName": "reviews-v1", "ipv6": "2001:db8::9"}


def test_rewritten_server_span_is_not_shared() -> None:
    body = as_json(span_instance(rewrite_client_span_id=True))
    assert body["parentId"] == "9d9164ded28611b9"
    assert "shared" not in body


@pytest.mark.parametrize(
    ("status", "client", "error"),
    [(200, False, None), (404, False, None), (404, True, "404"), (503, False, "503")],
)
def test_error_tag(status: int, client: bool, error: str | None) -> None:
    tags = as_json(span_instance(http_status_code=status, client_span=client))["tags"]
    assert tags["http.status_code"] == str(status)
    assert tags.get("error") == error


def test_tags_are_strings_and_explicit_tags_win() -> None:
    tags = as_json(
        span_instance(
            span_tags={
                "http.status_code": "201",
                "error": "upstream reset",
                "cached": False,
                "retries": 2,
                "labels": {"b": "2", "a": "1"},
                "latency": timedelta(milliseconds=3),
                "peer": ipaddress.ip_address("10.1.1.1"),
                "empty": "",
                "traceparent": f"00-{TRACE_128}-{SPAN}-01",
            },
            http_status_code=503,
        )
    )["tags"]
    assert tags == {
        "http.status_code": "201",
        "error": "upstream reset",
        "cached": "false",
        "retries": "2",
        "labels": '{"a":"1","b":"2"}',
        "latency": "3ms",
        "peer": "10.1.1.1",
    }


def test_durations_round_up_to_a_microsecond() -> None:
    assert as_json(span_instance(end_time=T0))["duration"] == 1
    assert as_json(span_instance(end_time=T0 + timedelta(microseconds=1)))["duration"] == 1
    instant = span_from_instance(span_instance(end_time=T0))
    assert span_json(instant)["timestamp"] == T0_MICROS


def test_ipv4_mapped_addresses_are_ipv4_and_empty_endpoints_left_out() -> None:
    body = as_json(
        span_instance(
            destination_ip=ipaddress.ip_address("::ffff:10.0.0.9"),
            source_ip=None,
            source_name="",
        )
    )
    assert body["localEndpoint"] == {"serviceName": "reviews-v1", "ipv4": "10.0.0.9"}
    assert "remoteEndpoint" not in body


def test_non_ascii_and_lone_surrogates() -> None:
    tags = as_json(span_instance(span_tags={"user": "Zoë", "bad": "x\udfff"}))["tags"]
    assert tags["user"] == "Zoë"
    assert tags["bad"] == "x?"


def test_tag_text() -> None:
    assert tag_text(True) == "true"
    assert tag_text(1.5) == "1.5"
    assert tag_text(b"\x00") == "AA=="
    assert tag_text(["a", 1]) == '["a",1]'
    assert tag_text(datetime(2024, 1, 2, tzinfo=UTC)) == "2024-01-02T00:00:00Z"


def test_body_is_a_json_array() -> None:
    records = [encode_instance(span_instance(span_id=f"{i + 1:016x}")) for i in range(3)]
    assert [span["id"] for span in json.loads(spans_body(records))] == [f"{i + 1:016x}" for i in range(3)]
    assert json.loads(spans_body([])) == []


# --- the strict double ---------------------------------------------------------------------------


def test_encoded_spans_pass_the_strict_check() -> None:
    for instance in (
        span_instance(),
        span_instance(client_span=True, trace_id=TRACE_64),
        span_instance(parent_span_id="", source_ip=None, destination_ip=None, span_tags={}),
    ):
        assert span_problem(as_json(instance)) == ""


GOOD = {"traceId": TRACE_128, "id": SPAN, "timestamp": T0_MICROS, "duration": 5}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"traceId": TRACE_128[:20]}, "traceId"),
        ({"traceId": TRACE_128.upper()}, "traceId"),
        ({"id": None}, "id"),
        ({"id": "0" * 16}, "all zeros"),
        ({"parentId": "abc"}, "parentId"),
        ({"kind": "server"}, "kind"),
        ({"timestamp": T0_MICROS // 1000}, "microseconds"),
        ({"timestamp": T0_MICROS * 1000}, "microseconds"),
        ({"timestamp": float(T0_MICROS)}, "microseconds"),
        ({"duration": 0}, "duration"),
        ({"duration": True}, "duration"),
        ({"tags": {"a": 1}}, "tags"),
        ({"localEndpoint": {"serviceName": "a", "ipv4": "2001:db8::1"}}, "ipv4"),
        ({"remoteEndpoint": {"port": 70000}}, "port"),
        ({"remoteEndpoint": {"host": "a"}}, "unknown"),
        ({"shared": "yes"}, "shared"),
        ({"annotations": [{"timestamp": 1}]}, "annotations"),
        ({"traceID": TRACE_128}, "unknown fields"),
    ],
)
def test_the_double_refuses_invalid_spans(change: dict[str, Any], reason: str) -> None:
    span = {**GOOD, **change}
    if change.get("id", "") is None:
        del span["id"]
    assert reason in span_problem(span)
    assert span_problem(GOOD) == ""


# --- the sender against the double ---------------------------------------------------------------


async def test_spans_are_accepted_by_the_strict_double(zipkin: FakeZipkin) -> None:
    sender = sender_for(zipkin, headers={"Authorization": "Bearer s3cret"})
    sender.open()
    try:
        records = [encode_instance(span_instance()), encode_instance(span_instance(client_span=True))]
        assert await sender.send(records) is None
    finally:
        await sender.close()
    assert zipkin.rejections == []
    (post,) = zipkin.posts
    assert post.headers["Authorization"] == "Bearer s3cret"
    assert post.gzipped is False
    assert [span["kind"] for span in post.spans] == ["SERVER", "CLIENT"]


async def test_gzip_bodies(zipkin: FakeZipkin) -> None:
    sender = sender_for(zipkin, compression="gzip")
    try:
        assert await sender.send([encode_instance(span_instance())]) is None
    finally:
        await sender.close()
    assert [post.gzipped for post in zipkin.posts] == [True]
    assert zipkin.spans[0]["id"] == SPAN


@pytest.mark.parametrize(("status", "expected"), [(503, RetryableError), (500, RetryableError), (429, RetryableError), (408, RetryableError), (401, PermanentError), (413, PermanentError)])  # fmt: skip
async def test_statuses_are_classified(zipkin: FakeZipkin, status: int, expected: type[Exception]) -> None:
    zipkin.fail_next(status, body="nope")
    sender = sender_for(zipkin)
    try:
        with pytest.raises(expected, match=f"{status}: nope"):
            await sender.send([encode_instance(span_instance())])
    finally:
        await sender.close()
    assert zipkin.spans == []


async def test_an_invalid_span_is_permanent_with_the_reason(zipkin: FakeZipkin) -> None:
    bad = Record(json.dumps({"traceId": TRACE_128, "id": SPAN, "timestamp": 1.5}).encode())
    sender = sender_for(zipkin)
    try:
        with pytest.raises(PermanentError, match=r"400: spans\[1\]\.timestamp"):
            await sender.send([encode_instance(span_instance()), bad])
    finally:
        await sender.close()
    assert zipkin.spans == []


async def test_retry_after_delays_the_next_send(zipkin: FakeZipkin) -> None:
    zipkin.fail_next(429, retry_after="1")
    sender = sender_for(zipkin)
    try:
        with pytest.raises(RetryableError):
            await sender.send([encode_instance(span_instance())])
        started = time.monotonic()
        assert await sender.send([encode_instance(span_instance())]) is None
        assert time.monotonic() - started >= 0.9
    finally:
        await sender.close()


def test_retry_after_values() -> None:
    assert retry_after("3") == 3.0
    assert retry_after("86400") == 60.0
    assert retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after("soon") is None
    assert retry_after(None) is None


async def test_no_server_is_retryable() -> None:
    fake = FakeZipkin()
    await fake.start()
    url = fake.url
    await fake.stop()
    sender = ZipkinSender(ZipkinConfig(url=url, timeout=timedelta(seconds=2)), _LOG)
    try:
        with pytest.raises(RetryableError, match="POST"):
            await sender.send([encode_instance(span_instance())])
    finally:
        await sender.close()


async def test_the_double_answers_415_for_other_media_types(zipkin: FakeZipkin) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(
            zipkin.url, data=b"[]", headers={"Content-Type": "application/x-thrift"}
        ) as r:
            assert r.status == 415
        body = gzip.compress(b"not json")
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        async with session.post(zipkin.url, data=body, headers=headers) as r:
            assert r.status == 400
    assert zipkin.rejections[0].startswith("malformed body")


# --- the handler, through Delivery ---------------------------------------------------------------


def handler(zipkin: FakeZipkin, tmp_path: Path) -> ZipkinHandler:
    params = {
        "url": zipkin.url,
        "timeout": "2s",
        "delivery": {
            "batch_timeout": "10ms",
            "batch_max_records": 10,
            "retry_initial_interval": "10ms",
            "retry_max_interval": "50ms",
        },
    }
    built = ADAPTER.factory(
        ZipkinConfig.model_validate(params), HandlerEnv("zipkin.istio-system", _LOG, tmp_path)
    )
    assert isinstance(built, ZipkinHandler)
    return built


async def test_503_is_retried_until_every_span_arrives(zipkin: FakeZipkin, tmp_path: Path) -> None:
    zipkin.fail_next(503, times=3)
    sink = handler(zipkin, tmp_path)
    await sink.start()
    try:
        instances = [span_instance(span_id=f"{i + 1:016x}") for i in range(25)]
        sink.handle_report(ReportBatch("zipkin.istio-system", [*instances, span_instance(trace_id="xyz")]))
        await zipkin.wait_for_spans(25, timeout=10.0)
        await asyncio.sleep(0.05)
    finally:
        await sink.shutdown(5.0)
    assert sorted(span["id"] for span in zipkin.spans) == [f"{i + 1:016x}" for i in range(25)]
    assert zipkin.rejections == []
    assert sink.stats.invalid_spans == 1
    assert sink.stats.delivery.retried > 0
    assert sink.stats.delivery.dead_lettered == 0


# --- params --------------------------------------------------------------------------------------


def test_defaults() -> None:
    params = ZipkinConfig()
    assert params.url == "http://127.0.0.1:9411/api/v2/spans"
    assert params.compression == "none"
    assert params.timeout == timedelta(seconds=10)
    assert ADAPTER.templates == frozenset({"tracespan"})


@pytest.mark.parametrize(
    "params",
    [
        {"url": "127.0.0.1:9411/api/v2/spans"},
        {"url": "ftp://zipkin/api/v2/spans"},
        {"url": "http:///api/v2/spans"},
        {"url": "http://zipkin:99999/api/v2/spans"},
        {"url": "http://zipkin:0/"},
        {"headers": {"Content-Type": "text/plain"}},
        {"headers": {"bad header": "x"}},
        {"headers": {"X-A": "a\r\nb"}},
        {"tls": {"ca_file": "/ca.pem"}},
        {"tls": {"cert_file": "/c.pem"}, "url": "https://zipkin/api/v2/spans"},
        {"compression": "br"},
        {"delivery": {"queue_max_records": -1}},
        {"endpoint": "x"},
    ],
)
def test_invalid_params(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ZipkinConfig.model_validate(params)


def test_https_with_tls_and_redacted_headers() -> None:
    params = ZipkinConfig.model_validate(
        {
            "url": "https://zipkin.example:9411/api/v2/spans",
            "tls": {"insecure_skip_verify": True},
            "headers": {"Authorization": "Basic c2VjcmV0"},
        }
    )
    assert params.tls.configured
    assert "c2VjcmV0" not in repr(params)


async def test_https_to_a_plain_http_server_is_retryable(zipkin: FakeZipkin) -> None:
    url = zipkin.url.replace("http://", "https://")
    sender = ZipkinSender(
        ZipkinConfig.model_validate({"url": url, "timeout": "2s", "tls": {"insecure_skip_verify": True}}),
        _LOG,
    )
    sender.open()
    try:
        with pytest.raises(RetryableError):
            await sender.send([encode_instance(span_instance())])
    finally:
        await sender.close()
    assert zipkin.spans == []
