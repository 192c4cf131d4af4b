"""Envoy access log entries as attribute bags, in Istio's vocabulary (the table is in docs/envoy.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from time import perf_counter
from typing import Any, Final

from mixer.api._common import ServiceLimits
from mixer.api._envoy import check_limits, set_endpoint, utc_datetime
from mixer.attributes import AttributeBag, AttributeValue
from mixer.proto.envoy.config.core.v3.base_pb2 import RequestMethod
from mixer.proto.envoy.data.accesslog.v3.accesslog_pb2 import (
    AccessLogCommon,
    AccessLogType,
    HTTPAccessLogEntry,
    ResponseFlags,
    TCPAccessLogEntry,
    TLSProperties,
)
from mixer.proto.envoy.service.accesslog.v3.als_pb2 import StreamAccessLogsMessage
from mixer.runtime import yield_for

__all__ = [
    "ENTRY_CONTAINERS",
    "Identifier",
    "http_entry_attributes",
    "message_bags",
    "message_bags_in_slices",
    "tcp_entry_attributes",
]

Identifier = StreamAccessLogsMessage.Identifier

#: Envoy's short response flag codes (%RESPONSE_FLAGS%), in Envoy's order.
_RESPONSE_FLAGS: Final = (
    ("failed_local_healthcheck", "LH"),
    ("no_healthy_upstream", "UH"),
    ("upstream_request_timeout", "UT"),
    ("local_reset", "LR"),
    ("upstream_remote_reset", "UR"),
    ("upstream_connection_failure", "UF"),
    ("upstream_connection_termination", "UC"),
    ("upstream_overflow", "UO"),
    ("no_route_found", "NR"),
    ("delay_injected", "DI"),
    ("fault_injected", "FI"),
    ("rate_limited", "RL"),
    ("unauthorized_details", "UAEX"),
    ("rate_limit_service_error", "RLSE"),
    ("downstream_connection_termination", "DC"),
    ("upstream_retry_limit_exceeded", "URX"),
    ("stream_idle_timeout", "SI"),
    ("invalid_envoy_request_headers", "IH"),
    ("downstream_protocol_error", "DPE"),
    ("upstream_max_stream_duration_reached", "UMSDR"),
    ("response_from_cache_filter", "RFCF"),
    ("no_filter_config_found", "NFCF"),
    ("duration_timeout", "DT"),
    ("upstream_protocol_error", "UPE"),
    ("no_cluster_found", "NC"),
    ("overload_manager", "OM"),
    ("dns_resolution_failure", "DF"),
    ("downstream_remote_reset", "DR"),
)
#: Mixer's connection events for Envoy's TCP log types; any other type is a connection's end.
_CONNECTION_EVENTS: Final[Mapping[int, str]] = {
    AccessLogType.TcpUpstreamConnected: "open",
    AccessLogType.TcpPeriodic: "continue",
}
_REPORTER_KINDS: Final = frozenset({"inbound", "outbound"})


def http_entry_attributes(
    entry: HTTPAccessLogEntry, identifier: Identifier | None = None
) -> dict[str, AttributeValue]:
    """The attributes of one HTTP access log entry (docs/envoy.md has the table)."""
    attrs: dict[str, AttributeValue] = {}
    common = entry.common_properties
    _common(attrs, common, identifier)
    duration = _duration(common)
    if duration is not None:
        attrs["response.duration"] = duration
    if common.HasField("start_time"):
        attrs["request.time"] = start = utc_datetime(common.start_time)
        if duration is not None:
            attrs["response.time"] = start + duration

    request = entry.request
    method = _method(request.request_method)
    headers = dict(request.request_headers)
    for header, value in (
        (":method", method),
        (":authority", request.authority),
        (":path", request.path),
        ("user-agent", request.user_agent),
        ("referer", request.referer),
        ("x-forwarded-for", request.forwarded_for),
        ("x-request-id", request.request_id),
    ):
        if value:
            headers.setdefault(header, value)
    if headers:
        attrs["request.headers"] = headers
    for attribute, value in (
        ("request.method", method),
        ("request.scheme", request.scheme),
        ("request.host", request.authority),
        ("request.path", request.path),
        ("request.useragent", request.user_agent),
        ("request.referer", request.referer),
        ("request.id", request.request_id),
    ):
        if value:
            attrs[attribute] = value
    if request.path:
        attrs["request.url_path"] = request.path.partition("?")[0]
    attrs["request.size"] = request.request_body_bytes
    attrs["request.total_size"] = request.request_headers_bytes + request.request_body_bytes

    response = entry.response
    if response.HasField("response_code"):
        attrs["response.code"] = response.response_code.value
    attrs["response.size"] = response.response_body_bytes
    attrs["response.total_size"] = response.response_headers_bytes + response.response_body_bytes
    if response.response_headers:
        attrs["response.headers"] = dict(response.response_headers)
    grpc_status = response.response_trailers.get("grpc-status") or response.response_headers.get(
        "grpc-status"
    )
    if grpc_status:
        attrs["response.grpc_status"] = grpc_status
    grpc_message = response.response_trailers.get("grpc-message") or response.response_headers.get(
        "grpc-message"
    )
    if grpc_message:
        attrs["response.grpc_message"] = grpc_message

    content_type = headers.get("content-type", "")
    grpc_call = content_type.startswith("application/grpc") or bool(grpc_status)
    attrs["context.protocol"] = "grpc" if grpc_call else "http"
    return attrs


def tcp_entry_attributes(
    entry: TCPAccessLogEntry, identifier: Identifier | None = None
) -> dict[str, AttributeValue]:
    """The attributes of one TCP access log entry (docs/envoy.md has the table).

    Envoy's byte counts are the connection's totals so far; they are both the ``*.bytes`` and the
    ``*.bytes_total`` attributes, so only a connection's last entry should feed byte counters.
    """
    attrs: dict[str, AttributeValue] = {}
    common = entry.common_properties
    _common(attrs, common, identifier)
    if common.HasField("start_time"):
        attrs["context.time"] = utc_datetime(common.start_time)
    if common.HasField("duration"):
        attrs["connection.duration"] = common.duration.ToTimedelta()
    if common.stream_id:
        attrs["connection.id"] = common.stream_id
    attrs["connection.event"] = _CONNECTION_EVENTS.get(common.access_log_type, "close")
    received = entry.connection_properties.received_bytes
    sent = entry.connection_properties.sent_bytes
    attrs["connection.received.bytes"] = attrs["connection.received.bytes_total"] = received
    attrs["connection.sent.bytes"] = attrs["connection.sent.bytes_total"] = sent
    attrs["context.protocol"] = "tcp"
    return attrs


def _method(value: int) -> str:
    try:
        return RequestMethod.Name(value) if value else ""
    except ValueError:
        # A method added to Envoy's enum after these protos were written.
        return ""


def _duration(common: AccessLogCommon) -> timedelta | None:
    # Istio's request duration: until the last byte went back downstream.
    if common.HasField("time_to_last_downstream_tx_byte"):
        return common.time_to_last_downstream_tx_byte.ToTimedelta()
    if common.HasField("duration"):
        return common.duration.ToTimedelta()
    return None


def _common(attrs: dict[str, AttributeValue], common: AccessLogCommon, identifier: Identifier | None) -> None:
    if common.HasField("downstream_remote_address"):
        set_endpoint(attrs, "source", common.downstream_remote_address)
    if common.HasField("upstream_remote_address"):
        set_endpoint(attrs, "destination", common.upstream_remote_address)
    elif common.HasField("downstream_local_address"):
        set_endpoint(attrs, "destination", common.downstream_local_address)
    if common.HasField("tls_properties"):
        _tls(attrs, common.tls_properties)
    if common.HasField("response_flags"):
        attrs["context.proxy_error_code"] = _response_flags(common.response_flags)

    kind = ""
    # Istio names clusters "outbound|PORT|SUBSET|HOST" and "inbound|PORT|NAME|HOST".
    parts = common.upstream_cluster.split("|")
    if len(parts) == 4 and parts[0] in _REPORTER_KINDS:
        kind = parts[0]
        attrs["context.reporter.kind"] = kind
        host = parts[3]
        if host:
            attrs["destination.service.host"] = host
            labels = host.split(".")
            # Kubernetes service names: NAME.NAMESPACE.svc.DOMAIN
            if len(labels) >= 3 and labels[2] == "svc" and labels[0] and labels[1]:
                attrs["destination.service.name"] = labels[0]
                attrs["destination.service.namespace"] = labels[1]
    if identifier is not None and kind:
        _reporter(attrs, identifier, "source" if kind == "outbound" else "destination")


def _reporter(attrs: dict[str, AttributeValue], identifier: Identifier, side: str) -> None:
    # Istio's node ids: "sidecar~IP~POD.NAMESPACE~DOMAIN" (or "router~..." for gateways).
    parts = identifier.node.id.split("~")
    if len(parts) != 4:
        return
    pod, _, namespace = parts[2].rpartition(".")
    if not pod or not namespace:
        return
    uid = f"kubernetes://{pod}.{namespace}"
    attrs["context.reporter.uid"] = uid
    attrs.setdefault(f"{side}.uid", uid)
    attrs.setdefault(f"{side}.name", pod)
    attrs.setdefault(f"{side}.namespace", namespace)


def _tls(attrs: dict[str, AttributeValue], tls: TLSProperties) -> None:
    if tls.tls_sni_hostname:
        attrs["connection.requested_server_name"] = tls.tls_sni_hostname
    if tls.HasField("peer_certificate_properties"):
        attrs["connection.mtls"] = True
        principal = _uri_san(tls.peer_certificate_properties)
        if principal:
            attrs["source.principal"] = principal
    if tls.HasField("local_certificate_properties"):
        principal = _uri_san(tls.local_certificate_properties)
        if principal:
            attrs["destination.principal"] = principal


def _uri_san(properties: TLSProperties.CertificateProperties) -> str:
    return next((san.uri for san in properties.subject_alt_name if san.uri), "")


def _response_flags(flags: ResponseFlags) -> str:
    codes = [
        code
        for field, code in _RESPONSE_FLAGS
        # The one flag that is a message (with the reason) rather than a bool.
        if (flags.HasField(field) if field == "unauthorized_details" else getattr(flags, field))
    ]
    # Istio's proxies send "-" for no flag, as Envoy's %RESPONSE_FLAGS% prints it.
    return ",".join(codes) or "-"


#: ``http_logs`` and ``tcp_logs``: the fields of a StreamAccessLogsMessage that hold entries.
ENTRY_CONTAINERS: Final = frozenset({2, 3})
#: Entries turned into bags between two yields to the event loop.
_ENTRY_SLICE: Final = 128


async def message_bags_in_slices(
    message: StreamAccessLogsMessage, identifier: Identifier | None, limits: ServiceLimits
) -> tuple[str, list[AttributeBag], int]:
    """:func:`message_bags`, yielding to the event loop every ``_ENTRY_SLICE`` entries."""
    kind = message.WhichOneof("log_entries") or ""
    if kind == "http_logs":
        entries: Any = message.http_logs.log_entry
    elif kind == "tcp_logs":
        entries = message.tcp_logs.log_entry
    else:
        return "", [], 0
    if len(entries) <= _ENTRY_SLICE:
        return message_bags(message, identifier, limits)
    bags: list[AttributeBag] = []
    invalid = 0
    for first in range(0, len(entries), _ENTRY_SLICE):
        started = perf_counter()
        kind, some, skipped = message_bags(message, identifier, limits, entries[first : first + _ENTRY_SLICE])
        bags += some
        invalid += skipped
        if first + _ENTRY_SLICE < len(entries):
            await yield_for(perf_counter() - started)
    return kind, bags, invalid


def message_bags(
    message: StreamAccessLogsMessage,
    identifier: Identifier | None,
    limits: ServiceLimits,
    only: Any = None,
) -> tuple[str, list[AttributeBag], int]:
    """The entries of one message as bags: ``(kind, bags, invalid)`` where ``kind`` is ``http``
    or ``tcp`` (``""`` for a message with no entries) and ``invalid`` counts skipped entries.
    ``only``: these entries of the message instead of all of them."""
    kind = message.WhichOneof("log_entries") or ""
    entries: Any
    build: Callable[[Any, Identifier | None], dict[str, AttributeValue]]
    if kind == "http_logs":
        entries, build, kind = message.http_logs.log_entry, http_entry_attributes, "http"
    elif kind == "tcp_logs":
        entries, build, kind = message.tcp_logs.log_entry, tcp_entry_attributes, "tcp"
    else:
        return "", [], 0
    bags: list[AttributeBag] = []
    invalid = 0
    for entry in entries if only is None else only:
        try:
            attrs = build(entry, identifier)
            check_limits(attrs, limits, f"{kind} access log entry")
        except (ValueError, OverflowError):
            # Over a decoding limit, or a time outside what datetime holds.
            invalid += 1
            continue
        bags.append(AttributeBag(attrs))
    return kind, bags, invalid
