"""FakeOtlpReceiver: an OTLP/gRPC trace receiver on 127.0.0.1, for tests and demos.

A ``grpc.aio`` server that registers ``opentelemetry.proto.collector.trace.v1.TraceService/Export``
by path (opentelemetry-proto ships messages, no gRPC stubs) and decodes requests with
opentelemetry-proto. It turns off gRPC's own message decompression so it can tell how each request
travelled (:attr:`ReceivedExport.compression`), then gunzips and parses it itself.

Requests are checked as a collector would: unparseable ones, and spans whose trace id is not 16
bytes or span id not 8 bytes (or all zeros), are answered ``INVALID_ARGUMENT`` and not stored.

Answers are scriptable: :meth:`FakeOtlpReceiver.fail_next` (a gRPC error for the next N calls,
optionally with ``google.rpc.RetryInfo``) and :meth:`FakeOtlpReceiver.partial_success_next` (the
next N calls are stored but answered with ``partial_success.rejected_spans``). With
``required_metadata`` every call must carry those metadata values, else ``UNAUTHENTICATED``.
"""

from __future__ import annotations

import asyncio
import gzip
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["FakeOtlpReceiver", "ReceivedExport", "ReceivedSpan", "attribute_values"]

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_GZIP_MAGIC = b"\x1f\x8b"


def _plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_plain(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def attribute_values(attributes: Any) -> dict[str, Any]:
    """OTLP ``KeyValue`` attributes as a plain dict (typed: int, bool, float, str, bytes, list, dict)."""
    return {kv.key: _plain(kv.value) for kv in attributes}


@dataclass(frozen=True, slots=True)
class ReceivedExport:
    """One accepted Export call: the request, its metadata and how it was compressed on the wire."""

    request: ExportTraceServiceRequest
    metadata: Mapping[str, str]
    #: ``"gzip"`` or ``"identity"``.
    compression: str


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """A stored span with its resource and scope, attributes decoded for easy assertions."""

    span: Span
    resource: Mapping[str, Any]
    scope_name: str
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Failure:
    code: grpc.StatusCode
    message: str
    retry_delay: float | None


@dataclass(frozen=True, slots=True)
class _Partial:
    rejected_spans: int
    error_message: str


class FakeOtlpReceiver:
    """An OTLP/gRPC TraceService on ``127.0.0.1:<free port>``; use ``async with`` or start/stop.

    :param tls: ``(private_key_pem, certificate_chain_pem)`` to serve TLS instead of plaintext.
    :param required_metadata: metadata every call must carry (``{"authorization": "Bearer x"}``).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        tls: tuple[bytes, bytes] | None = None,
        required_metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._requested_port = port
        self._tls = tls
        self._required = dict(required_metadata or {})
        self._server: grpc.aio.Server | None = None
        self._script: deque[_Failure | _Partial] = deque()
        self._arrived = asyncio.Condition()
        self.port = 0
        #: Every accepted Export, in arrival order.
        self.exports: list[ReceivedExport] = []
        #: Export calls received, answered with an error or not.
        self.calls = 0

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT``, for an otlp handler's ``endpoint`` param."""
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        # Raw bytes in, so the handler sees whether the client compressed the message.
        server = grpc.aio.server(options=[("grpc.per_message_decompression", 0)])
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "Export": grpc.unary_unary_rpc_method_handler(
                            self._export,
                            request_deserializer=None,
                            response_serializer=ExportTraceServiceResponse.SerializeToString,
                        )
                    },
                ),
            )
        )
        address = f"127.0.0.1:{self._requested_port}"
        if self._tls is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, grpc.ssl_server_credentials([self._tls]))
        await server.start()
        self._server = server

    async def stop(self, grace: float | None = None) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def fail_next(
        self,
        code: grpc.StatusCode,
        *,
        times: int = 1,
        message: str = "scripted failure",
        retry_delay: float | None = None,
    ) -> None:
        """Answer the next ``times`` calls with ``code`` (and RetryInfo when ``retry_delay`` is given)."""
        self._script.extend(_Failure(code, message, retry_delay) for _ in range(times))

    def partial_success_next(self, rejected_spans: int, error_message: str = "", *, times: int = 1) -> None:
        """Store the next ``times`` requests but answer them with a partial success."""
        self._script.extend(_Partial(rejected_spans, error_message) for _ in range(times))

    def spans(self) -> list[ReceivedSpan]:
        """Every stored span, in arrival order."""
        out = []
        for export in self.exports:
            for resource_spans in export.request.resource_spans:
                resource = attribute_values(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        out.append(
                            ReceivedSpan(
                                span, resource, scope_spans.scope.name, attribute_values(span.attributes)
                            )
                        )
        return out

    async def wait_for_spans(self, count: int, timeout: float = 5.0) -> list[ReceivedSpan]:
        """The stored spans once there are at least ``count``.

        :raises TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.spans()) >= count)
        return self.spans()

    async def _abort(
        self,
        context: grpc.aio.ServicerContext,
        code: grpc.StatusCode,
        message: str,
        delay: float | None = None,
    ) -> None:
        trailers: tuple[tuple[str, bytes], ...] = ()
        if delay is not None:
            status = status_pb2.Status(code=code.value[0], message=message)
            whole, fraction = divmod(delay, 1.0)
            info = error_details_pb2.RetryInfo(
                retry_delay=Duration(seconds=int(whole), nanos=int(fraction * 1e9))
            )
            status.details.add().Pack(info)
            trailers = (("grpc-status-details-bin", status.SerializeToString()),)
        await context.abort(code, message, trailing_metadata=trailers)

    async def _export(self, raw: bytes, context: grpc.aio.ServicerContext) -> ExportTraceServiceResponse:
        self.calls += 1
        metadata = {item.key: item.value for item in context.invocation_metadata() or ()}
        for key, value in self._required.items():
            if metadata.get(key) != value:
                await self._abort(context, grpc.StatusCode.UNAUTHENTICATED, f"missing or wrong {key}")
        step = self._script.popleft() if self._script else None
        if isinstance(step, _Failure):
            await self._abort(context, step.code, step.message, step.retry_delay)
        compression = "gzip" if raw.startswith(_GZIP_MAGIC) else "identity"
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(gzip.decompress(raw) if compression == "gzip" else raw)
            problem = _check(request)
        except Exception:
            problem = "cannot parse ExportTraceServiceRequest"
        if problem:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)
        self.exports.append(ReceivedExport(request, metadata, compression))
        async with self._arrived:
            self._arrived.notify_all()
        if isinstance(step, _Partial):
            return ExportTraceServiceResponse(
                partial_success=ExportTracePartialSuccess(
                    rejected_spans=step.rejected_spans, error_message=step.error_message
                )
            )
        return ExportTraceServiceResponse()


def _check(request: ExportTraceServiceRequest) -> str:
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if len(span.trace_id) != 16 or not any(span.trace_id):
                    return f"span {span.name!r}: trace_id must be 16 non-zero bytes"
                if len(span.span_id) != 8 or not any(span.span_id):
                    return f"span {span.name!r}: span_id must be 8 non-zero bytes"
                if span.parent_span_id and len(span.parent_span_id) != 8:
                    return f"span {span.name!r}: parent_span_id must be empty or 8 bytes"
    return ""
