"""A client of the istio.mixer.v1 API: Check and Report, as a proxy sends them.

:class:`MixerClient` is asynchronous (``grpc.aio``); :class:`SyncMixerClient` blocks and suits
scripts and tests. Both send requests made by :mod:`mixer.wire` and decode a CheckResponse into a
:class:`CheckAnswer`. A denial is an answer, not an error: :class:`MixerCallError` is raised only
when the call itself fails (server unreachable, deadline exceeded, a non-OK gRPC status, an answer
that does not decode).

The methods are called by their full paths with this module's own serializers, so neither side
needs generated service stubs.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, Final, Self

import grpc
import grpc.aio
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration

from mixer.attributes import AttributeMatch, AttributeValue, format_duration
from mixer.decision import HeaderOperationKind, HeaderOperationResult, QuotaOutcome, QuotaRequest
from mixer.proto.istio.mixer.v1.check_pb2 import CheckRequest, CheckResponse, HeaderOperation
from mixer.proto.istio.mixer.v1.report_pb2 import ReportRequest, ReportResponse
from mixer.status import OK, Code, Status
from mixer.wire import (
    ReportEncoding,
    WireDecodeError,
    decode_referenced_attributes,
    encode_check_request,
    encode_report_request,
)

__all__ = [
    "CHECK_METHOD",
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "REPORT_METHOD",
    "CheckAnswer",
    "ClientTls",
    "MixerCallError",
    "MixerClient",
    "MixerResponseError",
    "ReportEncoding",
    "RouteDirectiveAnswer",
    "SyncMixerClient",
    "decode_check_response",
]

CHECK_METHOD: Final = "/istio.mixer.v1.Mixer/Check"
REPORT_METHOD: Final = "/istio.mixer.v1.Mixer/Report"
DEFAULT_TARGET: Final = "127.0.0.1:9091"
#: What Istio 1.4 proxies allow a Mixer call.
DEFAULT_TIMEOUT: Final = 5.0

_CODES: Final = {int(c): c for c in Code}
_OPERATIONS: Final = {int(k): k for k in HeaderOperationKind}


@dataclass(frozen=True, slots=True)
class ClientTls:
    """TLS to the server: the CA to trust (None: the system's), a client certificate and key for
    mTLS, and the name to expect in the server's certificate when it differs from the target host."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


class MixerCallError(Exception):
    """A Check or Report call that did not complete: its gRPC status code and details."""

    def __init__(self, method: str, target: str, code: Code, details: str) -> None:
        super().__init__(f"{method} at {target} failed: {code.name}: {details}")
        self.method = method
        self.target = target
        self.code = code
        self.details = details

    @property
    def unreachable(self) -> bool:
        """The server could not be reached (or said it cannot serve now): UNAVAILABLE."""
        return self.code is Code.UNAVAILABLE


class MixerResponseError(MixerCallError):
    """The server answered, but with a CheckResponse that does not decode (code INTERNAL)."""


@dataclass(frozen=True, slots=True)
class RouteDirectiveAnswer:
    """``CheckResponse.PreconditionResult.route_directive``: what the proxy should do to the request."""

    request_header_operations: list[HeaderOperationResult] = field(default_factory=list)
    response_header_operations: list[HeaderOperationResult] = field(default_factory=list)
    direct_response_code: int = 0
    direct_response_body: str = ""


@dataclass(frozen=True, slots=True)
class CheckAnswer:
    """A decoded CheckResponse.

    ``status`` is the precondition's; ``referenced`` lists the attributes it read, in wire order.
    ``route_directive`` is None when the server sent none. Each quota asked for that the server
    answered is in ``quotas``; a quota answer without a status is OK (that is how Mixer sends it).
    """

    status: Status
    valid_duration: timedelta
    valid_use_count: int
    referenced: list[AttributeMatch] = field(default_factory=list)
    route_directive: RouteDirectiveAnswer | None = None
    quotas: dict[str, QuotaOutcome] = field(default_factory=dict)
    #: ``google.rpc.Status.details`` of the precondition, as sent.
    details: list[AnyProto] = field(default_factory=list)

    @property
    def code(self) -> Code:
        return self.status.code

    @property
    def message(self) -> str:
        return self.status.message

    @property
    def allowed(self) -> bool:
        return self.status.ok

    def to_json(self) -> dict[str, Any]:
        """The answer as JSON values; the shape ``mixer check`` prints (see docs/cli.md)."""
        status = _status_json(self.status)
        if self.details:
            status["details"] = [
                {"type_url": d.type_url, "value": base64.b64encode(d.value).decode("ascii")}
                for d in self.details
            ]
        route = self.route_directive
        return {
            "status": status,
            "valid_duration": format_duration(self.valid_duration),
            "valid_use_count": self.valid_use_count,
            "referenced_attributes": _matches_json(self.referenced),
            "route_directive": None
            if route is None
            else {
                "request_header_operations": _operations_json(route.request_header_operations),
                "response_header_operations": _operations_json(route.response_header_operations),
                "direct_response_code": route.direct_response_code,
                "direct_response_body": route.direct_response_body,
            },
            "quotas": {
                name: {
                    "granted_amount": quota.granted_amount,
                    "valid_duration": format_duration(quota.valid_duration),
                    "status": _status_json(quota.status),
                    "referenced_attributes": _matches_json(quota.referenced),
                }
                for name, quota in sorted(self.quotas.items())
            },
        }


def _status_json(status: Status) -> dict[str, Any]:
    return {"code": status.code.name, "code_number": int(status.code), "message": status.message}


def _matches_json(matches: Sequence[AttributeMatch]) -> list[dict[str, Any]]:
    return [{"name": m.name, "condition": m.condition.name, "map_key": m.map_key} for m in matches]


def _operations_json(ops: Sequence[HeaderOperationResult]) -> list[dict[str, Any]]:
    return [{"name": op.name, "value": op.value, "operation": op.operation.name} for op in ops]


# --- decoding -------------------------------------------------------------------------------------


def _status_of(code: int, message: str) -> Status:
    known = _CODES.get(code)
    if known is None:
        # A code outside google.rpc.Code still denies; keep the number where a reader can see it.
        return Status(Code.UNKNOWN, f"(code {code}) {message}")
    return Status(known, message)


def _timedelta_of(value: Duration) -> timedelta:
    # Truncates nanoseconds toward zero: microseconds are what the rest of the code base holds.
    return value.ToTimedelta()


def _operations_of(ops: Sequence[HeaderOperation]) -> list[HeaderOperationResult]:
    out: list[HeaderOperationResult] = []
    for op in ops:
        kind = _OPERATIONS.get(int(op.operation))
        if kind is None:
            raise WireDecodeError(
                f"header operation on {op.name!r} has unknown operation {int(op.operation)}"
            )
        out.append(HeaderOperationResult(op.name, op.value, kind))
    return out


def decode_check_response(response: CheckResponse) -> CheckAnswer:
    """The :class:`CheckAnswer` a CheckResponse carries.

    :raises WireDecodeError: a referenced attribute index outside the dictionaries, or an unknown
        condition or header operation.
    """
    pre = response.precondition
    route: RouteDirectiveAnswer | None = None
    if pre.HasField("route_directive"):
        directive = pre.route_directive
        route = RouteDirectiveAnswer(
            _operations_of(directive.request_header_operations),
            _operations_of(directive.response_header_operations),
            directive.direct_response_code,
            directive.direct_response_body,
        )
    quotas: dict[str, QuotaOutcome] = {}
    for name, result in response.quotas.items():
        quota_status = (
            _status_of(int(result.status.code), str(result.status.message))
            if result.HasField("status")
            else OK
        )
        quotas[name] = QuotaOutcome(
            granted_amount=result.granted_amount,
            valid_duration=_timedelta_of(result.valid_duration),
            status=quota_status,
            referenced=decode_referenced_attributes(result.referenced_attributes),
        )
    return CheckAnswer(
        status=_status_of(int(pre.status.code), str(pre.status.message)),
        valid_duration=_timedelta_of(pre.valid_duration),
        valid_use_count=pre.valid_use_count,
        referenced=decode_referenced_attributes(pre.referenced_attributes),
        route_directive=route,
        quotas=quotas,
        details=list(pre.status.details),
    )


# --- calls ----------------------------------------------------------------------------------------


def _serialize(message: CheckRequest | ReportRequest) -> bytes:
    return message.SerializeToString()


def _call_error(method: str, target: str, err: grpc.RpcError) -> MixerCallError:
    # RpcError itself has no code(); every error a channel raises (sync or aio) is also a grpc.Call.
    status = err.code() if callable(getattr(err, "code", None)) else None
    number = status.value[0] if isinstance(status, grpc.StatusCode) else Code.UNKNOWN
    details = err.details() if callable(getattr(err, "details", None)) else None
    return MixerCallError(method, target, _CODES.get(number, Code.UNKNOWN), str(details or err))


def _answer(target: str, response: CheckResponse) -> CheckAnswer:
    try:
        return decode_check_response(response)
    except WireDecodeError as err:
        raise MixerResponseError("Check", target, Code.INTERNAL, f"malformed CheckResponse: {err}") from err


def _check_request(
    attributes: Mapping[str, AttributeValue],
    quotas: Mapping[str, QuotaRequest] | None,
    deduplication_id: str,
) -> CheckRequest:
    return encode_check_request(attributes, deduplication_id=deduplication_id, quotas=quotas)


class MixerClient:
    """An asynchronous Mixer client over one channel.

    The channel is opened on the first call, in the running event loop, and belongs to that loop:
    use one client within one loop. ``timeout`` is each call's deadline in seconds unless the call
    names its own. Use ``async with`` or call :meth:`close`.
    """

    def __init__(
        self, target: str = DEFAULT_TARGET, *, timeout: float = DEFAULT_TIMEOUT, tls: ClientTls | None = None
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.tls = tls
        self._channel: grpc.aio.Channel | None = None
        self._check: Any = None
        self._report: Any = None

    def _open(self) -> None:
        # Created here rather than in __init__: an aio channel binds to the loop it is made in.
        tls = self.tls
        channel = (
            grpc.aio.secure_channel(self.target, tls.credentials(), options=tls.channel_options())
            if tls is not None
            else grpc.aio.insecure_channel(self.target)
        )
        self._check = channel.unary_unary(
            CHECK_METHOD, request_serializer=_serialize, response_deserializer=CheckResponse.FromString
        )
        self._report = channel.unary_unary(
            REPORT_METHOD, request_serializer=_serialize, response_deserializer=ReportResponse.FromString
        )
        self._channel = channel

    async def check(
        self,
        attributes: Mapping[str, AttributeValue],
        *,
        quotas: Mapping[str, QuotaRequest] | None = None,
        deduplication_id: str = "",
        timeout: float | None = None,
    ) -> CheckAnswer:
        """Ask whether a request with ``attributes`` may proceed, and for ``quotas``.

        :raises TypeError, ValueError: an attribute value that cannot be encoded (see
            :func:`mixer.wire.encode_attributes`).
        :raises MixerCallError: the call failed.
        """
        return await self.send_check(_check_request(attributes, quotas, deduplication_id), timeout=timeout)

    async def send_check(self, request: CheckRequest, *, timeout: float | None = None) -> CheckAnswer:
        """Send a CheckRequest as it is. :raises MixerCallError: the call failed."""
        if self._channel is None:
            self._open()
        try:
            response: CheckResponse = await self._check(
                request, timeout=self.timeout if timeout is None else timeout
            )
        except grpc.RpcError as err:
            raise _call_error("Check", self.target, err) from err
        return _answer(self.target, response)

    async def report(
        self,
        bags: Sequence[Mapping[str, AttributeValue]],
        *,
        encoding: ReportEncoding = ReportEncoding.INDEPENDENT_ENCODING,
        timeout: float | None = None,
    ) -> None:
        """Report ``bags`` in one ReportRequest, one element each, sharing one word list.

        :raises TypeError, ValueError: a value that cannot be encoded, or bags DELTA_ENCODING
            cannot express.
        :raises MixerCallError: the call failed.
        """
        await self.send_report(encode_report_request(bags, encoding), timeout=timeout)

    async def send_report(self, request: ReportRequest, *, timeout: float | None = None) -> None:
        """Send a ReportRequest as it is. :raises MixerCallError: the call failed."""
        if self._channel is None:
            self._open()
        try:
            await self._report(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as err:
            raise _call_error("Report", self.target, err) from err

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class SyncMixerClient:
    """A blocking Mixer client over one channel; the same calls as :class:`MixerClient`."""

    def __init__(
        self, target: str = DEFAULT_TARGET, *, timeout: float = DEFAULT_TIMEOUT, tls: ClientTls | None = None
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._channel: Any = (
            grpc.secure_channel(target, tls.credentials(), options=tls.channel_options())
            if tls is not None
            else grpc.insecure_channel(target)
        )
        self._check: Any = self._channel.unary_unary(
            CHECK_METHOD, request_serializer=_serialize, response_deserializer=CheckResponse.FromString
        )
        self._report: Any = self._channel.unary_unary(
            REPORT_METHOD, request_serializer=_serialize, response_deserializer=ReportResponse.FromString
        )

    def check(
        self,
        attributes: Mapping[str, AttributeValue],
        *,
        quotas: Mapping[str, QuotaRequest] | None = None,
        deduplication_id: str = "",
        timeout: float | None = None,
    ) -> CheckAnswer:
        """See :meth:`MixerClient.check`."""
        return self.send_check(_check_request(attributes, quotas, deduplication_id), timeout=timeout)

    def send_check(self, request: CheckRequest, *, timeout: float | None = None) -> CheckAnswer:
        try:
            response: CheckResponse = self._check(
                request, timeout=self.timeout if timeout is None else timeout
            )
        except grpc.RpcError as err:
            raise _call_error("Check", self.target, err) from err
        return _answer(self.target, response)

    def report(
        self,
        bags: Sequence[Mapping[str, AttributeValue]],
        *,
        encoding: ReportEncoding = ReportEncoding.INDEPENDENT_ENCODING,
        timeout: float | None = None,
    ) -> None:
        """See :meth:`MixerClient.report`."""
        self.send_report(encode_report_request(bags, encoding), timeout=timeout)

    def send_report(self, request: ReportRequest, *, timeout: float | None = None) -> None:
        try:
            self._report(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as err:
            raise _call_error("Report", self.target, err) from err

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
