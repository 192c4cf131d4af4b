"""The kafka adapter: formats, params, encodings, the sender's answers, and a real broker (Tansu).

The sender's error classes are checked against a scripted client (brokers rarely produce those
errors on demand); everything about records reaching Kafka runs against a real Tansu broker and
is read back through a consumer group.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from aiokafka import errors as kafka_errors
from aiokafka.partitioner import murmur2
from aiokafka.protocol.produce import ProduceRequest, ProduceRequest_v7
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import TopicPartition
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from pydantic import ValidationError

from adapters.kafka import (
    ADAPTER,
    EncodeError,
    FormatError,
    InstanceFormat,
    JsonEncoder,
    KafkaConfig,
    KafkaHandler,
    OtlpEncoder,
)
from adapters.kafka._sender import NO_TOPIC_REASON, KafkaSender
from adapters.stdio import StdioConfig
from adapters.stdio._handler import StdioHandler
from mixer import HandlerEnv, ReportBatch
from mixer.delivery import PermanentError, Record, RetryableError, SendResult
from mixer.spans.otlp import encode_instance as otlp_span_record
from mixer.templates import Instance, LogEntryInstance, MetricInstance, QuotaInstance, TraceSpanInstance
from plugins.manager import BUILTIN_ADAPTERS, create_plugin_manager
from tests.backends.kafka import TansuBroker, consume, free_port, tansu, tansu_module, unique_topic

__all__ = ["tansu", "tansu_module"]  # fixtures used by the tests below

_LOG = logging.getLogger("test.kafka")
_NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
#: Delivery tuned for tests: batches leave at once, retries come quickly.
_FAST_DELIVERY: dict[str, Any] = {
    "batch_timeout": "5ms",
    "retry_initial_interval": "20ms",
    "retry_max_interval": "200ms",
    "send_timeout": "5s",
}
_SHORT_OUTAGE = 3.0
_SOAK_OUTAGE = 20.0


# --------------------------------------------------------------------------------- helpers


def _log_entry(seq: int, **variables: Any) -> LogEntryInstance:
    return LogEntryInstance(
        "accesslog.istio-system",
        variables={
            "seq": seq,
            "user": f"user-{seq % 3}",
            "latency": timedelta(milliseconds=7.25),
            **variables,
        },
        timestamp=datetime(2019, 1, 2, 15, 4, 5, 250000, tzinfo=UTC),
        severity="warning",
        monitored_resource_type="global",
        monitored_resource_dimensions={"cluster": "east"},
    )


def _metric(seq: int, value: Any = 1) -> MetricInstance:
    return MetricInstance(
        "requestcount.istio-system",
        value=value,
        dimensions={"seq": seq, "destination_service": "reviews", "response_code": 200},
        monitored_resource_dimensions={"cluster": "east"},
    )


def _span(seq: int, **fields: Any) -> TraceSpanInstance:
    start = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    values: dict[str, Any] = {
        "trace_id": f"{seq + 1:032x}",
        "span_id": f"{seq + 1:016x}",
        "span_name": "/reviews/1",
        "start_time": start,
        "end_time": start + timedelta(milliseconds=12),
        "span_tags": {"seq": seq, "http.method": "GET"},
        "http_status_code": 503,
        "client_span": False,
        "source_name": "productpage",
        "destination_name": "reviews",
        "destination_ip": ip_address("10.0.0.7"),
        **fields,
    }
    return TraceSpanInstance("tracing.istio-system", **values)


def _config(broker: TansuBroker | None = None, **params: Any) -> KafkaConfig:
    params.setdefault("brokers", [broker.bootstrap if broker is not None else f"127.0.0.1:{free_port()}"])
    params.setdefault("request_timeout", "2s")
    params["delivery"] = {**_FAST_DELIVERY, **params.get("delivery", {})}
    return KafkaConfig.model_validate(params)


def _handler(config: KafkaConfig, data_dir: Path | None) -> KafkaHandler:
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    return KafkaHandler(config, HandlerEnv("kafka.test", _LOG, data_dir), now=lambda: _NOW)


def _batch(*instances: Instance) -> ReportBatch:
    return ReportBatch("kafka.test", list(instances))


async def _eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


def _settled(handler: KafkaHandler, sent: int) -> bool:
    stats = handler.stats
    return stats.sent >= sent and not (stats.queued_records or stats.spool_records or stats.in_flight)


def _attributes(key_values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in key_values:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


def _dead_letters(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kafka")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - timedelta(days=1))
        .not_valid_after(datetime.now(UTC) + timedelta(hours=1))
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


# --------------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("text", "instance", "expected"),
    [
        ("mixer-{template}", _log_entry(1), "mixer-logentry"),
        ("mixer-{template}", _span(1), "mixer-tracespan"),
        ("{name}", _metric(1), "requestcount.istio-system"),
        ("{variables[user]}", _log_entry(4), "user-1"),
        ("{variables[seq]}", _log_entry(42), "42"),
        ("{variables[latency]}", _log_entry(1), "7.25ms"),
        ("{dimensions[destination_service]}-{dimensions[response_code]}", _metric(1), "reviews-200"),
        ("{span_tags[http.method]}:{span_name}", _span(1), "GET:/reviews/1"),
        ("{client_span}", _span(1), "false"),
        ("{destination_ip}", _span(1), "10.0.0.7"),
        ("{monitored_resource_dimensions[cluster]}", _metric(1), "east"),
        ('{variables[nope] | dimensions[destination_service] | "x"}', _metric(1), "reviews"),
        ('{variables[nope] | dimensions[nope] | "fallback"}', _metric(1), "fallback"),
        ('{ variables[user] |"x" }', _log_entry(2), "user-2"),
        ("{{literal}}-{template}", _metric(1), "{literal}-metric"),
        ('{"a|b}"}', _metric(1), "a|b}"),
        ("{variables[nope]}", _log_entry(1), None),
        ("{span_name}", _log_entry(1), None),
        ("{severity}", _log_entry(1), "warning"),
    ],
)
def test_format_renders_fields_fallbacks_and_literals(
    text: str, instance: Instance, expected: str | None
) -> None:
    assert InstanceFormat(text).render(instance) == expected


def test_format_without_placeholders_is_constant() -> None:
    assert InstanceFormat("audit.logs").is_constant
    assert not InstanceFormat("audit-{template}").is_constant
    assert InstanceFormat("a-{template}-b").literal_text == "a--b"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{nope}", "unknown field 'nope'"),
        ("{variables}", "is a map"),
        ("{severity[x]}", "not a map"),
        ("{template", "not closed"),
        ("a}b", "unmatched"),
        ("{}", "neither a field"),
        ("{a b}", "neither a field"),
        ('{"x" | name}', "never used"),
        ("{na{me}", "inside a placeholder"),
        ("{Variables[x]}", "neither a field"),
        ("{variables[a]b]}", "neither a field"),
    ],
)
def test_format_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        InstanceFormat(text)


# --------------------------------------------------------------------------------- params


def test_defaults_and_registration() -> None:
    config = KafkaConfig()
    assert config.brokers == ["127.0.0.1:9092"]
    assert config.topic == "mixer-{template}"
    assert config.key is None
    assert config.encoding.value == "json"
    assert config.acks == 1
    assert ADAPTER.templates == {"logentry", "metric", "tracespan"}
    assert "adapters.kafka" in BUILTIN_ADAPTERS
    registered = create_plugin_manager(blocked=()).registry().adapter("kafka")
    assert registered is not None
    assert registered.config_model is KafkaConfig
    assert registered.origin == "builtin"


@pytest.mark.parametrize(
    ("given", "expected"),
    [(0, 0), (1, 1), ("all", "all"), ("ALL", "all"), (-1, "all"), ("-1", "all"), ("0", 0), ("1", 1)],
)
def test_acks_spellings(given: object, expected: object) -> None:
    assert KafkaConfig.model_validate({"acks": given}).acks == expected


def test_durations_sizes_and_secrets() -> None:
    config = KafkaConfig.model_validate(
        {
            "brokers": [" kafka-0:9092", "[::1]:19092"],
            "topic": "audit",
            "key": "{variables[user]}",
            "encoding": "otlp_proto",
            "compression": "zstd",
            "request_timeout": "1500ms",
            "max_batch_size": 1000,
            "max_request_size": 2000,
            "client_id": "mixer-east",
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": "mixer", "password": "s3cret"},
            "tls": {"enabled": True, "ca_file": "/etc/ca.pem"},
            "delivery": {"send_timeout": "3s", "batch_max_records": 100},
        }
    )
    assert config.brokers == ["kafka-0:9092", "[::1]:19092"]
    assert config.request_timeout == timedelta(milliseconds=1500)
    assert config.delivery.batch_max_records == 100
    assert config.sasl is not None
    assert config.sasl.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)
    assert "s3cret" not in config.model_dump_json()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"brokers": []}, "at least 1"),
        ({"brokers": ["kafka"]}, "not host:port"),
        ({"brokers": ["kafka:99999"]}, "port out of range"),
        ({"brokers": ["http://kafka:9092"]}, "not host:port"),
        ({"topic": "bad topic"}, "not a Kafka topic name"),
        ({"topic": ".."}, "not a Kafka topic name"),
        ({"topic": "x" * 250}, "not a Kafka topic name"),
        ({"topic": "logs/{template}"}, "around placeholders"),
        ({"topic": "{nope}"}, "unknown field"),
        ({"key": "{variables}"}, "is a map"),
        ({"encoding": "avro"}, "json"),
        ({"compression": "brotli"}, "gzip"),
        ({"acks": 2}, "acks"),
        ({"acks": True}, "acks"),
        ({"max_batch_size": 0}, "greater than 0"),
        ({"max_batch_size": 4096, "max_request_size": 1024}, "cannot exceed max_request_size"),
        ({"request_timeout": "10s"}, "shorter than delivery.send_timeout"),
        ({"request_timeout": "0s"}, "greater than"),
        ({"client_id": ""}, "at least 1"),
        ({"sasl": {"username": "u"}}, "password"),
        ({"sasl": {"mechanism": "GSSAPI", "username": "u", "password": "p"}}, "PLAIN"),
        ({"sasl": {"username": "u", "password": "p", "extra": 1}}, "Extra inputs"),
        ({"tls": {"ca_file": "/ca.pem"}}, "TLS is off"),
        ({"tls": {"insecure_skip_verify": True}}, "TLS is off"),
        ({"tls": {"enabled": True, "key_file": "/k.pem"}}, "key_file needs cert_file"),
        ({"delivery": {"batch_max_records": 0}}, "greater than 0"),
        ({"linger": "5ms"}, "Extra inputs"),
    ],
)
def test_invalid_params_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaConfig.model_validate(params)


# --------------------------------------------------------------------------------- encodings


async def test_json_is_exactly_what_stdio_writes(tmp_path: Path) -> None:
    path = tmp_path / "stdio.log"
    stdio = StdioHandler(StdioConfig.model_validate({"outputPath": str(path)}), _LOG, now=lambda: _NOW)
    instances: list[Instance] = [
        _log_entry(1, peer=ip_address("10.1.2.3")),
        _metric(2, value=timedelta(seconds=2)),
    ]
    await stdio.start()
    stdio.handle_report(_batch(*instances))
    await stdio.shutdown(2.0)
    lines = path.read_text().splitlines()
    encoder = JsonEncoder(lambda: _NOW)
    assert [encoder.encode(instance).decode() for instance in instances] == lines
    assert json.loads(lines[0])["peer"] == "10.1.2.3"


def test_json_tracespan_takes_stdio_shape() -> None:
    record = json.loads(JsonEncoder(lambda: _NOW).encode(_span(4, parent_span_id=None)))
    assert record["level"] == "info"
    assert record["time"] == "2024-05-06T07:08:09.012000Z"
    assert record["instance"] == "tracing.instance.istio-system"
    assert record["span_id"] == "0000000000000005"
    assert record["span_tags"] == {"seq": 4, "http.method": "GET"}
    assert record["destination_ip"] == "10.0.0.7"
    assert "parent_span_id" not in record
    assert list(record)[3:] == sorted(list(record)[3:])


def test_otlp_log_record() -> None:
    data = logs_pb2.LogsData.FromString(OtlpEncoder(lambda: _NOW).encode(_log_entry(7, empty=None)))
    (resource_logs,) = data.resource_logs
    assert _attributes(resource_logs.resource.attributes) == {
        "cluster": "east",
        "mixer.monitored_resource_type": "global",
    }
    (scope_logs,) = resource_logs.scope_logs
    assert scope_logs.scope.name == "mesh-mixer"
    (record,) = scope_logs.log_records
    assert record.time_unix_nano == 1546441445_250000_000
    assert record.observed_time_unix_nano == 1714979289_123456_000
    assert record.severity_text == "warning"
    assert record.severity_number == logs_pb2.SEVERITY_NUMBER_WARN
    assert _attributes(record.attributes) == {
        "mixer.instance": "accesslog.istio-system",
        "seq": 7,
        "user": "user-1",
        "latency": "7.25ms",
    }


@pytest.mark.parametrize(
    ("severity", "number"),
    [
        ("INFO", logs_pb2.SEVERITY_NUMBER_INFO),
        ("Error", logs_pb2.SEVERITY_NUMBER_ERROR),
        ("fatal", logs_pb2.SEVERITY_NUMBER_FATAL),
        ("debug", logs_pb2.SEVERITY_NUMBER_DEBUG),
        ("verbose", logs_pb2.SEVERITY_NUMBER_UNSPECIFIED),
        (None, logs_pb2.SEVERITY_NUMBER_UNSPECIFIED),
    ],
)
def test_otlp_severity_numbers(severity: str | None, number: int) -> None:
    entry = LogEntryInstance("a.b", variables={"x": 1}, severity=severity)
    (record,) = (
        logs_pb2.LogsData.FromString(OtlpEncoder(lambda: _NOW).encode(entry))
        .resource_logs[0]
        .scope_logs[0]
        .log_records
    )
    assert record.severity_number == number
    assert record.time_unix_nano == 0  # no timestamp: left unset, as OTLP allows


@pytest.mark.parametrize(
    ("value", "field", "expected"),
    [
        (3, "as_int", 3),
        (True, "as_int", 1),
        (2.5, "as_double", 2.5),
        (timedelta(milliseconds=1500), "as_double", 1.5),
    ],
)
def test_otlp_metric_is_one_gauge_point(value: Any, field: str, expected: float) -> None:
    data = metrics_pb2.MetricsData.FromString(OtlpEncoder(lambda: _NOW).encode(_metric(3, value=value)))
    (metric,) = data.resource_metrics[0].scope_metrics[0].metrics
    assert metric.name == "requestcount.istio-system"
    (point,) = metric.gauge.data_points
    assert point.WhichOneof("value") == field
    assert getattr(point, field) == expected
    assert point.time_unix_nano == 1714979289_123456_000
    assert _attributes(point.attributes) == {
        "mixer.instance": "requestcount.istio-system",
        "seq": 3,
        "destination_service": "reviews",
        "response_code": 200,
    }
    assert _attributes(data.resource_metrics[0].resource.attributes) == {"cluster": "east"}


@pytest.mark.parametrize("value", ["1", None, float("nan"), {"a": 1}])
def test_otlp_metric_value_must_be_a_number(value: Any) -> None:
    with pytest.raises(EncodeError, match="not a finite number"):
        OtlpEncoder(lambda: _NOW).encode(_metric(1, value=value))


def test_otlp_span_is_the_otlp_adapters_span_as_traces_data() -> None:
    instance = _span(9, client_span=True, rewrite_client_span_id=True)
    payload = OtlpEncoder(lambda: _NOW).encode(instance)
    data = trace_pb2.TracesData.FromString(payload)
    assert trace_service_pb2.ExportTraceServiceRequest.FromString(
        payload
    ) == trace_service_pb2.ExportTraceServiceRequest(resource_spans=data.resource_spans)
    (resource_spans,) = data.resource_spans
    assert _attributes(resource_spans.resource.attributes)["service.name"] == "productpage"
    (span,) = resource_spans.scope_spans[0].spans
    assert span == trace_pb2.Span.FromString(otlp_span_record(instance).payload)
    assert span.trace_id == bytes.fromhex(f"{10:032x}")
    assert span.span_id != bytes.fromhex(f"{10:016x}")  # rewritten for the client side
    assert span.kind == trace_pb2.Span.SPAN_KIND_CLIENT
    assert span.status.code == trace_pb2.Status.STATUS_CODE_ERROR


def test_unencodable_instances_are_counted_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    handler = _handler(_config(encoding="otlp_proto"), None)
    records = handler.encode(
        _batch(_span(1, trace_id="not-hex"), _metric(2, value="many"), QuotaInstance("q.x"), _log_entry(3))
    )
    assert [record.route for record in records] == ["mixer-logentry"]
    assert handler.encode_errors == 3
    assert "not sent (1 so far)" in caplog.text
    assert JsonEncoder(lambda: _NOW).encode(_span(1, trace_id="not-hex"))  # JSON takes any span


def test_records_carry_topic_and_key() -> None:
    handler = _handler(_config(topic="t-{variables[dest]}", key='{variables[user] | "nobody"}'), None)
    records = handler.encode(
        _batch(_log_entry(1, dest="reviews"), _log_entry(2), _log_entry(3, dest="a/b"), _metric(4))
    )
    assert [(r.route, r.key) for r in records] == [
        ("t-reviews", b"user-1"),
        ("", b"user-2"),
        ("t-a/b", b"user-0"),
        ("", b"nobody"),
    ]
    no_key = _handler(_config(key="{variables[user]}"), None).encode(_batch(_metric(1)))
    assert no_key[0].key is None


# --------------------------------------------------------------------------------- sender (scripted client)


@dataclass
class _Cluster:
    topics: dict[str, int]
    unauthorized_topics: set[str] = field(default_factory=set)
    leaderless: set[TopicPartition] = field(default_factory=set)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self.topics.get(topic)
        return None if count is None else set(range(count))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return {
            p
            for p in self.partitions_for_topic(topic) or set()
            if TopicPartition(topic, p) not in self.leaderless
        }

    def leader_for_partition(self, tp: TopicPartition) -> int | None:
        if tp.topic not in self.topics:
            return None
        return -1 if tp in self.leaderless else tp.partition % 2  # two brokers


@dataclass
class _Produced:
    node: int
    topic: str
    partition: int
    codec: int
    records: list[tuple[bytes | None, bytes | None]]
    request_bytes: int


class _ScriptedClient:
    """Stands in for aiokafka's client; ``errors`` maps a partition to the error code it answers."""

    made: list[_ScriptedClient] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.cluster = _Cluster({"logs": 4})
        self.errors: dict[TopicPartition, int] = {}
        self.send_error: BaseException | None = None
        self.bootstrap_error: BaseException | None = None
        self.metadata_ok = True
        self.metadata_updates = 0
        self.added: list[str] = []
        self.produced: list[_Produced] = []
        self.closed = False
        _ScriptedClient.made.append(self)

    async def bootstrap(self) -> None:
        if self.bootstrap_error is not None:
            raise self.bootstrap_error

    def add_topic(self, topic: str) -> None:
        self.added.append(topic)

    async def force_metadata_update(self) -> bool:
        self.metadata_updates += 1
        return self.metadata_ok

    async def send(self, node: int, request: ProduceRequest) -> Any:
        if self.send_error is not None:
            raise self.send_error
        struct = request.build(ProduceRequest_v7)
        size = sum(len(data) for _, partitions in struct.topics for _, data in partitions)
        answer = []
        for topic, partitions in struct.topics:
            rows = []
            for partition, data in partitions:
                batch = DefaultRecordBatch(bytes(data))
                records = [(r.key, r.value) for r in batch]
                self.produced.append(_Produced(node, topic, partition, batch.compression_type, records, size))
                rows.append((partition, self.errors.get(TopicPartition(topic, partition), 0), 0, -1, 0))
            answer.append((topic, rows))
        if request.required_acks == 0:
            return None
        return _Response(answer)

    async def close(self) -> None:
        self.closed = True


@dataclass
class _Response:
    topics: list[tuple[str, list[tuple[int, int, int, int, int]]]]


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> type[_ScriptedClient]:
    _ScriptedClient.made = []
    monkeypatch.setattr("adapters.kafka._sender.AIOKafkaClient", _ScriptedClient)
    return _ScriptedClient


def _sender(**params: Any) -> KafkaSender:
    return KafkaSender(_config(**params), _LOG)


def _records(count: int, topic: str = "logs", keyed: bool = True) -> list[Record]:
    return [Record(b"v%d" % i, topic, b"user-%d" % (i % 5) if keyed else None) for i in range(count)]


@pytest.mark.parametrize(
    ("compression", "codec"),
    [
        ("none", DefaultRecordBatch.CODEC_NONE),
        ("gzip", DefaultRecordBatch.CODEC_GZIP),
        ("snappy", DefaultRecordBatch.CODEC_SNAPPY),
        ("lz4", DefaultRecordBatch.CODEC_LZ4),
        ("zstd", DefaultRecordBatch.CODEC_ZSTD),
    ],
)
async def test_sender_builds_compressed_batches_partitioned_by_key(
    scripted: type[_ScriptedClient], compression: str, codec: int
) -> None:
    sender = _sender(compression=compression)
    records = _records(40)
    assert await sender.send(records) is None
    (client,) = scripted.made
    assert {p.codec for p in client.produced} == {codec}
    sent = sorted((key, value) for p in client.produced for key, value in p.records)
    assert sent == sorted((r.key, r.payload) for r in records)
    for produced in client.produced:
        assert produced.node == produced.partition % 2
        for key, _ in produced.records:
            assert key is not None
            assert produced.partition == (murmur2(key) & 0x7FFFFFFF) % 4
    await sender.close()
    assert client.closed


async def test_sender_puts_keyless_records_of_a_send_on_one_partition(
    scripted: type[_ScriptedClient],
) -> None:
    sender = _sender()
    assert await sender.send(_records(30, keyed=False)) is None
    (client,) = scripted.made
    assert len(client.produced) == 1
    assert len(client.produced[0].records) == 30
    assert client.added == []  # a topic it has metadata for is not looked up again
    assert client.metadata_updates == 1  # a new client fetches metadata before its first produce
    assert client.kwargs["security_protocol"] == "PLAINTEXT"
    assert client.kwargs["request_timeout_ms"] == 2000


async def test_sender_splits_batches_and_requests_by_size(scripted: type[_ScriptedClient]) -> None:
    sender = _sender(max_batch_size=300, max_request_size=700)
    records = [Record(b"x" * 50, "logs", b"k") for _ in range(40)]
    assert await sender.send(records) is None
    (client,) = scripted.made
    assert sum(len(p.records) for p in client.produced) == 40
    assert len({p.partition for p in client.produced}) == 1
    assert len(client.produced) > 5
    assert max(p.request_bytes for p in client.produced) <= 700
    values = [value for p in client.produced for _, value in p.records]
    assert values == [r.payload for r in records]  # in order within the partition


async def test_sender_rejects_what_can_never_be_sent(scripted: type[_ScriptedClient]) -> None:
    sender = _sender(max_request_size=1000, max_batch_size=1000)
    batch = [
        Record(b"ok", "logs"),
        Record(b"x" * 2000, "logs"),
        Record(b"lost", ""),
        Record(b"odd", "a/b"),
    ]
    result = await sender.send(batch)
    assert result is not None
    assert result.retry == ()
    reasons = dict(result.rejected)
    assert sorted(reasons) == [1, 2, 3]
    assert "larger than max_request_size (1000)" in reasons[1]
    assert reasons[2] == NO_TOPIC_REASON
    assert "invalid Kafka topic name 'a/b'" in reasons[3]
    (client,) = scripted.made
    assert [value for p in client.produced for _, value in p.records] == [b"ok"]


async def test_sender_without_anything_sendable_does_not_connect(scripted: type[_ScriptedClient]) -> None:
    result = await _sender().send([Record(b"lost", "")])
    assert result == SendResult(rejected=((0, NO_TOPIC_REASON),))
    assert scripted.made == []


async def test_sender_answers_per_partition(scripted: type[_ScriptedClient]) -> None:
    sender = _sender()
    records = _records(20)
    assert await sender.send(records[:1]) is None
    client = scripted.made[0]
    partition_of = {r.key: (murmur2(r.key or b"") & 0x7FFFFFFF) % 4 for r in records}
    moved, too_large = partition_of[b"user-0"], partition_of[b"user-1"]
    assert moved != too_large
    client.errors = {
        TopicPartition("logs", moved): kafka_errors.NotLeaderForPartitionError.errno,
        TopicPartition("logs", too_large): kafka_errors.MessageSizeTooLargeError.errno,
    }
    updates = client.metadata_updates
    result = await sender.send(records)
    assert result is not None
    assert list(result.retry) == [i for i, r in enumerate(records) if partition_of[r.key] == moved]
    assert [i for i, _ in result.rejected] == [
        i for i, r in enumerate(records) if partition_of[r.key] == too_large
    ]
    assert all("MessageSizeTooLargeError" in reason for _, reason in result.rejected)
    client.errors = {}
    assert await sender.send(records[:1]) is None
    assert client.metadata_updates == updates + 1  # a failed send refreshes metadata before the next


async def test_sender_topic_without_metadata_is_retried_unless_forbidden(
    scripted: type[_ScriptedClient],
) -> None:
    sender = _sender()
    batch = [Record(b"a", "logs"), Record(b"b", "new-topic"), Record(b"c", "secret")]
    assert await sender.send(batch[:1]) is None
    scripted.made[0].cluster.unauthorized_topics.add("secret")
    result = await sender.send(batch)
    assert result is not None
    assert result.retry == (1,)
    assert [i for i, _ in result.rejected] == [2]
    assert "not authorised" in result.rejected[0][1]
    assert sorted(scripted.made[0].added) == ["new-topic", "secret"]


async def test_sender_leaderless_partition_is_retried(scripted: type[_ScriptedClient]) -> None:
    sender = _sender()
    assert await sender.send(_records(1)) is None
    scripted.made[0].cluster.leaderless.add(TopicPartition("logs", 0))
    keyed_to_zero = [r for r in _records(50) if (murmur2(r.key or b"") & 0x7FFFFFFF) % 4 == 0]
    with pytest.raises(RetryableError, match="LeaderNotAvailable"):
        await sender.send(keyed_to_zero)


async def test_sender_unreachable_brokers_fail_the_whole_batch(scripted: type[_ScriptedClient]) -> None:
    sender = _sender()
    assert await sender.send(_records(3)) is None
    first = scripted.made[0]
    first.send_error = kafka_errors.KafkaConnectionError("Connection at 127.0.0.1:1 closed")
    with pytest.raises(RetryableError, match="accepted none of 3 records"):
        await sender.send(_records(3))
    first.metadata_ok = False
    with pytest.raises(RetryableError, match="metadata"):
        await sender.send(_records(3))
    assert first.closed  # dropped: the next send bootstraps from the configured brokers again
    assert await sender.send(_records(3)) is None
    assert len(scripted.made) == 2
    assert sender.connects == 2


async def test_sender_bootstrap_failure_is_retryable(
    scripted: type[_ScriptedClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = _ScriptedClient.bootstrap

    async def refuse(self: _ScriptedClient) -> None:
        raise kafka_errors.KafkaConnectionError("Unable to bootstrap")

    monkeypatch.setattr(_ScriptedClient, "bootstrap", refuse)
    sender = _sender()
    with pytest.raises(RetryableError, match=r"cannot reach Kafka at 127\.0\.0\.1:"):
        await sender.send(_records(1))
    assert scripted.made[0].closed
    monkeypatch.setattr(_ScriptedClient, "bootstrap", original)
    assert await sender.send(_records(1)) is None


async def test_sender_refused_credentials_fail_the_batch_for_good(scripted: type[_ScriptedClient]) -> None:
    sender = _sender()
    assert await sender.send(_records(1)) is None
    scripted.made[0].errors = {
        TopicPartition("logs", p): kafka_errors.ClusterAuthorizationFailedError.errno for p in range(4)
    }
    with pytest.raises(PermanentError, match="ClusterAuthorizationFailed"):
        await sender.send(_records(5))


async def test_sender_acks_zero_expects_no_answer(scripted: type[_ScriptedClient]) -> None:
    sender = _sender(acks=0)
    scripted_errors = {
        TopicPartition("logs", p): kafka_errors.NotLeaderForPartitionError.errno for p in range(4)
    }
    assert await sender.send(_records(10)) is None
    scripted.made[0].errors = scripted_errors  # never seen: nothing answers acks=0
    assert await sender.send(_records(10)) is None


async def test_sender_closed_sends_nothing(scripted: type[_ScriptedClient]) -> None:
    sender = _sender()
    await sender.close()
    await sender.close()
    with pytest.raises(RetryableError, match="closed"):
        await sender.send(_records(1))
    assert scripted.made == []


async def test_sender_passes_sasl_and_tls(scripted: type[_ScriptedClient], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    sender = _sender(
        sasl={"mechanism": "SCRAM-SHA-256", "username": "mixer", "password": "pw"},
        tls={"enabled": True, "ca_file": str(cert), "cert_file": str(cert), "key_file": str(key)},
    )
    sender.prepare()
    assert await sender.send(_records(1)) is None
    kwargs = scripted.made[0].kwargs
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_username"] == "mixer"
    assert kwargs["sasl_plain_password"] == "pw"
    assert kwargs["ssl_context"].check_hostname
    insecure = _sender(tls={"enabled": True, "insecure_skip_verify": True})
    insecure.prepare()
    assert await insecure.send(_records(1)) is None
    assert scripted.made[1].kwargs["security_protocol"] == "SSL"
    assert not scripted.made[1].kwargs["ssl_context"].check_hostname


async def test_missing_tls_files_fail_the_start(tmp_path: Path) -> None:
    handler = _handler(
        _config(tls={"enabled": True, "ca_file": str(tmp_path / "nope.pem")}), tmp_path / "data"
    )
    with pytest.raises(ValueError, match="TLS files for Kafka cannot be used"):
        await handler.start()
    await handler.shutdown(1.0)


# --------------------------------------------------------------------------------- real broker


async def _report_and_read(
    broker: TansuBroker, handler: KafkaHandler, instances: list[Instance], topics: list[str]
) -> list[Any]:
    await handler.start()
    try:
        for start in range(0, len(instances), 10):
            handler.handle_report(_batch(*instances[start : start + 10]))
        await _eventually(lambda: _settled(handler, len(instances)))
    finally:
        await handler.shutdown(5.0)
    return await consume(broker.bootstrap, topics, expected=len(instances))


async def test_json_records_arrive_once_with_their_keys(tansu_module: TansuBroker, tmp_path: Path) -> None:
    prefix = unique_topic("json")
    config = _config(
        tansu_module,
        topic=prefix + "-{template}",
        key="{variables[user] | dimensions[destination_service] | span_tags[seq]}",
    )
    handler = _handler(config, tmp_path / "data")
    instances: list[Instance] = [make(seq) for seq in range(30) for make in (_log_entry, _metric, _span)]
    topics = [f"{prefix}-logentry", f"{prefix}-metric", f"{prefix}-tracespan"]
    records = await _report_and_read(tansu_module, handler, instances, topics)

    encoder = JsonEncoder(lambda: _NOW)
    expected = Counter(
        (f"{prefix}-{i.template}", handler.encode(_batch(i))[0].key, encoder.encode(i)) for i in instances
    )
    assert Counter((r.topic, r.key, r.value) for r in records) == expected
    assert len(records) == 90
    assert {r.key for r in records if r.topic.endswith("logentry")} == {b"user-0", b"user-1", b"user-2"}
    assert {r.key for r in records if r.topic.endswith("metric")} == {b"reviews"}
    partitions_by_key: dict[tuple[str, bytes], set[int]] = {}
    for r in records:
        partitions_by_key.setdefault((r.topic, r.key), set()).add(r.partition)
    assert all(len(p) == 1 for p in partitions_by_key.values())
    assert handler.stats.sent == 90
    assert handler.stats.dead_lettered == 0


async def test_otlp_records_decode_with_opentelemetry_proto(
    tansu_module: TansuBroker, tmp_path: Path
) -> None:
    prefix = unique_topic("otlp")
    handler = _handler(
        _config(tansu_module, topic=prefix + "-{template}", encoding="otlp_proto"), tmp_path / "d"
    )
    instances: list[Instance] = [make(seq) for seq in range(10) for make in (_log_entry, _metric, _span)]
    records = await _report_and_read(
        tansu_module, handler, instances, [f"{prefix}-logentry", f"{prefix}-metric", f"{prefix}-tracespan"]
    )
    by_topic: dict[str, list[bytes]] = {}
    for r in records:
        assert r.key is None
        by_topic.setdefault(r.topic.rsplit("-", 1)[1], []).append(r.value)
    assert {k: len(v) for k, v in by_topic.items()} == {"logentry": 10, "metric": 10, "tracespan": 10}

    logs = [
        logs_pb2.LogsData.FromString(v).resource_logs[0].scope_logs[0].log_records[0]
        for v in by_topic["logentry"]
    ]
    assert sorted(_attributes(log.attributes)["seq"] for log in logs) == list(range(10))
    assert {log.severity_number for log in logs} == {logs_pb2.SEVERITY_NUMBER_WARN}
    metrics = [metrics_pb2.MetricsData.FromString(v).resource_metrics[0] for v in by_topic["metric"]]
    points = [m.scope_metrics[0].metrics[0].gauge.data_points[0] for m in metrics]
    assert sorted(_attributes(p.attributes)["seq"] for p in points) == list(range(10))
    assert {p.as_int for p in points} == {1}
    spans = [trace_pb2.TracesData.FromString(v).resource_spans[0] for v in by_topic["tracespan"]]
    assert sorted(s.scope_spans[0].spans[0].trace_id for s in spans) == [
        bytes.fromhex(f"{seq + 1:032x}") for seq in range(10)
    ]
    assert {_attributes(s.resource.attributes)["service.name"] for s in spans} == {"reviews"}


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
async def test_every_compression_round_trips(
    tansu_module: TansuBroker, tmp_path: Path, compression: str
) -> None:
    topic = unique_topic(compression)
    handler = _handler(_config(tansu_module, topic=topic, compression=compression), tmp_path / "data")
    instances: list[Instance] = [_log_entry(seq, text="compressible " * 20) for seq in range(50)]
    records = await _report_and_read(tansu_module, handler, instances, [topic])
    assert sorted(json.loads(r.value)["seq"] for r in records) == list(range(50))


async def test_acks_zero_and_all_deliver(tansu_module: TansuBroker, tmp_path: Path) -> None:
    for acks in (0, "all"):
        topic = unique_topic(f"acks{acks}")
        handler = _handler(_config(tansu_module, topic=topic, acks=acks), tmp_path / f"data-{acks}")
        records = await _report_and_read(tansu_module, handler, [_metric(seq) for seq in range(20)], [topic])
        assert sorted(json.loads(r.value)["seq"] for r in records) == list(range(20))


async def test_records_that_can_never_be_sent_go_to_the_dead_letter(
    tansu_module: TansuBroker, tmp_path: Path
) -> None:
    prefix = unique_topic("dead")
    data = tmp_path / "data"
    handler = _handler(
        _config(
            tansu_module, topic=prefix + "-{variables[dest]}", max_request_size=4096, max_batch_size=4096
        ),
        data,
    )
    big = _log_entry(2, dest="ok", blob="x" * 10_000)
    instances: list[Instance] = [
        _log_entry(1, dest="ok"),
        big,
        _log_entry(3),  # no dest: no topic
        _log_entry(4, dest="not/valid"),
        _log_entry(5, dest="ok"),
    ]
    await handler.start()
    try:
        handler.handle_report(_batch(*instances))
        await _eventually(lambda: handler.stats.dead_lettered == 3 and _settled(handler, 2))
    finally:
        await handler.shutdown(5.0)
    records = await consume(tansu_module.bootstrap, [f"{prefix}-ok"], expected=2)
    assert sorted(json.loads(r.value)["seq"] for r in records) == [1, 5]
    letters = _dead_letters(data)
    assert [json.loads(base64.b64decode(letter["payload"]))["seq"] for letter in letters] == [2, 3, 4]
    assert "larger than max_request_size (4096)" in letters[0]["reason"]
    assert letters[1]["reason"] == NO_TOPIC_REASON
    assert letters[1]["route"] == ""
    assert "invalid Kafka topic name" in letters[2]["reason"]
    assert letters[0]["key"] is None
    assert handler.stats.sent == 2


async def test_a_broker_that_comes_up_later_gets_everything(tmp_path: Path) -> None:
    broker = TansuBroker(tmp_path / "broker")
    (tmp_path / "broker").mkdir()
    topic = unique_topic("late")
    handler = _handler(_config(broker, topic=topic), tmp_path / "data")
    began = time.monotonic()
    await handler.start()
    assert time.monotonic() - began < 1.0  # nothing listens yet, and start does not wait for it
    try:
        handler.handle_report(_batch(*[_metric(seq) for seq in range(40)]))
        await _eventually(lambda: handler.stats.failed > 0)
        assert handler.stats.sent == 0
        broker.start()
        await _eventually(lambda: _settled(handler, 40))
        records = await consume(broker.bootstrap, [topic], expected=40)
        assert sorted(json.loads(r.value)["seq"] for r in records) == list(range(40))
    finally:
        await handler.shutdown(5.0)
        broker.stop()


async def _outage_then_recovery(broker: TansuBroker, tmp_path: Path, outage: float) -> int:
    """Reports before, during and after a broker outage; returns the duplicates seen.

    The broker keeps its records in memory, so what it held before the outage is gone after it:
    that part is read back before the broker is killed, the rest after it is back.
    """
    topic = unique_topic("outage")
    handler = _handler(_config(broker, topic=topic, key="{variables[user]}"), tmp_path / "data")
    await handler.start()
    try:
        handler.handle_report(_batch(*[_log_entry(seq) for seq in range(100)]))
        await _eventually(lambda: _settled(handler, 100))
        before = await consume(broker.bootstrap, [topic], expected=100)
        assert sorted(json.loads(r.value)["seq"] for r in before) == list(range(100))

        broker.kill()
        seq = 100
        ends = time.monotonic() + outage
        while time.monotonic() < ends:
            handler.handle_report(_batch(*[_log_entry(n) for n in range(seq, seq + 10)]))
            seq += 10
            await asyncio.sleep(0.05)
        during = handler.stats
        assert during.failed > 0
        assert during.sent == 100
        broker.start()
        handler.handle_report(_batch(*[_log_entry(n) for n in range(seq, seq + 100)]))
        seq += 100
        await _eventually(lambda: _settled(handler, seq), timeout=30 + outage)
    finally:
        await handler.shutdown(5.0)
    after = await consume(broker.bootstrap, [topic], expected=seq - 100, timeout=30)
    seen = Counter(json.loads(r.value)["seq"] for r in after)
    assert set(seen) == set(range(100, seq)), f"lost: {sorted(set(range(100, seq)) - set(seen))[:20]}"
    assert handler.stats.dead_lettered == 0
    assert not handler.stats.dropped
    return sum(seen.values()) - len(seen)


async def test_short_outage_loses_nothing(tansu: TansuBroker, tmp_path: Path) -> None:
    duplicates = await _outage_then_recovery(tansu, tmp_path, _SHORT_OUTAGE)
    # Nothing was in flight when the broker died and every send during the outage was refused
    # outright, so no answer was lost and nothing had to be sent twice.
    assert duplicates == 0


@pytest.mark.slow
async def test_long_outage_loses_nothing(tansu: TansuBroker, tmp_path: Path) -> None:
    await _outage_then_recovery(tansu, tmp_path, _SOAK_OUTAGE)


async def test_defaults_build_through_the_factory(tmp_path: Path) -> None:
    handler = ADAPTER.build(KafkaConfig(), HandlerEnv("kafka.x", _LOG, tmp_path))
    assert isinstance(handler, KafkaHandler)
    with pytest.raises(TypeError, match="KafkaConfig"):
        ADAPTER.build(StdioConfig(), HandlerEnv("kafka.x", _LOG, tmp_path))
