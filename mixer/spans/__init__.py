"""Spans for tracing adapters: a ``tracespan`` instance read into a checked, backend-neutral span,
and the report handler every span exporter starts from.

:func:`span_from_instance` reads the trace context (B3 hex ids, or a W3C ``traceparent``), applies
Mixer's ``rewrite_client_span_id`` rule, converts the times and decides which side of the request
is local. Anything malformed raises :class:`InvalidSpan`, so that an encoder can count the span
and go on with the rest of the batch.

:class:`SpanHandler` is that encoder loop on top of :class:`mixer.delivery.DeliveryReportHandler`
(queue, batches, retry, spool): a subclass says how one instance becomes a record and brings a
sender. :mod:`mixer.spans.otlp` is the OTLP protobuf encoding (spans, attribute values, export
requests), for the otlp adapter and for any other that writes OTLP.
"""

from __future__ import annotations

import abc
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from mixer.adapter import HandlerEnv, ReportBatch
from mixer.attributes import IPAddress
from mixer.delivery import BatchSender, DeliveryOptions, DeliveryReportHandler, Record
from mixer.templates import TraceSpanInstance

__all__ = [
    "TRACEPARENT_TAG",
    "TRACESTATE_TAG",
    "InvalidSpan",
    "InvalidSpanLog",
    "SpanData",
    "SpanHandler",
    "SpanSender",
    "TraceParent",
    "is_error_status",
    "parse_span_id",
    "parse_trace_id",
    "parse_traceparent",
    "rewrite_span_id",
    "span_from_instance",
    "unix_nanos",
]

#: The span tag that may carry a W3C ``traceparent`` header value (consumed, never exported).
TRACEPARENT_TAG = "traceparent"
#: The span tag that may carry a W3C ``tracestate`` header value (consumed, never exported).
TRACESTATE_TAG = "tracestate"

# Mixer's XOR pad for rewrite_client_span_id: the client span's id becomes span_id ^ pad, and a
# server span with the flag set takes span_id ^ pad as its parent, so the two spans of one hop
# (which share the B3 span id) end up parent and child.
_REWRITE_PAD = bytes((0x3F, 0x6A, 0x2E, 0xC3, 0xC8, 0x10, 0xC2, 0xAB))
_HEX = re.compile(r"[0-9a-fA-F]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TRACESTATE = 512


class InvalidSpan(ValueError):
    """The instance cannot become a span (bad or missing ids or times); the message says why."""


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed W3C ``traceparent``: version 00 layout, later versions read the same four fields."""

    trace_id: bytes
    parent_id: bytes
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)


@dataclass(frozen=True, slots=True)
class SpanData:
    """One span, checked: what both the OTLP and the Zipkin encoders start from.

    ``trace_id`` is 8 bytes for a 64-bit B3 trace id (Zipkin keeps the width, OTLP left-pads it to
    16) or 16 bytes. ``parent_span_id`` is empty for a root span. ``local_*`` describe the side
    that reported the span (the destination of a server span, the source of a client span) and
    ``peer_*`` the other side. ``tags`` are the instance's span tags with absent and empty values
    and the trace-context tags removed.
    """

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    client: bool
    start_ns: int
    end_ns: int
    trace_flags: int = 0x01
    trace_state: str = ""
    #: Whether the span shares its id with the span on the other side of the hop (B3 style).
    shared: bool = False
    http_status_code: int | None = None
    local_service: str = ""
    peer_service: str = ""
    local_ip: IPAddress | None = None
    peer_ip: IPAddress | None = None
    request_size: int | None = None
    request_total_size: int | None = None
    response_size: int | None = None
    response_total_size: int | None = None
    api_protocol: str = ""
    tags: Mapping[str, Any] = field(default_factory=dict)

    @property
    def trace_id_128(self) -> bytes:
        """The trace id as 16 bytes (a 64-bit id left-padded with zeros)."""
        return self.trace_id.rjust(16, b"\x00")

    @property
    def is_error(self) -> bool:
        return self.http_status_code is not None and is_error_status(self.http_status_code, self.client)


def is_error_status(status: int, client: bool) -> bool:
    """OpenTelemetry's HTTP rule: 5xx is an error; 4xx only on the client side (the caller failed)."""
    return status >= 500 or (client and status >= 400)


def _hex_id(text: str, lengths: tuple[int, ...], what: str) -> bytes:
    if len(text) not in lengths or not _HEX.fullmatch(text):
        wanted = " or ".join(str(n) for n in lengths)
        raise InvalidSpan(f"{what} {text!r} is not {wanted} hex characters")
    value = bytes.fromhex(text)
    if not any(value):
        raise InvalidSpan(f"{what} {text!r} is all zeros, which marks an invalid id")
    return value


def parse_trace_id(text: str) -> bytes:
    """A B3 trace id: 16 or 32 hex characters (either case), not all zeros.

    :raises InvalidSpan: anything else.
    """
    return _hex_id(text, (16, 32), "trace id")


def parse_span_id(text: str, what: str = "span id") -> bytes:
    """A B3 span id: 16 hex characters (either case), not all zeros.

    :raises InvalidSpan: anything else.
    """
    return _hex_id(text, (16,), what)


def parse_traceparent(text: str) -> TraceParent:
    """A W3C ``traceparent`` (``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>``).

    Version ``ff`` is invalid; a version above ``00`` may carry more fields after the flags
    (which are ignored), as the W3C spec asks of readers of future versions.

    :raises InvalidSpan: the value does not follow the spec.
    """
    parts = text.strip().split("-")
    if len(parts) < 4 or not re.fullmatch(r"[0-9a-f]{2}", parts[0]):
        raise InvalidSpan(f"traceparent {text!r} is not version-traceid-parentid-flags")
    version = parts[0]
    if version == "ff" or (version == "00" and len(parts) != 4):
        raise InvalidSpan(f"traceparent {text!r} has an invalid version or field count")
    trace_id, parent_id, flags = parts[1], parts[2], parts[3]
    # W3C ids are lowercase only, unlike B3 headers, which tracers write in either case.
    if not re.fullmatch(r"[0-9a-f]{32}", trace_id) or not re.fullmatch(r"[0-9a-f]{16}", parent_id):
        raise InvalidSpan(f"traceparent {text!r} has malformed ids (32 and 16 lowercase hex)")
    if not re.fullmatch(r"[0-9a-f]{2}", flags):
        raise InvalidSpan(f"traceparent {text!r} has malformed flags (2 lowercase hex)")
    return TraceParent(
        parse_trace_id(trace_id), parse_span_id(parent_id, "traceparent parent id"), int(flags, 16)
    )


def rewrite_span_id(span_id: bytes) -> bytes:
    """Mixer's deterministic rewrite of a client span id (XOR with a fixed pad)."""
    return bytes(b ^ p for b, p in zip(span_id, _REWRITE_PAD, strict=True))


def unix_nanos(moment: datetime) -> int:
    """Nanoseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Integer arithmetic: a float timestamp loses microseconds on current dates.
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _address(value: IPAddress | None) -> IPAddress | None:
    # 0.0.0.0 and :: are what config falls back to (`source.ip | ip("0.0.0.0")`): no address.
    return value if value is not None and not value.is_unspecified else None


def _size(value: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def span_from_instance(instance: TraceSpanInstance) -> SpanData:
    """Check a tracespan instance and read it into a :class:`SpanData`.

    Trace context: ``trace_id`` holds a B3 trace id, or a whole ``traceparent`` value; when it is
    empty, the ``traceparent`` span tag is read instead. ``span_id`` is the B3 span id of the
    request (shared by the client and server spans of one hop); when it is empty and a
    traceparent was read, the traceparent's parent id stands for it. ``tracestate`` (span tag)
    becomes the span's trace state.

    :raises InvalidSpan: no usable trace or span id, a malformed parent id, or missing or
        reversed times.
    """
    tags = dict(instance.span_tags or {})
    traceparent_text = _text(tags.pop(TRACEPARENT_TAG, None))
    trace_state = _text(tags.pop(TRACESTATE_TAG, None))
    trace_text = _text(instance.trace_id)
    span_text = _text(instance.span_id)
    parent_text = _text(instance.parent_span_id)

    flags = 0x01  # a span reaching a tracing adapter was sampled by the rule that sent it
    if "-" in trace_text:
        traceparent_text, trace_text = trace_text, ""
    if trace_text:
        trace_id = parse_trace_id(trace_text)
    elif traceparent_text:
        parent = parse_traceparent(traceparent_text)
        trace_id, flags = parent.trace_id, parent.flags
        if not span_text:
            span_text = parent.parent_id.hex()
    else:
        raise InvalidSpan("no trace id: trace_id is empty and there is no traceparent span tag")
    if not span_text:
        raise InvalidSpan("span_id is empty")
    span_id = parse_span_id(span_text)
    parent_span_id = parse_span_id(parent_text, "parent span id") if parent_text else b""

    if instance.start_time is None:
        raise InvalidSpan("start_time is missing")
    start_ns = unix_nanos(instance.start_time)
    end_ns = unix_nanos(instance.end_time) if instance.end_time is not None else start_ns
    if end_ns < start_ns:
        raise InvalidSpan("end_time is before start_time")

    client = bool(instance.client_span)
    rewrite = bool(instance.rewrite_client_span_id)
    if rewrite and client:
        span_id = rewrite_span_id(span_id)
    elif rewrite:
        parent_span_id = rewrite_span_id(span_id)

    source = _text(instance.source_name)
    destination = _text(instance.destination_name)
    status = instance.http_status_code
    if isinstance(status, bool) or not isinstance(status, int) or status <= 0:
        status = None
    return SpanData(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=_text(instance.span_name) or "unknown",
        client=client,
        start_ns=start_ns,
        end_ns=end_ns,
        trace_flags=flags,
        trace_state=trace_state if len(trace_state) <= _MAX_TRACESTATE else "",
        shared=not client and not rewrite,
        http_status_code=status,
        local_service=source if client else destination,
        peer_service=destination if client else source,
        local_ip=_address(instance.source_ip if client else instance.destination_ip),
        peer_ip=_address(instance.destination_ip if client else instance.source_ip),
        request_size=_size(instance.request_size),
        request_total_size=_size(instance.request_total_size),
        response_size=_size(instance.response_size),
        response_total_size=_size(instance.response_total_size),
        api_protocol=_text(instance.api_protocol).lower(),
        tags={k: v for k, v in tags.items() if v is not None and v != ""},
    )


class InvalidSpanLog:
    """Counts instances that could not become spans and says why, without flooding the log.

    The first rejection is logged at WARNING, later ones at most once per ``interval`` seconds
    with the number held back since the last line.
    """

    def __init__(
        self,
        logger: logging.Logger,
        handler: str,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._handler = handler
        self._interval = interval
        self._clock = clock
        self._next_log = float("-inf")
        self._held_back = 0
        self.count = 0

    def record(self, instance: str, error: InvalidSpan) -> None:
        self.count += 1
        now = self._clock()
        if now < self._next_log:
            self._held_back += 1
            return
        more = f" ({self._held_back} more since the last report)" if self._held_back else ""
        self._logger.warning("%s: dropped span of instance %s: %s%s", self._handler, instance, error, more)
        self._held_back = 0
        self._next_log = now + self._interval


class SpanSender(BatchSender, Protocol):
    """A span exporter's sender: :meth:`open` prepares it (reads TLS files, creates the client)
    before the first send; errors there fail the handler's start."""

    def open(self) -> None: ...


SpanSenderT = TypeVar("SpanSenderT", bound=SpanSender)


class SpanHandler(DeliveryReportHandler[SpanSenderT]):
    """A report handler that exports each tracespan instance as one span record.

    Subclasses implement :meth:`encode_span`; instances of other templates are passed over, and
    those that cannot become spans are counted (:attr:`invalid_spans`) and logged, sparingly,
    without failing the rest of the batch.
    """

    def __init__(self, sender: SpanSenderT, options: DeliveryOptions, env: HandlerEnv) -> None:
        super().__init__(sender, options, env)
        self._invalid = InvalidSpanLog(env.logger, env.handler_name)

    @abc.abstractmethod
    def encode_span(self, instance: TraceSpanInstance) -> Record:
        """One instance as a record. :raises InvalidSpan: it cannot become a span."""

    def encode_batch(self, batch: ReportBatch) -> list[Record]:
        records = []
        for instance in batch.instances:
            if not isinstance(instance, TraceSpanInstance):
                continue
            try:
                records.append(self.encode_span(instance))
            except InvalidSpan as exc:
                self._invalid.record(instance.name, exc)
        return records

    async def start_sender(self) -> None:
        self.sender.open()

    @property
    def invalid_spans(self) -> int:
        """Instances that could not become spans (bad ids or times), never sent."""
        return self._invalid.count
