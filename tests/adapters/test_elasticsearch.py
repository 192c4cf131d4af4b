"""The elasticsearch adapter against FakeElasticsearch, with the real elasticsearch client.

Also the fake itself: its _bulk protocol, data streams, scripted failures and the compatible-with
check an Elasticsearch 8 node makes.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from elasticsearch import AsyncElasticsearch
from pydantic import ValidationError

from adapters.elasticsearch import (
    ADAPTER,
    DEFAULT_TEMPLATE_BODY,
    ElasticsearchConfig,
    ElasticsearchHandler,
    TemplateState,
)
from adapters.elasticsearch._encoding import DocumentEncoder
from adapters.elasticsearch._sender import BulkSender
from adapters.stdio import StdioConfig
from adapters.stdio._handler import LineEncoder
from mixer import HandlerEnv, HandlerOverloaded, ReportBatch
from mixer.delivery import PermanentError, Record, RetryableError
from mixer.templates import (
    Instance,
    ListEntryInstance,
    LogEntryInstance,
    MetricInstance,
    TraceSpanInstance,
)
from plugins.manager import BUILTIN_ADAPTERS, create_plugin_manager
from tests.fakes.fake_elasticsearch import SERVER_VERSION, FakeElasticsearch

_LOG = logging.getLogger("test.elasticsearch")
_NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
#: Delivery tuned for tests: batches leave at once, retries come quickly.
_FAST_DELIVERY: dict[str, Any] = {
    "batch_timeout": "5ms",
    "retry_initial_interval": "10ms",
    "retry_max_interval": "100ms",
    "send_timeout": "5s",
}
_COMPAT_8 = "application/vnd.elasticsearch+json; compatible-with=8"
_NDJSON_8 = "application/vnd.elasticsearch+x-ndjson; compatible-with=8"
_SHORT_OUTAGE = 2.0
_SOAK_OUTAGE = 20.0


@pytest.fixture
async def es() -> AsyncIterator[FakeElasticsearch]:
    async with FakeElasticsearch() as fake:
        yield fake


def _config(es: FakeElasticsearch, **params: Any) -> ElasticsearchConfig:
    params.setdefault("hosts", [es.url])
    params["delivery"] = {**_FAST_DELIVERY, **params.get("delivery", {})}
    return ElasticsearchConfig.model_validate(params)


def _handler(
    es: FakeElasticsearch, data_dir: Path | None, now: Callable[[], datetime] = lambda: _NOW, **params: Any
) -> ElasticsearchHandler:
    return ElasticsearchHandler(_config(es, **params), HandlerEnv("es.test", _LOG, data_dir), now=now)


def _sender(es: FakeElasticsearch, **params: Any) -> BulkSender:
    params.setdefault("index_template", {"install": False})
    return BulkSender(_config(es, **params), _LOG, name="es.test")


def _access_log(seq: int, when: datetime = _NOW, **variables: Any) -> LogEntryInstance:
    return LogEntryInstance(
        "accesslog.logentry.istio-system",
        variables={"seq": seq, **variables},
        timestamp=when,
        severity="info",
    )


def _batch(*instances: Instance) -> ReportBatch:
    return ReportBatch("es.test", list(instances))


def _records(count: int, *, route: str = "docs", pad: int = 0) -> list[Record]:
    return [Record(json.dumps({"seq": i, "pad": "x" * pad}).encode(), route) for i in range(count)]


async def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


def _seqs(es: FakeElasticsearch, name: str) -> list[int]:
    return sorted(doc["seq"] for doc in es.documents(name))


def _template_state(handler: ElasticsearchHandler) -> TemplateState:
    return handler.sender.template_state


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the fake itself -------------------------------------------------------------------------


async def _raw(
    es: FakeElasticsearch, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, es.url + path, data=body or None, headers=headers or {}) as response,
    ):
        text = await response.text()
        return response.status, dict(response.headers), json.loads(text) if text else None


async def test_fake_refuses_a_9x_client_like_an_8x_node(es: FakeElasticsearch) -> None:
    body = b'{"index":{"_index":"logs"}}\n{"a":1}\n'
    v9 = {
        "Accept": "application/vnd.elasticsearch+json; compatible-with=9",
        "Content-Type": "application/vnd.elasticsearch+x-ndjson; compatible-with=9",
    }
    status, headers, answer = await _raw(es, "PUT", "/_bulk", body, v9)
    assert status == 400
    assert headers["X-Elastic-Product"] == "Elasticsearch"
    assert answer["error"]["type"] == "media_type_header_exception"
    assert "must be either version 8 or 7, but found 9" in answer["error"]["caused_by"]["reason"]
    assert es.documents("logs") == []

    mixed = {"Accept": _COMPAT_8, "Content-Type": "application/x-ndjson"}
    status, _, answer = await _raw(es, "PUT", "/_bulk", body, mixed)
    assert status == 400
    assert "required on both Content-Type and Accept" in answer["error"]["caused_by"]["reason"]

    mismatch = {
        "Accept": _COMPAT_8,
        "Content-Type": "application/vnd.elasticsearch+x-ndjson; compatible-with=7",
    }
    status, _, answer = await _raw(es, "PUT", "/_bulk", body, mismatch)
    assert status == 400
    assert "have to match" in answer["error"]["caused_by"]["reason"]

    for version in (7, 8):
        headers_ok = {
            "Accept": f"application/vnd.elasticsearch+json; compatible-with={version}",
            "Content-Type": f"application/vnd.elasticsearch+x-ndjson; compatible-with={version}",
        }
        status, headers, answer = await _raw(es, "POST", "/_bulk", body, headers_ok)
        assert status == 200
        assert headers["Content-Type"] == "application/vnd.elasticsearch+json;compatible-with=8"
    status, headers, _ = await _raw(es, "PUT", "/_bulk", body, {"Content-Type": "application/x-ndjson"})
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    status, _, _ = await _raw(es, "PUT", "/_bulk", body, {"Content-Type": "text/plain"})
    assert status == 406
    assert len(es.documents("logs")) == 3


async def test_fake_answers_the_real_client(es: FakeElasticsearch) -> None:
    client = AsyncElasticsearch(es.url)
    try:
        info = await client.info()
        assert info["version"]["number"] == SERVER_VERSION
        assert info["tagline"] == "You Know, for Search"
        answer = await client.bulk(
            operations=[
                {"index": {"_index": "a"}},
                {"n": 1},
                {"create": {"_index": "b", "_id": "x"}},
                {"n": 2},
            ]
        )
        assert answer["errors"] is False
        assert [next(iter(item.values()))["status"] for item in answer["items"]] == [201, 201]
        again = await client.bulk(operations=[{"create": {"_index": "b", "_id": "x"}}, {"n": 3}])
        assert again["items"][0]["create"]["status"] == 409
        assert es.documents("a") == [{"n": 1}]
        assert es.documents("b") == [{"n": 2}]
        request = es.requests[-1]
        assert request.method == "PUT"
        assert request.path == "/_bulk"
        assert request.headers["Accept"] == _COMPAT_8
    finally:
        await client.close()


async def test_fake_applies_filter_path_as_elasticsearch_does(es: FakeElasticsearch) -> None:
    client = AsyncElasticsearch(es.url)
    try:
        operations: list[dict[str, object]] = [{"create": {"_index": "f", "_id": "y"}}, {"n": 1}]
        first = await client.bulk(operations=operations, filter_path="errors,items.*.status,items.*.error")
        assert first.body == {"errors": False, "items": [{"create": {"status": 201}}]}
        again = await client.bulk(operations=operations, filter_path="errors,items.*.status,items.*.error")
        assert again["errors"] is True
        (item,) = again["items"]
        assert set(item["create"]) == {"status", "error"}
        assert item["create"]["error"]["type"] == "version_conflict_engine_exception"
        nothing = await client.bulk(operations=[{"index": {"_index": "f"}}, {"n": 2}], filter_path="no.such")
        assert nothing.body == {}
    finally:
        await client.close()


async def test_fake_refuses_malformed_bulk_bodies_as_a_whole(es: FakeElasticsearch) -> None:
    headers = {"Content-Type": "application/x-ndjson"}
    cases = [
        (b'{"index":{"_index":"a"}}\n{"n":1}', "terminated by a newline"),
        (b"not json\n{}\n", "Malformed action/metadata line [1]"),
        (b'{"index":{"_index":"a"}}\n', "source is missing"),
        (b'{"index":{}}\n{"n":1}\n', "index is missing"),
        (b'{"upsert":{"_index":"a"}}\n{"n":1}\n', "but found [upsert]"),
        (b'{"index":{"_index":"a","colour":1}}\n{"n":1}\n', "unknown parameter [colour]"),
    ]
    for body, reason in cases:
        status, headers_seen, answer = await _raw(es, "POST", "/_bulk", body, headers)
        assert status == 400, body
        assert reason in answer["error"]["reason"], (body, answer)
        assert headers_seen["X-Elastic-Product"] == "Elasticsearch"
    assert es.indices == []
    assert es.bulk_requests == []
    status, _, answer = await _raw(es, "POST", "/idx/_bulk", b'{"index":{}}\n{"n":1}\n', headers)
    assert status == 200
    assert answer["items"][0]["index"]["_index"] == "idx"
    status, _, answer = await _raw(es, "POST", "/_bulk", b'{"index":{"_index":"Bad"}}\n{"n":1}\n', headers)
    assert answer["items"][0]["index"]["error"]["type"] == "invalid_index_name_exception"
    status, _, answer = await _raw(es, "POST", "/_bulk", b'{"index":{"_index":"a"}}\n{"n":NaN}\n', headers)
    assert answer["errors"] is True
    assert answer["items"][0]["index"]["status"] == 400


async def test_fake_data_streams_need_a_template_create_ops_and_timestamps(es: FakeElasticsearch) -> None:
    client = AsyncElasticsearch(es.url)
    try:
        status, _, answer = await _raw(es, "PUT", "/_data_stream/logs-app")
        assert status == 400
        assert "no matching index template" in answer["error"]["reason"]
        await client.indices.put_index_template(name="logs-app", index_patterns=["logs-app*"], data_stream={})
        assert await client.indices.exists_index_template(name="logs-app")
        got = await client.indices.get_index_template(name="logs-app")
        assert got["index_templates"][0]["index_template"]["index_patterns"] == ["logs-app*"]
        answer = await client.bulk(
            operations=[
                {"index": {"_index": "logs-app"}},
                {"@timestamp": "2024-05-06T00:00:00Z"},
                {"create": {"_index": "logs-app"}},
                {"message": "no time"},
                {"create": {"_index": "logs-app"}},
                {"@timestamp": "2024-05-06T00:00:00Z", "n": 1},
            ]
        )
        statuses = [next(iter(item.values()))["status"] for item in answer["items"]]
        assert statuses == [400, 400, 201]
        assert "op_type of create" in answer["items"][0]["index"]["error"]["reason"]
        assert "[@timestamp] is missing" in answer["items"][1]["create"]["error"]["reason"]
        assert es.data_streams == {"logs-app": "logs-app"}
        assert es.documents("logs-app") == [{"@timestamp": "2024-05-06T00:00:00Z", "n": 1}]
        assert any(name.startswith(".ds-logs-app-") for name in es.indices)
        streams = await client.indices.get_data_stream(name="logs-app")
        assert streams["data_streams"][0]["timestamp_field"] == {"name": "@timestamp"}
        await client.indices.delete_index_template(name="logs-app")
        assert not await client.indices.exists_index_template(name="logs-app")
    finally:
        await client.close()


async def test_fake_scripted_failures() -> None:
    now = [100.0]
    async with FakeElasticsearch(clock=lambda: now[0]) as es:
        client = AsyncElasticsearch(es.url, max_retries=0, retry_on_status=())
        ops: list[Any] = [{"index": {"_index": "a"}}, {"n": 1}, {"index": {"_index": "a"}}, {"n": 2}]
        try:
            es.fail_items(1)
            es.reject_documents(lambda doc: doc.get("n") == 2)
            answer = await client.bulk(operations=ops)
            assert [item["index"]["status"] for item in answer["items"]] == [429, 400]
            assert answer["items"][0]["index"]["error"]["type"] == "es_rejected_execution_exception"
            assert answer["items"][1]["index"]["error"]["type"] == "mapper_parsing_exception"
            es.clear_failures()

            es.fail_requests(count=1, after=1)
            assert (await client.bulk(operations=ops))["errors"] is False
            with pytest.raises(Exception, match="503"):
                await client.bulk(operations=ops)
            assert (await client.bulk(operations=ops))["errors"] is False

            es.fail_requests(seconds=5)
            with pytest.raises(Exception, match="503"):
                await client.info()
            now[0] += 5
            assert (await client.info())["cluster_name"] == "fake-elasticsearch"

            # aiohttp resends once on its own when a reused connection closes without an answer.
            es.drop_connections(2)
            with pytest.raises(Exception, match=r"[Cc]onnection"):
                await client.bulk(operations=ops)
            assert [r.status for r in es.requests[-2:]] == [0, 0]
            assert es.indexed_count("a") == 4
        finally:
            await client.close()


async def test_fake_authentication_and_bounded_storage() -> None:
    async with FakeElasticsearch(api_key="c2VjcmV0", max_documents_per_index=3) as es:
        status, headers, answer = await _raw(es, "GET", "/")
        assert status == 401
        assert headers["X-Elastic-Product"] == "Elasticsearch"
        assert "missing authentication credentials" in answer["error"]["reason"]
        status, _, _ = await _raw(es, "GET", "/", headers={"Authorization": "ApiKey wrong"})
        assert status == 401
        client = AsyncElasticsearch(es.url, api_key="c2VjcmV0")
        try:
            ops: list[Any] = []
            for n in range(5):
                ops += [{"index": {"_index": "a"}}, {"n": n}]
            assert (await client.bulk(operations=ops))["errors"] is False
        finally:
            await client.close()
        assert es.documents("a") == [{"n": 2}, {"n": 3}, {"n": 4}]
        assert es.indexed_count("a") == 5


# -- documents ---------------------------------------------------------------------------------


def test_logentry_document_is_the_stdio_line_plus_timestamp_routed_by_day() -> None:
    config = ElasticsearchConfig()
    encoder = DocumentEncoder(config, lambda: _NOW)
    # 23:30 at UTC-2 is the next day in UTC: the index follows UTC.
    when = datetime(2024, 5, 6, 23, 30, 0, 250000, tzinfo=timezone(timedelta(hours=-2)))
    instance = _access_log(
        7,
        when,
        latency=timedelta(milliseconds=7.25),
        sourceIp=ipaddress.ip_address("10.0.0.1"),
        absent=None,
        **{"@timestamp": "spoofed"},
    )
    record = encoder.encode(instance)
    assert record is not None
    assert record.route == "mixer-accesslog-2024.05.07"
    document = json.loads(record.payload)
    assert document == {
        "@timestamp": "2024-05-07T01:30:00.250000Z",
        "level": "info",
        "time": "2024-05-07T01:30:00.250000Z",
        "instance": "accesslog.logentry.istio-system",
        "latency": "7.25ms",
        "seq": 7,
        "sourceIp": "10.0.0.1",
    }
    stdio_line = LineEncoder(StdioConfig(), lambda: _NOW).encode(
        _access_log(7, when, latency=timedelta(milliseconds=7.25), sourceIp=ipaddress.ip_address("10.0.0.1"))
    )
    assert stdio_line is not None
    assert {k: v for k, v in document.items() if k != "@timestamp"} == json.loads(stdio_line)


def test_metric_and_span_documents_and_other_templates() -> None:
    encoder = DocumentEncoder(ElasticsearchConfig(data_stream="metrics-mixer-default"), lambda: _NOW)
    metric = encoder.encode(MetricInstance("requestcount.istio-system", value=1, dimensions={"code": 200}))
    assert metric is not None
    assert metric.route == "metrics-mixer-default"
    assert json.loads(metric.payload) == {
        "@timestamp": "2024-05-06T07:08:09.123456Z",
        "level": "info",
        "time": "2024-05-06T07:08:09.123456Z",
        "instance": "requestcount.instance.istio-system",
        "value": 1,
        "code": 200,
    }
    start = datetime(2024, 5, 6, 1, 2, 3, tzinfo=UTC)
    span = TraceSpanInstance(
        "span.istio-system",
        trace_id="abc",
        span_id="def",
        span_name="GET /",
        start_time=start,
        end_time=start + timedelta(milliseconds=5),
        span_tags={"peer": "x", "took": timedelta(seconds=1)},
        http_status_code=200,
        destination_ip=ipaddress.ip_address("10.1.2.3"),
    )
    span_record = encoder.encode(span)
    assert span_record is not None
    assert json.loads(span_record.payload) == {
        "@timestamp": "2024-05-06T01:02:03.000000Z",
        "instance": "span.istio-system",
        "trace_id": "abc",
        "span_id": "def",
        "span_name": "GET /",
        "start_time": "2024-05-06T01:02:03.000000Z",
        "end_time": "2024-05-06T01:02:03.005000Z",
        "span_tags": {"peer": "x", "took": "1s"},
        "http_status_code": 200,
        "destination_ip": "10.1.2.3",
    }
    assert encoder.encode(ListEntryInstance("list.istio-system", value="x")) is None
    # A lone surrogate cannot be UTF-8; the document is kept with a replacement.
    odd = encoder.encode(_access_log(1, path="/\ud800"))
    assert odd is not None
    assert json.loads(odd.payload)["path"] == "/?"


def test_fixed_index_name_and_timestamp_free_logentry() -> None:
    encoder = DocumentEncoder(ElasticsearchConfig(index="access"), lambda: _NOW)
    record = encoder.encode(LogEntryInstance("a.ns", variables={"x": 1}))
    assert record is not None
    assert record.route == "access"
    assert json.loads(record.payload)["@timestamp"] == "2024-05-06T07:08:09.123456Z"
    hourly = DocumentEncoder(ElasticsearchConfig(index="access-%Y.%m.%d-%H"), lambda: _NOW)
    routes = [hourly.route(_NOW + timedelta(minutes=40 * i)) for i in range(3)]
    assert routes == ["access-2024.05.06-07", "access-2024.05.06-07", "access-2024.05.06-08"]
    daily = DocumentEncoder(ElasticsearchConfig(), lambda: _NOW)
    assert [daily.route(_NOW + timedelta(hours=9 * i)) for i in range(3)] == [
        "mixer-accesslog-2024.05.06",
        "mixer-accesslog-2024.05.06",
        "mixer-accesslog-2024.05.07",
    ]


# -- config ------------------------------------------------------------------------------------


def test_defaults_and_template_request() -> None:
    config = ElasticsearchConfig()
    assert config.hosts == ["http://127.0.0.1:9200"]
    assert config.index == "mixer-accesslog-%Y.%m.%d"
    assert config.template_name == "mixer-accesslog"
    request = config.template_request()
    assert request["index_patterns"] == ["mixer-accesslog-*"]
    assert request["priority"] == 200
    assert request["template"] == DEFAULT_TEMPLATE_BODY
    assert "data_stream" not in request
    stream = ElasticsearchConfig(data_stream="logs-mixer-default")
    assert stream.template_name == "logs-mixer-default"
    assert stream.template_request()["data_stream"] == {}
    assert stream.template_request()["index_patterns"] == ["logs-mixer-default"]
    custom = ElasticsearchConfig.model_validate(
        {
            "index": "%Y-access",
            "index_template": {
                "name": "access",
                "index_patterns": ["*-access"],
                "priority": 7,
                "body": {"settings": {"number_of_shards": 1}},
            },
        }
    )
    assert custom.template_request()["template"] == {"settings": {"number_of_shards": 1}}
    secret = ElasticsearchConfig(api_key="c2VjcmV0")  # type: ignore[arg-type]
    assert "c2VjcmV0" not in repr(secret)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"index": "logs-%Y", "data_stream": "logs-x"}, "not both"),
        ({"index": "Logs-%Y"}, "uppercase"),
        ({"index": "logs-%b"}, "uppercase"),
        ({"index": "logs %Y"}, "contains"),
        ({"index": "_logs"}, "starts with"),
        ({"data_stream": "logs-%Y"}, "not a pattern"),
        ({"data_stream": ".ds-x"}, ".ds-"),
        ({"hosts": []}, "at least 1"),
        ({"hosts": ["127.0.0.1:9200"]}, "http:// or https://"),
        ({"hosts": ["http://u:p@127.0.0.1:9200"]}, "credentials"),
        ({"hosts": ["http://127.0.0.1:port"]}, "127.0.0.1:port"),
        ({"username": "u"}, "go together"),
        ({"username": "u", "password": "p", "api_key": "k"}, "not both"),
        ({"tls": {"verify": False}}, "https://"),
        ({"bulk_max_bytes": 200 * 1024 * 1024}, "less than or equal"),
        ({"bulk_max_records": 0}, "greater than 0"),
        ({"request_timeout": "0s"}, "greater than"),
        ({"index": "%Y-logs"}, "index_patterns"),
        ({"index_template": {"body": {"index_patterns": ["x"]}}}, "params of their own"),
        ({"index_template": {"name": "Bad Name"}}, "refused"),
        ({"delivery": {"batch_max_records": 0}}, "greater than 0"),
        ({"flush_interval": 1}, "Extra inputs"),
    ],
)
def test_config_validation(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ElasticsearchConfig.model_validate(params)


def test_registered_as_a_builtin_adapter() -> None:
    assert "adapters.elasticsearch" in BUILTIN_ADAPTERS
    info = create_plugin_manager(blocked=()).registry().adapter("elasticsearch")
    assert info is not None
    assert info.templates == {"logentry", "metric", "tracespan"}
    assert info.config_model is ElasticsearchConfig
    assert info.factory is ADAPTER.factory
    assert info.origin == "builtin"


# -- the sender --------------------------------------------------------------------------------


async def test_batches_are_cut_by_count(es: FakeElasticsearch) -> None:
    sender = _sender(es, bulk_max_records=10)
    try:
        assert await sender.send(_records(25)) is None
    finally:
        await sender.close()
    assert [request.item_count for request in es.bulk_requests] == [10, 10, 5]
    assert _seqs(es, "docs") == list(range(25))


async def test_batches_are_cut_by_bytes(es: FakeElasticsearch) -> None:
    sender = _sender(es, bulk_max_bytes=4096)
    records = _records(12, pad=900)
    try:
        assert (
            await sender.send([*records, Record(json.dumps({"seq": 99, "pad": "y" * 9000}).encode(), "docs")])
            is None
        )
    finally:
        await sender.close()
    sizes = [request.body_size for request in es.bulk_requests]
    assert all(size <= 4096 for size in sizes[:-1])
    assert sizes[-1] > 9000  # a document larger than the limit goes alone
    assert [request.item_count for request in es.bulk_requests] == [4, 4, 4, 1]
    assert _seqs(es, "docs") == [*range(12), 99]


async def test_item_outcomes_map_to_retry_and_rejected(es: FakeElasticsearch) -> None:
    sender = _sender(es)
    es.fail_items(2)  # the first two items: 429
    es.reject_documents(lambda doc: doc["seq"] == 4, reason="failed to parse field [seq]")
    es.reject_documents(lambda doc: doc["seq"] == 5, status=503, error_type="unavailable_shards_exception")
    es.reject_documents(
        lambda doc: doc["seq"] == 6, status=409, error_type="version_conflict_engine_exception"
    )
    try:
        result = await sender.send(_records(8))
    finally:
        await sender.close()
    assert result is not None
    assert result.retry == (0, 1, 5)
    assert [index for index, _ in result.rejected] == [4, 6]
    assert result.rejected[0][1] == "400 mapper_parsing_exception: failed to parse field [seq]"
    assert result.rejected[1][1].startswith("409 version_conflict_engine_exception")
    assert _seqs(es, "docs") == [2, 3, 7]


async def test_whole_request_failures_are_classified(es: FakeElasticsearch) -> None:
    sender = _sender(es)
    try:
        es.fail_requests(count=1)
        with pytest.raises(RetryableError, match="503 cluster_block_exception"):
            await sender.send(_records(3))
        es.fail_requests(count=1, status=429, error_type="circuit_breaking_exception")
        with pytest.raises(RetryableError, match="429"):
            await sender.send(_records(3))
        es.fail_requests(count=1, status=401, error_type="security_exception")
        with pytest.raises(RetryableError, match="401"):
            await sender.send(_records(3))
        es.fail_requests(count=1, status=400, error_type="parse_exception", reason="bad body")
        with pytest.raises(PermanentError, match="400 parse_exception: bad body"):
            await sender.send(_records(3))
        es.fail_requests(count=1, status=400, error_type="media_type_header_exception")
        with pytest.raises(RetryableError, match="media_type_header_exception"):
            await sender.send(_records(3))
        es.drop_connections(2)
        with pytest.raises(RetryableError, match="ConnectionError"):
            await sender.send(_records(3))
        assert es.documents("docs") == []
        await es.close()
        with pytest.raises(RetryableError, match="ConnectionError"):
            await sender.send(_records(3))
    finally:
        await sender.close()


async def test_a_server_that_is_not_elasticsearch_is_retryable() -> None:
    async def bulk(request: web.Request) -> web.Response:
        return web.json_response({"errors": False, "items": []})

    app = web.Application()
    app.router.add_route("*", "/_bulk", bulk)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    config = ElasticsearchConfig.model_validate(
        {"hosts": [f"http://127.0.0.1:{port}"], "index_template": {"install": False}}
    )
    sender = BulkSender(config, _LOG, name="es.test")
    try:
        with pytest.raises(RetryableError, match="not Elasticsearch"):
            await sender.send(_records(1))
    finally:
        await sender.close()
        await runner.cleanup()


async def test_a_later_request_failing_keeps_the_earlier_results(es: FakeElasticsearch) -> None:
    sender = _sender(es, bulk_max_records=2)
    es.fail_requests(count=1, after=1)
    es.reject_documents(lambda doc: doc["seq"] == 1)
    try:
        result = await sender.send(_records(6))
    finally:
        await sender.close()
    assert result is not None
    assert result.retry == (2, 3, 4, 5)
    assert [index for index, _ in result.rejected] == [1]
    assert _seqs(es, "docs") == [0]


async def test_too_large_requests_are_split() -> None:
    async with FakeElasticsearch(max_content_length=3000) as es:
        sender = _sender(es)
        records = [*_records(8, pad=300), Record(json.dumps({"seq": 8, "pad": "z" * 4000}).encode(), "docs")]
        try:
            result = await sender.send(records)
        finally:
            await sender.close()
        assert result is not None
        assert result.retry == ()
        assert [index for index, _ in result.rejected] == [8]
        assert "413 content_too_long_exception" in result.rejected[0][1]
        assert _seqs(es, "docs") == list(range(8))
        assert 413 in [request.status for request in es.requests]


# -- the handler with delivery -----------------------------------------------------------------


async def test_access_logs_land_in_daily_indices(es: FakeElasticsearch, tmp_path: Path) -> None:
    handler = _handler(es, tmp_path)
    day_two = _NOW + timedelta(days=1)
    await handler.start()
    try:
        handler.handle_report(
            _batch(*(_access_log(i, _NOW if i < 3 else day_two, path="/x") for i in range(5)))
        )
        handler.handle_report(_batch(ListEntryInstance("ignored.ns", value=1)))
        await _eventually(lambda: len(es.documents("mixer-accesslog-2024.05.07")) == 2)
        await _eventually(lambda: len(es.documents("mixer-accesslog-2024.05.06")) == 3)
    finally:
        await handler.shutdown(2.0)
    first = es.documents("mixer-accesslog-2024.05.06")[0]
    assert first == {
        "@timestamp": "2024-05-06T07:08:09.123456Z",
        "level": "info",
        "time": "2024-05-06T07:08:09.123456Z",
        "instance": "accesslog.logentry.istio-system",
        "path": "/x",
        "seq": 0,
    }
    assert handler.ignored == 1
    assert handler.sender.template_state is TemplateState.INSTALLED
    template = es.index_templates["mixer-accesslog"]
    assert template["index_patterns"] == ["mixer-accesslog-*"]
    assert template["template"] == DEFAULT_TEMPLATE_BODY
    paths = [request.path for request in es.requests]
    assert paths.index("/_index_template/mixer-accesslog") < paths.index("/_bulk")
    assert {action for request in es.bulk_requests for action, _ in request.actions} == {"index"}
    assert handler.delivery.stats.sent == 5
    with pytest.raises(HandlerOverloaded):
        handler.handle_report(_batch(_access_log(9)))


async def test_data_stream_mode_uses_create_ops(es: FakeElasticsearch, tmp_path: Path) -> None:
    handler = _handler(es, tmp_path, data_stream="logs-mixer-default")
    await handler.start()
    try:
        handler.handle_report(_batch(*(_access_log(i) for i in range(4))))
        handler.handle_report(_batch(MetricInstance("requestcount.ns", value=2)))
        await _eventually(lambda: len(es.documents("logs-mixer-default")) == 5)
    finally:
        await handler.shutdown(2.0)
    assert es.data_streams == {"logs-mixer-default": "logs-mixer-default"}
    assert es.index_templates["logs-mixer-default"]["data_stream"] == {}
    assert {request.actions[0] for request in es.bulk_requests} == {("create", "logs-mixer-default")}
    assert all("@timestamp" in doc for doc in es.documents("logs-mixer-default"))


async def test_per_item_429s_are_retried_until_accepted(es: FakeElasticsearch, tmp_path: Path) -> None:
    handler = _handler(es, tmp_path, delivery={"batch_max_records": 20})
    es.fail_items(30)
    await handler.start()
    try:
        for start in range(0, 100, 10):
            handler.handle_report(_batch(*(_access_log(i) for i in range(start, start + 10))))
        await _eventually(lambda: es.indexed_count("mixer-accesslog-2024.05.06") >= 100)
        await asyncio.sleep(0.05)
    finally:
        await handler.shutdown(2.0)
    statuses = [status for request in es.bulk_requests for status in request.statuses]
    assert statuses.count(429) == 30
    assert statuses.count(201) == 100
    # Nothing lost and, as only the refused items were sent again, nothing twice.
    assert _seqs(es, "mixer-accesslog-2024.05.06") == list(range(100))
    assert es.indexed_count("mixer-accesslog-2024.05.06") == 100
    assert handler.delivery.stats.dead_lettered == 0


async def test_item_400s_go_to_the_dead_letter_with_the_reason(es: FakeElasticsearch, tmp_path: Path) -> None:
    handler = _handler(es, tmp_path)
    es.reject_documents(
        lambda doc: doc.get("code") == "abc",
        reason="failed to parse field [code] of type [long] in document",
    )
    await handler.start()
    try:
        handler.handle_report(
            _batch(_access_log(0, code=200), _access_log(1, code="abc"), _access_log(2, code=404))
        )
        await _eventually(lambda: handler.delivery.stats.dead_lettered == 1)
        await _eventually(lambda: len(es.documents("mixer-accesslog-2024.05.06")) == 2)
    finally:
        await handler.shutdown(2.0)
    lines = (tmp_path / "dead-letter.jsonl").read_text().splitlines()
    assert len(lines) == 1
    letter = json.loads(lines[0])
    assert letter["reason"] == (
        "400 mapper_parsing_exception: failed to parse field [code] of type [long] in document"
    )
    assert letter["route"] == "mixer-accesslog-2024.05.06"
    assert json.loads(base64.b64decode(letter["payload"]))["seq"] == 1
    assert _seqs(es, "mixer-accesslog-2024.05.06") == [0, 2]


async def _outage_then_recovery(es: FakeElasticsearch, tmp_path: Path, seconds: float) -> None:
    handler = _handler(es, tmp_path, delivery={"retry_max_interval": "200ms"})
    await handler.start()
    es.fail_requests(seconds=seconds)
    sent = 0
    try:
        deadline = time.monotonic() + seconds + 0.5
        while time.monotonic() < deadline:
            handler.handle_report(_batch(*(_access_log(i) for i in range(sent, sent + 25))))
            sent += 25
            await asyncio.sleep(0.05)
        await _eventually(lambda: len(es.documents("mixer-accesslog-2024.05.06")) >= sent, timeout=15.0)
    finally:
        await handler.shutdown(2.0)
    assert 503 in [request.status for request in es.requests]
    assert _seqs(es, "mixer-accesslog-2024.05.06") == list(range(sent))
    assert handler.delivery.stats.failed > 0


async def test_short_503_outage_then_every_record_arrives(es: FakeElasticsearch, tmp_path: Path) -> None:
    await _outage_then_recovery(es, tmp_path, _SHORT_OUTAGE)


@pytest.mark.slow
async def test_20s_503_outage_then_every_record_arrives(es: FakeElasticsearch, tmp_path: Path) -> None:
    await _outage_then_recovery(es, tmp_path, _SOAK_OUTAGE)


async def test_dropped_answers_cause_duplicates_only_through_retries(
    es: FakeElasticsearch, tmp_path: Path
) -> None:
    handler = _handler(es, tmp_path)
    await handler.start()
    await _eventually(lambda: handler.sender.template_state is TemplateState.INSTALLED)
    # Indexed, then the connection drops: the transport resends once, that drops too, delivery retries.
    es.drop_connections(2, after_indexing=True)
    try:
        handler.handle_report(_batch(*(_access_log(i) for i in range(5))))
        await _eventually(lambda: handler.delivery.stats.sent == 5)
    finally:
        await handler.shutdown(2.0)
    assert len(es.bulk_requests) == 3
    assert es.indexed_count("mixer-accesslog-2024.05.06") == 3 * 5
    assert sorted(set(_seqs(es, "mixer-accesslog-2024.05.06"))) == list(range(5))


async def test_start_does_not_wait_for_elasticsearch(tmp_path: Path) -> None:
    port = _free_port()
    es = FakeElasticsearch(port=port)
    config = ElasticsearchConfig.model_validate(
        {"hosts": [f"http://127.0.0.1:{port}"], "delivery": _FAST_DELIVERY}
    )
    handler = ElasticsearchHandler(config, HandlerEnv("es.test", _LOG, tmp_path), now=lambda: _NOW)
    started = time.monotonic()
    await handler.start()
    assert time.monotonic() - started < 0.5
    try:
        handler.handle_report(_batch(*(_access_log(i) for i in range(3))))
        await asyncio.sleep(0.3)
        assert _template_state(handler) is TemplateState.PENDING
        await es.start()
        await _eventually(lambda: len(es.documents("mixer-accesslog-2024.05.06")) == 3)
    finally:
        await handler.shutdown(2.0)
        await es.close()
    assert "mixer-accesslog" in es.index_templates
    assert _template_state(handler) is TemplateState.INSTALLED


async def test_a_refused_template_is_given_up_and_documents_still_flow(
    es: FakeElasticsearch, tmp_path: Path
) -> None:
    handler = _handler(es, tmp_path, index_template={"body": {"settings": {"x": 1}}})
    es.fail_requests(count=1, status=403, error_type="security_exception", reason="action unauthorized")
    await handler.start()
    try:
        await _eventually(lambda: handler.sender.template_state is TemplateState.GIVEN_UP)
        handler.handle_report(_batch(_access_log(1)))
        await _eventually(lambda: len(es.documents("mixer-accesslog-2024.05.06")) == 1)
    finally:
        await handler.shutdown(2.0)
    assert es.index_templates == {}


async def test_credentials_are_sent_and_refused_ones_are_kept_for_retry(tmp_path: Path) -> None:
    async with FakeElasticsearch(api_key="Z29vZA==", basic_auth=("mixer", "pw")) as es:
        accepted: list[dict[str, Any]] = [{"api_key": "Z29vZA=="}, {"username": "mixer", "password": "pw"}]
        for seq, credentials in enumerate(accepted, start=1):
            handler = _handler(es, tmp_path / str(seq), **credentials)
            await _send_one(handler, seq)
        assert _seqs(es, "mixer-accesslog-2024.05.06") == [1, 2]

        refused = _handler(es, tmp_path / "refused", api_key="YmFk", index_template={"install": False})
        await refused.start()
        try:
            refused.handle_report(_batch(_access_log(3)))
            await _eventually(lambda: refused.delivery.stats.failed >= 2)
            assert refused.delivery.stats.dead_lettered == 0
        finally:
            await refused.shutdown(1.0)
        assert _seqs(es, "mixer-accesslog-2024.05.06") == [1, 2]
        assert 401 in [request.status for request in es.requests]


async def _send_one(handler: ElasticsearchHandler, seq: int) -> None:
    await handler.start()
    try:
        handler.handle_report(_batch(_access_log(seq)))
        await _eventually(lambda: handler.delivery.stats.sent == 1)
    finally:
        await handler.shutdown(2.0)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-es")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_https_with_a_ca_file(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with FakeElasticsearch(ssl_context=context) as es:
        assert es.url.startswith("https://127.0.0.1:")
        handler = _handler(es, tmp_path / "data", tls={"ca_file": str(cert)})
        await handler.start()
        try:
            handler.handle_report(_batch(_access_log(1)))
            await _eventually(lambda: len(es.documents("mixer-accesslog-2024.05.06")) == 1)
        finally:
            await handler.shutdown(2.0)

        missing = _handler(es, tmp_path / "data2", tls={"ca_file": str(tmp_path / "nope.pem")})
        with pytest.raises(FileNotFoundError, match=r"tls\.ca_file"):
            await missing.start()
        await missing.shutdown(1.0)
