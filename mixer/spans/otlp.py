"""OTLP encoding: one :class:`~mixer.spans.SpanData` to one serialized ``Span`` and its resource key.

A record's payload is a serialized ``opentelemetry.proto.trace.v1.Span``; its route is the
resource it belongs to, as compact JSON of string attributes (``{"service.name":"reviews"}``).
:func:`export_request` groups a batch of such records into one serialized
``ExportTraceServiceRequest`` by concatenating wire-format fields, so spans are not parsed again
on the way out (protobuf defines a message as the concatenation of its fields).

:func:`any_value` and :data:`SCOPE_NAME` serve every OTLP signal (logs and metrics too).
"""

from __future__ import annotations

import functools
import json
import logging
import struct
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Protocol, cast

from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from mixer import __version__
from mixer.attributes import IPAddress, to_jsonable
from mixer.cache import ByteLRU
from mixer.compiled import CompiledModule
from mixer.delivery import Record
from mixer.protowire import LEN_TAGS, field, varint
from mixer.spans import SpanData, span_from_instance
from mixer.templates import TraceSpanInstance

__all__ = [
    "LEGACY_TAG_NAMES",
    "SCOPE_NAME",
    "UNKNOWN_SERVICE",
    "any_value",
    "describe_encoder",
    "encode_instance",
    "encode_span",
    "encode_span_reference",
    "export_request",
    "resource_key",
    "span_attributes",
]

#: The instrumentation scope every exported span is grouped under.
SCOPE_NAME = "mesh-mixer"
#: OpenTelemetry's ``service.name`` when the reporting side has no name.
UNKNOWN_SERVICE = "unknown_service"

#: Mixer-era (OpenTracing style) span tag names and their OpenTelemetry semantic convention names.
LEGACY_TAG_NAMES: Mapping[str, str] = {
    "http.method": "http.request.method",
    "http.status_code": "http.response.status_code",
    "http.path": "url.path",
    "http.host": "server.address",
    "http.user_agent": "user_agent.original",
    "user_agent": "user_agent.original",
    "http.protocol": "network.protocol.name",
}

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Span flag bits (opentelemetry.proto.trace.v1.SpanFlags): the parent's remoteness is known, and it is remote.
_CONTEXT_HAS_IS_REMOTE = 0x100
_CONTEXT_IS_REMOTE = 0x200


def _text(value: str) -> str:
    # Protobuf strings must be UTF-8; a lone surrogate would make serialization raise (it becomes "?").
    return value if value.isascii() else value.encode("utf-8", "replace").decode("utf-8")


def any_value(value: Any) -> AnyValue:
    """A typed OTLP attribute value: bool, int64, double, string, bytes, arrays and maps.

    Timestamps, durations and IP addresses become text (RFC 3339, Go duration, dotted address);
    integers outside int64 become text rather than being cut.
    """
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return AnyValue(int_value=value)
        return AnyValue(string_value=str(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=_text(value))
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, Mapping):
        return AnyValue(
            kvlist_value=KeyValueList(
                values=[KeyValue(key=_text(str(k)), value=any_value(v)) for k, v in value.items()]
            )
        )
    if isinstance(value, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, datetime | timedelta):
        return AnyValue(string_value=str(to_jsonable(value)))
    return AnyValue(string_value=_text(str(value)))


def _any_value_bytes(value: Any) -> bytes:
    """``any_value(value).SerializeToString()``, written directly for the scalar types.

    Building protobuf messages from Python costs microseconds per attribute; the scalar
    encodings are short enough to write by hand (AnyValue fields: string 1, bool 2, int 3,
    double 4, bytes 7).
    """
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return b"\x18" + varint(value & 0xFFFF_FFFF_FFFF_FFFF)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, str):
        return field(1, _text(value).encode())
    if isinstance(value, bytes):
        return field(7, value)
    return any_value(value).SerializeToString()


def _key_value_bytes(key: str, value: Any) -> bytes:
    # Proto3 leaves an empty string out, as the library would.
    name = field(1, _text(key).encode()) if key else b""
    return name + field(2, _any_value_bytes(value))


# Scalar types by a small code: part of the cache key, since True == 1 and 1 == 1.0.
_SCALAR_CODES: dict[type, int] = {str: 0, int: 1, bool: 2, float: 3}


def _attribute_field(key: str, value: Any) -> bytes:
    """Span field 9 (one attribute), from a cache for scalar values.

    Most attributes repeat from span to span (method, protocol, service names, status codes, user
    agents), and writing one costs microseconds.
    The cache is bounded in bytes (tag values are what callers send: a path may be 100 KB);
    ``ATTRIBUTE_FIELDS`` counts its hits, misses and evictions.
    """
    code = _SCALAR_CODES.get(type(value))
    if code is None:
        return field(9, _key_value_bytes(key, value))
    cache_key = (key, value, code)
    cached = ATTRIBUTE_FIELDS.get(cache_key)
    if cached is None:
        cached = field(9, _key_value_bytes(key, value))
        ATTRIBUTE_FIELDS.put(cache_key, cached)
    return cached


def _attribute_field_size(key: tuple[str, Any, int], encoded: bytes) -> int:
    # The key's strings and the encoded field, which repeats them.
    value = key[1]
    return len(key[0]) + (len(value) if isinstance(value, str) else 8) + len(encoded) + 150


#: Encoded span attributes by key, value and scalar type.
ATTRIBUTE_FIELDS: ByteLRU[tuple[str, Any, int], bytes] = ByteLRU(
    8 * 1024 * 1024, size=_attribute_field_size, name="otlp.attribute_fields"
)


def _tag_name(key: str, value: Any) -> str:
    if key == "http.url":
        # Istio's example config puts the path in http.url; a full URL has a scheme.
        return "url.full" if isinstance(value, str) and "://" in value else "url.path"
    return LEGACY_TAG_NAMES.get(key, key)


def _tag_value(name: str, value: Any) -> Any:
    # The status code is an int in the conventions; Mixer configs sometimes build it as text.
    if name == "http.response.status_code" and isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


@functools.lru_cache(maxsize=4096)
def _ip_text(value: IPAddress) -> str:
    # A mesh has few addresses, and formatting one is slower than the rest of a span's attributes.
    return str(value)


def _ip(value: IPAddress | None) -> str | None:
    return _ip_text(value) if value is not None else None


def span_attributes(span: SpanData) -> dict[str, Any]:
    """The span's attributes: derived from the instance's fields first, then its tags (tags win)."""
    derived: dict[str, Any] = {
        "http.response.status_code": span.http_status_code,
        "http.request.body.size": span.request_size,
        "http.request.size": span.request_total_size,
        "http.response.body.size": span.response_size,
        "http.response.size": span.response_total_size,
        "network.peer.address": _ip(span.peer_ip),
        "network.local.address": _ip(span.local_ip),
        "peer.service": span.peer_service or None,
    }
    if not span.client:
        derived["client.address"] = _ip(span.peer_ip)
    if span.api_protocol == "grpc":
        derived["rpc.system"] = "grpc"
    elif span.api_protocol:
        derived["network.protocol.name"] = span.api_protocol
    attributes = {k: v for k, v in derived.items() if v is not None}
    for key, value in span.tags.items():
        name = _tag_name(key, value)
        attributes[name] = _tag_value(name, value)
    return attributes


def encode_span(span: SpanData) -> bytes:
    """The serialized OTLP ``Span``, byte for byte what :func:`encode_span_reference` (protobuf's own
    serializer) writes.

    Fields go out in field-number order, as protobuf writes them: the scalars (1-8), the
    attributes (9), then status (15) and flags (16), all written here: building the ``Span``
    messages cost a fifth of the span encoding's time. Times outside fixed64 take the reference
    path, which refuses them as protobuf does.
    """
    start, end = span.start_ns, span.end_ns
    if not (0 <= start <= _UINT64_MAX and 0 <= end <= _UINT64_MAX):
        return encode_span_reference(span)
    out = [_TRACE_ID_TAG, span.trace_id_128]
    if span.span_id:
        out.append(field(2, span.span_id))
    if span.trace_state:
        out.append(field(3, _text(span.trace_state).encode()))
    if span.parent_span_id:
        out.append(field(4, span.parent_span_id))
    if span.name:
        out.append(field(5, _text(span.name).encode()))
    out.append(_KIND_CLIENT if span.client else _KIND_SERVER)
    if start:
        out.append(_START_TAG + _FIXED64(start))
    if end:
        out.append(_END_TAG + _FIXED64(end))
    out.extend(_attribute_field(key, value) for key, value in span_attributes(span).items())
    if span.is_error:
        message = f"HTTP status {span.http_status_code}".encode()
        out.append(field(15, field(2, message) + _STATUS_CODE_ERROR))
    flags = _flags(span)
    if flags:
        out.append(_FLAGS_TAG + _FIXED32(flags))
    return b"".join(out)


def encode_span_reference(span: SpanData) -> bytes:
    """The serialized OTLP ``Span`` built with protobuf's messages: the definition of
    :func:`encode_span`'s output (the tests compare the two)."""
    head = Span(
        trace_id=span.trace_id_128,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        trace_state=_text(span.trace_state),
        name=_text(span.name),
        kind=Span.SPAN_KIND_CLIENT if span.client else Span.SPAN_KIND_SERVER,
        start_time_unix_nano=span.start_ns,
        end_time_unix_nano=span.end_ns,
    ).SerializeToString()
    attributes = b"".join(_attribute_field(key, value) for key, value in span_attributes(span).items())
    tail = Span(flags=_flags(span))
    if span.is_error:
        tail.status.code = Status.STATUS_CODE_ERROR
        tail.status.message = f"HTTP status {span.http_status_code}"
    return head + attributes + tail.SerializeToString()


def _flags(span: SpanData) -> int:
    flags = span.trace_flags & 0xFF
    if span.parent_span_id:
        # A proxy never created its span's parent: that span lives in another process.
        flags |= _CONTEXT_HAS_IS_REMOTE | _CONTEXT_IS_REMOTE
    return flags


def resource_key(span: SpanData) -> str:
    """The route of a span's record: its resource attributes as compact, sorted JSON."""
    return _service_resource_key(span.local_service or UNKNOWN_SERVICE)


def _service_resource_key(service: str) -> str:
    key = RESOURCE_KEYS.get(service)
    if key is None:
        key = json.dumps({"service.name": service}, separators=(",", ":"))
        RESOURCE_KEYS.put(service, key)
    return key


#: Resource keys by service name (a caller-derived string).
RESOURCE_KEYS: ByteLRU[str, str] = ByteLRU(
    1024 * 1024, max_entries=4096, size=lambda service, key: 2 * len(key) + 100, name="otlp.resource_keys"
)


class CompiledSpanEncoder(Protocol):
    """What mixer/spans/_cspan.pyx provides (its stub, _cspan.pyi, has the same signatures)."""

    def configure(
        self,
        utc: tzinfo,
        ip_text: Callable[[IPAddress], str],
        attribute_field: Callable[[str, Any], bytes],
        legacy_names: dict[str, str],
    ) -> None: ...

    def encode(self, instance: TraceSpanInstance) -> tuple[bytes, str] | None: ...


_COMPILED = CompiledModule("mixer.spans._cspan", "OTLP span encoder", logging.getLogger("mixer.spans"))
#: The compiled span encoder when it is built, whether or not it is in use.
compiled = cast("CompiledSpanEncoder | None", _COMPILED.built)
#: The compiled span encoder in use, or None for the pure-Python path alone.
cspan = cast("CompiledSpanEncoder | None", _COMPILED.active)


def describe_encoder() -> str:
    """The span encoder in use, for ``mixer version``."""
    return _COMPILED.description


def encode_instance(instance: TraceSpanInstance) -> Record:
    """One tracespan instance as a delivery record.

    The compiled encoder writes the common instance in one pass; whatever it is not sure of (W3C
    trace context, malformed ids or times, unusual types) is read and written here, which is the
    definition of both (the tests compare them).

    :raises InvalidSpan: the instance cannot become a span.
    """
    encoder = cspan
    if encoder is not None:
        fast = encoder.encode(instance)
        if fast is not None:
            return Record(fast[0], route=_service_resource_key(fast[1] or UNKNOWN_SERVICE))
    else:
        _COMPILED.note_pure_python()
    span = span_from_instance(instance)
    return Record(encode_span(span), route=resource_key(span))


_UINT64_MAX = 2**64 - 1
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
# Span fields by tag: trace_id (1, always 16 bytes), kind (6, varint), start and end time (7 and
# 8, fixed64), flags (16, fixed32); Status.code (3) = STATUS_CODE_ERROR (2), which goes after
# Status.message (2) as protobuf orders fields.
_TRACE_ID_TAG = LEN_TAGS[1] + varint(16)
_KIND_SERVER = varint(6 << 3) + varint(Span.SPAN_KIND_SERVER)
_KIND_CLIENT = varint(6 << 3) + varint(Span.SPAN_KIND_CLIENT)
_START_TAG = varint(7 << 3 | 1)
_END_TAG = varint(8 << 3 | 1)
_FLAGS_TAG = varint(16 << 3 | 5)
_STATUS_CODE_ERROR = varint(3 << 3) + varint(Status.STATUS_CODE_ERROR)


def _resource(route: str) -> bytes:
    try:
        attributes = json.loads(route) if route else {}
    except ValueError:
        attributes = {}
    if not isinstance(attributes, dict):
        attributes = {}
    attributes.setdefault("service.name", UNKNOWN_SERVICE)
    return Resource(
        attributes=[KeyValue(key=str(k), value=any_value(v)) for k, v in attributes.items()]
    ).SerializeToString()


_SCOPE = InstrumentationScope(name=SCOPE_NAME, version=__version__).SerializeToString()


def export_request(records: Iterable[Record]) -> bytes:
    """A serialized ``ExportTraceServiceRequest``: one ``ResourceSpans`` per distinct route.

    Field numbers: ExportTraceServiceRequest.resource_spans = 1; ResourceSpans.resource = 1,
    scope_spans = 2; ScopeSpans.scope = 1, spans = 2.
    """
    by_route: dict[str, list[bytes]] = {}
    for record in records:
        by_route.setdefault(record.route, []).append(record.payload)
    out = bytearray()
    for route, payloads in by_route.items():
        scope_spans = field(1, _SCOPE) + b"".join(field(2, payload) for payload in payloads)
        resource_spans = field(1, _resource(route)) + field(2, scope_spans)
        out += field(1, resource_spans)
    return bytes(out)


if compiled is not None:
    # The compiled encoder formats addresses, and writes unusual attribute values, with the same
    # functions and caches as this module.
    compiled.configure(UTC, _ip_text, _attribute_field, dict(LEGACY_TAG_NAMES))
