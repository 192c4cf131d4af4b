"""Record payloads: each instance becomes one Kafka record, as a JSON object or as OTLP protobuf.

``json`` is the stdio adapter's JSON line (the shared encoder of :mod:`mixer.encoding`, so the two
never drift apart, and a line encoded for one is reused by the other);
tracespan instances, which stdio does not write, take the same shape with the span's fields.

``otlp_proto`` is what the OpenTelemetry Collector's kafkareceiver reads with ``encoding:
otlp_proto``: a ``LogsData`` for a logentry, a ``TracesData`` for a tracespan and a
``MetricsData`` for a metric, each holding exactly one item. See README.md for the field mapping.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

import mixer
from adapters.kafka._config import Encoding
from mixer.encoding import LineEncoder
from mixer.redact import FieldRedaction
from mixer.spans import InvalidSpan, unix_nanos
from mixer.spans.otlp import SCOPE_NAME, any_value, export_request
from mixer.spans.otlp import encode_instance as encode_span_record
from mixer.templates import Instance, LogEntryInstance, MetricInstance, TraceSpanInstance

__all__ = [
    "INSTANCE_ATTRIBUTE",
    "EncodeError",
    "JsonEncoder",
    "OtlpEncoder",
    "PayloadEncoder",
    "make_encoder",
]

#: Attribute carrying the instance name on OTLP log records and metric data points.
INSTANCE_ATTRIBUTE = "mixer.instance"
#: Resource attribute carrying an instance's ``monitored_resource_type``.
RESOURCE_TYPE_ATTRIBUTE = "mixer.monitored_resource_type"

#: Severity text (lowercased) -> OTLP severity number.
_SEVERITY_NUMBERS: dict[str, logs_pb2.SeverityNumber.ValueType] = {
    "trace": logs_pb2.SEVERITY_NUMBER_TRACE,
    "debug": logs_pb2.SEVERITY_NUMBER_DEBUG,
    "info": logs_pb2.SEVERITY_NUMBER_INFO,
    "informational": logs_pb2.SEVERITY_NUMBER_INFO,
    "notice": logs_pb2.SEVERITY_NUMBER_INFO2,
    "warn": logs_pb2.SEVERITY_NUMBER_WARN,
    "warning": logs_pb2.SEVERITY_NUMBER_WARN,
    "err": logs_pb2.SEVERITY_NUMBER_ERROR,
    "error": logs_pb2.SEVERITY_NUMBER_ERROR,
    "critical": logs_pb2.SEVERITY_NUMBER_FATAL,
    "fatal": logs_pb2.SEVERITY_NUMBER_FATAL,
}


class EncodeError(ValueError):
    """The instance cannot be written in this encoding (a bad trace id, a metric value that is no number)."""


class PayloadEncoder(Protocol):
    def encode(self, instance: Instance) -> bytes:
        """The record value for ``instance``. :raises EncodeError: it has no form in this encoding."""
        ...


def make_encoder(
    encoding: Encoding, now: Callable[[], datetime], redact: FieldRedaction | None = None
) -> PayloadEncoder:
    if encoding is Encoding.OTLP_PROTO:
        return OtlpEncoder(now, redact)
    return JsonEncoder(now, redact)


class JsonEncoder:
    """The stdio adapter's JSON line, without the newline, as UTF-8."""

    def __init__(self, now: Callable[[], datetime], redact: FieldRedaction | None = None) -> None:
        self._now = now
        # Stdio's defaults write every severity, so nothing is filtered out here.
        self._lines = LineEncoder(now, redact=redact)

    def encode(self, instance: Instance) -> bytes:
        if isinstance(instance, TraceSpanInstance):
            instance = _span_as_log_entry(instance)
        line = self._lines.encode_bytes(instance)
        if line is None:
            raise EncodeError(f"{instance.template} instances have no JSON form")
        return line


def _span_as_log_entry(span: TraceSpanInstance) -> LogEntryInstance:
    # Stdio's line shape for a span: its fields sorted, absent ones left out, time = end of the span.
    fields = {name: getattr(span, name) for name in span.__dataclass_fields__ if name != "name"}
    return LogEntryInstance(span.name, variables=fields, timestamp=span.end_time or span.start_time)


class OtlpEncoder:
    """One-item OTLP messages (``LogsData``, ``TracesData``, ``MetricsData``), serialized."""

    def __init__(self, now: Callable[[], datetime], redact: FieldRedaction | None = None) -> None:
        self._now = now
        self._redact = redact
        self._scope = common_pb2.InstrumentationScope(name=SCOPE_NAME, version=mixer.__version__)

    def encode(self, instance: Instance) -> bytes:
        if isinstance(instance, LogEntryInstance):
            return self._log(instance)
        if isinstance(instance, TraceSpanInstance):
            return self._span(instance)
        if isinstance(instance, MetricInstance):
            return self._metric(instance)
        raise EncodeError(f"{instance.template} instances have no OTLP form")

    def _log(self, entry: LogEntryInstance) -> bytes:
        record = logs_pb2.LogRecord(
            observed_time_unix_nano=unix_nanos(self._now()),
            severity_text=entry.severity or "",
            severity_number=_SEVERITY_NUMBERS.get(
                (entry.severity or "").strip().lower(), logs_pb2.SEVERITY_NUMBER_UNSPECIFIED
            ),
            attributes=_attributes(self._fields(entry.variables).items(), instance=entry.name),
        )
        if entry.timestamp is not None:
            record.time_unix_nano = unix_nanos(entry.timestamp)
        resource = _resource(entry.monitored_resource_type, entry.monitored_resource_dimensions)
        data = logs_pb2.LogsData(
            resource_logs=[
                logs_pb2.ResourceLogs(
                    resource=resource,
                    scope_logs=[logs_pb2.ScopeLogs(scope=self._scope, log_records=[record])],
                )
            ]
        )
        return bytes(data.SerializeToString())

    def _span(self, span: TraceSpanInstance) -> bytes:
        try:
            record = encode_span_record(span)
        except InvalidSpan as exc:
            raise EncodeError(str(exc)) from exc
        # An ExportTraceServiceRequest is TracesData on the wire (the same field 1).
        return export_request([record])

    def _fields(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        return values if self._redact is None else self._redact.apply(values)

    def _metric(self, metric: MetricInstance) -> bytes:
        point = metrics_pb2.NumberDataPoint(
            time_unix_nano=unix_nanos(self._now()),
            attributes=_attributes(self._fields(metric.dimensions).items(), instance=metric.name),
        )
        value = metric.value
        if isinstance(value, timedelta):
            value = value.total_seconds()
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int):
            point.as_int = value
        elif isinstance(value, float) and math.isfinite(value):
            point.as_double = value
        else:
            raise EncodeError(f"metric {metric.name}: value {value!r} is not a finite number or duration")
        data = metrics_pb2.MetricsData(
            resource_metrics=[
                metrics_pb2.ResourceMetrics(
                    resource=_resource(metric.monitored_resource_type, metric.monitored_resource_dimensions),
                    scope_metrics=[
                        metrics_pb2.ScopeMetrics(
                            scope=self._scope,
                            metrics=[
                                metrics_pb2.Metric(
                                    name=metric.name, gauge=metrics_pb2.Gauge(data_points=[point])
                                )
                            ],
                        )
                    ],
                )
            ]
        )
        return bytes(data.SerializeToString())


def _resource(kind: str | None, dimensions: Mapping[str, Any]) -> Any:
    items: list[tuple[str, Any]] = list(dimensions.items())
    if kind and RESOURCE_TYPE_ATTRIBUTE not in dimensions:
        items.append((RESOURCE_TYPE_ATTRIBUTE, kind))
    return resource_pb2.Resource(attributes=_attributes(items))


def _attributes(items: Iterable[tuple[str, Any]], *, instance: str | None = None) -> list[Any]:
    """KeyValues for the items that have a value; ``instance`` goes first and is never shadowed."""
    out: list[Any] = []
    seen: set[str] = set()
    if instance is not None:
        out.append(
            common_pb2.KeyValue(key=INSTANCE_ATTRIBUTE, value=common_pb2.AnyValue(string_value=instance))
        )
        seen.add(INSTANCE_ATTRIBUTE)
    for key, value in items:
        name = str(key)
        if value is None or name in seen:
            continue
        seen.add(name)
        out.append(common_pb2.KeyValue(key=name, value=any_value(value)))
    return out
