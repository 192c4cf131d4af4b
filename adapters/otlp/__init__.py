"""The ``otlp`` adapter: tracespan instances exported as OpenTelemetry spans over OTLP/gRPC.

Spans go to ``opentelemetry.proto.collector.trace.v1.TraceService/Export`` through the shared
delivery helper (queue, batches, retry, spool). The span reading and the OTLP encoding are
:mod:`mixer.spans` and :mod:`mixer.spans.otlp`, re-exported here. See README.md in this folder for
the params and the span mapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.otlp._config import DEFAULT_ENDPOINT, OtlpConfig, TlsOptions, parse_endpoint
from mixer import AdapterInfo, Stability, lazy_factory
from mixer.lazy import lazy_getattr
from mixer.spans import (
    TRACEPARENT_TAG,
    TRACESTATE_TAG,
    InvalidSpan,
    InvalidSpanLog,
    SpanData,
    TraceParent,
    is_error_status,
    parse_span_id,
    parse_trace_id,
    parse_traceparent,
    rewrite_span_id,
    span_from_instance,
    unix_nanos,
)

__all__ = [
    "ADAPTER",
    "DEFAULT_ENDPOINT",
    "EXPORT_METHOD",
    "LEGACY_TAG_NAMES",
    "TRACEPARENT_TAG",
    "TRACESTATE_TAG",
    "InvalidSpan",
    "InvalidSpanLog",
    "OtlpConfig",
    "OtlpHandler",
    "OtlpSender",
    "OtlpStats",
    "SpanData",
    "TlsOptions",
    "TraceParent",
    "any_value",
    "classify_rpc_error",
    "encode_instance",
    "encode_span",
    "export_request",
    "is_error_status",
    "parse_endpoint",
    "parse_span_id",
    "parse_trace_id",
    "parse_traceparent",
    "resource_key",
    "rewrite_span_id",
    "span_attributes",
    "span_from_instance",
    "unix_nanos",
]

if TYPE_CHECKING:
    from adapters.otlp._handler import EXPORT_METHOD, OtlpHandler, OtlpSender, OtlpStats, classify_rpc_error
    from mixer.spans.otlp import (
        LEGACY_TAG_NAMES,
        any_value,
        encode_instance,
        encode_span,
        export_request,
        resource_key,
        span_attributes,
    )

# Registration needs only the params model; grpc and the OTLP protos load with the first handler.
__getattr__ = lazy_getattr(
    __name__,
    {
        "mixer.spans.otlp": (
            "LEGACY_TAG_NAMES",
            "any_value",
            "encode_instance",
            "encode_span",
            "export_request",
            "resource_key",
            "span_attributes",
        ),
        "adapters.otlp._handler": (
            "EXPORT_METHOD",
            "OtlpHandler",
            "OtlpSender",
            "OtlpStats",
            "classify_rpc_error",
        ),
    },
)


ADAPTER = AdapterInfo(
    name="otlp",
    description="Exports tracespan instances as OpenTelemetry spans over OTLP/gRPC.",
    templates=frozenset({"tracespan"}),
    config_model=OtlpConfig,
    factory=lazy_factory("adapters.otlp._handler:OtlpHandler"),
    stability=Stability.BETA,
)
