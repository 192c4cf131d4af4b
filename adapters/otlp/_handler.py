"""The otlp handler: encode tracespan instances, hand them to Delivery, export them over gRPC."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from adapters.otlp._config import OtlpConfig
from mixer.adapter import HandlerEnv
from mixer.delivery import DeliveryStats, PermanentError, Record, RetryableError, SendResult
from mixer.spans import SpanHandler
from mixer.spans.otlp import encode_instance, export_request
from mixer.templates import TraceSpanInstance

__all__ = ["EXPORT_METHOD", "OtlpHandler", "OtlpSender", "OtlpStats", "classify_rpc_error", "retry_delay"]

#: The OTLP/gRPC method, called by path: opentelemetry-proto ships no gRPC stubs.
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

#: Codes the OTLP spec calls retryable. RESOURCE_EXHAUSTED is retryable only when the server
#: sends RetryInfo: without it the usual cause is a message over the server's size limit, which
#: no retry fixes.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
#: A RetryInfo delay longer than this is cut to it, so a bad value cannot stall the handler.
MAX_RETRY_DELAY = 60.0
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    """The ``google.rpc.RetryInfo`` delay (seconds) in an error's status details, if any."""
    for key, value in error.trailing_metadata() or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # a malformed trailer is no reason to fail the classification
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                delay = float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
                return min(max(delay, 0.0), MAX_RETRY_DELAY)
    return None


def classify_rpc_error(error: grpc.aio.AioRpcError) -> RetryableError | PermanentError:
    """The OTLP spec's reading of a failed export."""
    code = error.code()
    message = f"OTLP export failed: {code.name}: {error.details() or ''}".rstrip(": ")
    if code in RETRYABLE_CODES:
        return RetryableError(message)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and retry_delay(error) is not None:
        return RetryableError(message)
    return PermanentError(message)


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


class OtlpSender:
    """Sends a batch of span records as one ``ExportTraceServiceRequest``.

    A partial success (``rejected_spans``) does not say which spans were refused, so nothing can
    be dead-lettered for it: the count is added to :attr:`rejected_spans` and the server's message
    logged, and the batch counts as sent. After a RetryInfo answer, sends wait out the delay.
    """

    def __init__(
        self,
        config: OtlpConfig,
        logger: logging.Logger,
        *,
        name: str = "otlp",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._logger = logger
        self._name = name
        self._clock = clock
        self._channel: grpc.aio.Channel | None = None
        self._export: Any = None
        self._metadata = tuple((k, v.get_secret_value()) for k, v in config.headers.items())
        self._compression = (
            grpc.Compression.Gzip if config.compression == "gzip" else grpc.Compression.NoCompression
        )
        self._resume_at = float("-inf")
        self.rejected_spans = 0

    def open(self) -> None:
        """Create the channel (it connects on first use). Reads the TLS files; errors fail the start.

        :raises OSError: a TLS file cannot be read.
        """
        if self._channel is not None:
            return
        tls = self._config.tls
        options: list[tuple[str, Any]] = []
        if tls.insecure:
            channel = grpc.aio.insecure_channel(self._config.endpoint, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls.ca_file),
                private_key=_read(tls.key_file),
                certificate_chain=_read(tls.cert_file),
            )
            if tls.server_name_override:
                options.append(("grpc.ssl_target_name_override", tls.server_name_override))
            channel = grpc.aio.secure_channel(self._config.endpoint, credentials, options=options)
        self._channel = channel
        # Requests are serialized by export_request; only the response is parsed.
        self._export = channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        wait = self._resume_at - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._export is None:
            self.open()
        try:
            response: ExportTraceServiceResponse = await self._export(
                export_request(batch),
                timeout=self._config.timeout.total_seconds(),
                metadata=self._metadata,
                compression=self._compression,
            )
        except grpc.aio.AioRpcError as exc:
            delay = retry_delay(exc)
            if delay is not None:
                self._resume_at = self._clock() + delay
            raise classify_rpc_error(exc) from None
        partial = response.partial_success
        if partial.rejected_spans > 0:
            self.rejected_spans += partial.rejected_spans
            self._logger.warning(
                "%s: the collector rejected %d of %d spans: %s",
                self._name,
                partial.rejected_spans,
                len(batch),
                partial.error_message or "(no message)",
            )
        elif partial.error_message:
            self._logger.warning("%s: the collector warns: %s", self._name, partial.error_message)
        return None

    async def close(self) -> None:
        channel, self._channel, self._export = self._channel, None, None
        if channel is not None:
            await channel.close()


@dataclass(frozen=True, slots=True)
class OtlpStats:
    """``invalid_spans``: instances that could not become spans (bad ids or times), never sent.
    ``rejected_spans``: spans the collector refused in a partial success."""

    delivery: DeliveryStats
    invalid_spans: int
    rejected_spans: int


class OtlpHandler(SpanHandler[OtlpSender]):
    """Exports tracespan instances as OTLP spans; see the package README for the mapping."""

    def __init__(self, config: OtlpConfig, env: HandlerEnv) -> None:
        super().__init__(OtlpSender(config, env.logger, name=env.handler_name), config.delivery, env)
        self.config = config

    def encode_span(self, instance: TraceSpanInstance) -> Record:
        return encode_instance(instance)

    @property
    def stats(self) -> OtlpStats:
        return OtlpStats(self.delivery_stats, self.invalid_spans, self.sender.rejected_spans)
