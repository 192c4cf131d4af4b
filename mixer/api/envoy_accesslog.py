"""Envoy's gRPC access log service (``envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs``).

Envoy's ``envoy.access_loggers.http_grpc`` and ``tcp_grpc`` loggers keep one client stream open
and send batches of entries. Each entry becomes an attribute bag in Istio's vocabulary
(:func:`http_entry_attributes`, :func:`tcp_entry_attributes`; the table is in docs/envoy.md) and
each message's bags go to :meth:`Runtime.report <mixer.runtime.Runtime.report>` in one call, so
the report rules (metrics, access logs, traces) treat them like istio.mixer.v1 Reports.

The stream is answered (an empty StreamAccessLogsResponse) when the client closes it. Nothing that
goes wrong with one message ends the stream, as Envoy would only reconnect and send more:

- a message that does not parse is counted in ``mixer_decode_errors_total``;
- an entry that cannot become a bag (over a decoding limit) is skipped;
- entries that arrive while the server is over its concurrency limit, or that the runtime refuses
  (a handler overloaded or failing), are dropped;

each counted in ``mixer_envoy_access_log_entries_total{kind, result}`` (``result``: ``reported``,
``invalid``, ``dropped``). The node identifier comes only in a stream's first message; it is kept
for the stream's later messages.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

import grpc
from prometheus_client import Counter

from mixer.api._accesslog_entries import (
    ENTRY_CONTAINERS,
    Identifier,
    http_entry_attributes,
    message_bags,
    message_bags_in_slices,
    tcp_entry_attributes,
)
from mixer.api._common import Admission, ServiceLimits
from mixer.api._envelope import CallFailure, Lease
from mixer.api._envoy import EnvoyRequestError, parse
from mixer.api._grpc import GrpcServicer
from mixer.proto.envoy.service.accesslog.v3.als_pb2 import StreamAccessLogsMessage
from mixer.status import Code
from mixer.wire import WireDecodeError, count_entries

if TYPE_CHECKING:
    from mixer.api._holder import RuntimeHolder
    from mixer.api._metrics import ServerMetrics
    from mixer.api._registry import ServiceContext

__all__ = [
    "API",
    "SERVICE_NAME",
    "STREAM_ACCESS_LOGS_METHOD",
    "EnvoyAccessLogService",
    "grpc_service",
    "http_entry_attributes",
    "message_bags",
    "message_bags_in_slices",
    "tcp_entry_attributes",
]

SERVICE_NAME: Final = "envoy.service.accesslog.v3.AccessLogService"
STREAM_ACCESS_LOGS_METHOD: Final = f"/{SERVICE_NAME}/StreamAccessLogs"
#: The ``api`` label of this service's metrics.
API: Final = "envoy_accesslog"

_ENTRY_COUNTERS: weakref.WeakKeyDictionary[ServerMetrics, Counter] = weakref.WeakKeyDictionary()


def _entry_counter(metrics: ServerMetrics) -> Counter:
    counter = _ENTRY_COUNTERS.get(metrics)
    if counter is None:
        counter = Counter(
            "mixer_envoy_access_log_entries",
            "Envoy access log entries received, by kind (http, tcp) and result (reported, invalid, dropped)",
            ["kind", "result"],
            registry=metrics.registry,
        )
        for kind in ("http", "tcp"):
            for result in ("reported", "invalid", "dropped"):
                counter.labels(kind, result)
        _ENTRY_COUNTERS[metrics] = counter
    return counter


class EnvoyAccessLogService(GrpcServicer):
    """StreamAccessLogs for one server process; :meth:`rpc_handler` registers it with grpc.aio."""

    api = API
    methods = ("StreamAccessLogs",)
    title = "access log service"
    # A stream may stay open for as long as Envoy runs: admission is checked per message, and
    # its end is always the client's.
    admitted = False
    deadlines = False

    def __init__(
        self,
        holder: RuntimeHolder,
        metrics: ServerMetrics,
        admission: Admission,
        limits: ServiceLimits,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(holder, metrics, admission, limits, logger=logger)
        self._metrics = self._methods["StreamAccessLogs"]
        self._entries = _entry_counter(metrics)

    @property
    def streams(self) -> int:
        """Streams open now."""
        return self._calls.in_flight

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {"StreamAccessLogs": grpc.stream_unary_rpc_method_handler(self.stream_access_logs)},
        )

    async def stream_access_logs(self, request_iterator: AsyncIterator[bytes], context: Any) -> bytes:
        return await self._calls.run(
            self._metrics, "StreamAccessLogs", context, self._stream, request_iterator
        )

    async def _stream(self, lease: Lease, context: Any, request_iterator: AsyncIterator[bytes]) -> bytes:
        identifier: Identifier | None = None
        async for data in request_iterator:
            identifier, too_large = await self.consume(data, identifier, lease)
            if too_large is not None:
                raise CallFailure(
                    Code.RESOURCE_EXHAUSTED,
                    f"an access log message has more than {self._limits.max_report_records} entries "
                    "(see --max-report-records)",
                )
        return b""

    async def consume(
        self, data: bytes, identifier: Identifier | None, lease: Lease
    ) -> tuple[Identifier | None, int | None]:
        """Report the entries of one serialized message, on a runtime leased for it alone.

        :returns: the stream's identifier afterwards, and the entry count when the message has more
            than ``max_report_records`` entries (nothing of it is reported; the stream should end).
        """
        limit = self._limits.max_report_records
        try:
            # Counted before parsing: parsing hundreds of thousands of tiny entries takes seconds.
            entries = count_entries(data, ENTRY_CONTAINERS, limit)
            message: StreamAccessLogsMessage = parse(StreamAccessLogsMessage, data)
        except (EnvoyRequestError, WireDecodeError) as exc:
            self._metrics.decode_errors.inc()
            self._log.debug("skipped an access log message: %s", exc)
            return identifier, None
        if entries > limit:
            self._metrics.decode_errors.inc()
            self._log.warning("access log message with more than %d entries refused", limit)
            return identifier, entries
        if message.HasField("identifier"):
            identifier = message.identifier
        kind, bags, invalid = await message_bags_in_slices(message, identifier, self._limits)
        if not kind:
            return identifier, None
        counter = self._entries
        if invalid:
            counter.labels(kind, "invalid").inc(invalid)
        if not bags:
            return identifier, None
        if self._admission.full:
            counter.labels(kind, "dropped").inc(len(bags))
            return identifier, None
        # Dispatch yields between slices, so the runtime is held across them.
        try:
            status = (await lease.runtime().report_in_slices(bags)).status
        except Exception:
            self._log.exception("access log Report failed unexpectedly")
            counter.labels(kind, "dropped").inc(len(bags))
            return identifier, None
        finally:
            lease.release()
        if status.ok:
            counter.labels(kind, "reported").inc(len(bags))
        else:
            self._log.debug("access log entries dropped: %s", status.message)
            counter.labels(kind, "dropped").inc(len(bags))
        return identifier, None


def grpc_service(context: ServiceContext) -> grpc.GenericRpcHandler:
    """The access log service for a server (see :mod:`mixer.api._registry`)."""
    return EnvoyAccessLogService.service(context)
