"""Zipkin v2 JSON: one span object per record; a batch is their JSON array."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

from mixer.attributes import IPAddress, to_jsonable
from mixer.delivery import Record
from mixer.spans import SpanData, span_from_instance
from mixer.templates import TraceSpanInstance

__all__ = ["encode_instance", "span_json", "spans_body", "tag_text"]


def tag_text(value: Any) -> str:
    """Zipkin tags are strings: booleans as ``true``/``false``, maps and lists as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    plain = to_jsonable(value)
    if isinstance(plain, dict | list):
        return json.dumps(plain, separators=(",", ":"), sort_keys=True)
    return str(plain)


def _endpoint(service: str, ip: IPAddress | None) -> dict[str, str] | None:
    endpoint: dict[str, str] = {}
    if service:
        endpoint["serviceName"] = service
    if isinstance(ip, ipaddress.IPv4Address):
        endpoint["ipv4"] = str(ip)
    elif isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            endpoint["ipv4"] = str(ip.ipv4_mapped)
        else:
            endpoint["ipv6"] = str(ip)
    return endpoint or None


def span_json(span: SpanData) -> dict[str, Any]:
    """The Zipkin v2 span object.

    The trace id keeps its width (16 hex digits for a 64-bit B3 id), so the span joins the spans
    the application's own Zipkin tracer reports for the same trace.
    """
    start_us = span.start_ns // 1000
    # Zipkin rounds durations under a microsecond up to 1; zero would read as "unknown".
    duration_us = max(1, -(-(span.end_ns - span.start_ns) // 1000))
    tags = {key: tag_text(value) for key, value in span.tags.items()}
    if span.http_status_code is not None:
        tags.setdefault("http.status_code", str(span.http_status_code))
        if span.is_error:
            tags.setdefault("error", str(span.http_status_code))
    body: dict[str, Any] = {
        "traceId": span.trace_id.hex(),
        "id": span.span_id.hex(),
    }
    if span.parent_span_id:
        body["parentId"] = span.parent_span_id.hex()
    body.update(
        name=span.name,
        kind="CLIENT" if span.client else "SERVER",
        timestamp=start_us,
        duration=duration_us,
    )
    local = _endpoint(span.local_service, span.local_ip)
    if local:
        body["localEndpoint"] = local
    remote = _endpoint(span.peer_service, span.peer_ip)
    if remote:
        body["remoteEndpoint"] = remote
    if tags:
        body["tags"] = tags
    if span.shared:
        body["shared"] = True
    return body


def encode_instance(instance: TraceSpanInstance) -> Record:
    """One tracespan instance as a record holding its span's JSON object.

    :raises InvalidSpan: the instance cannot become a span.
    """
    span = span_from_instance(instance)
    text = json.dumps(span_json(span), separators=(",", ":"), ensure_ascii=False)
    # A lone surrogate cannot be UTF-8; it becomes "?" rather than failing the whole batch.
    return Record(text.encode("utf-8", "replace"))


def spans_body(records: Sequence[Record]) -> bytes:
    """The request body: the records' span objects as one JSON array."""
    return b"[" + b",".join(record.payload for record in records) + b"]"
