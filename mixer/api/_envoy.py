"""What the Envoy v3 servicers share: addresses, header options, limits and the unary call frame."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from time import perf_counter
from typing import TYPE_CHECKING, Any, ClassVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.wrappers_pb2 import BoolValue

from mixer import logcontext
from mixer.api._common import Admission, ServiceLimits
from mixer.api._status import DEADLINE_EXCEEDED, INTERNAL, OVERLOADED
from mixer.attributes import AttributeValue, IPAddress
from mixer.decision import HeaderOperationKind, HeaderOperationResult
from mixer.proto.envoy.config.core.v3.address_pb2 import Address
from mixer.proto.envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from mixer.status import Code

if TYPE_CHECKING:
    from mixer.runtime import Runtime
    from mixer.server import MethodMetrics, RuntimeHolder

#: Runtime verdicts that say the server could not decide rather than that the request is refused.
FAILURE_CODES: frozenset[Code] = frozenset(
    {
        Code.CANCELLED,
        Code.UNKNOWN,
        Code.DEADLINE_EXCEEDED,
        Code.UNIMPLEMENTED,
        Code.INTERNAL,
        Code.UNAVAILABLE,
        Code.DATA_LOSS,
    }
)


class EnvoyRequestError(ValueError):
    """A request that cannot be used: malformed, or over a decoding limit. Answered INVALID_ARGUMENT."""

    code: ClassVar[Code] = Code.INVALID_ARGUMENT


class CallFailure(Exception):
    """Ends a call with a gRPC status instead of an answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.status_code = code
        self.message = message


def parse(message_type: type[Message], data: bytes) -> Any:
    """``data`` parsed as ``message_type``.

    :raises EnvoyRequestError: the bytes are not such a message.
    """
    message = message_type()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise EnvoyRequestError(f"malformed {message_type.DESCRIPTOR.full_name}: {exc}") from None
    return message


def socket_endpoint(address: Address) -> tuple[IPAddress | None, int | None]:
    """The IP and port of a socket address; None for what is absent (pipes, internal addresses,
    names that are not IP literals, named ports)."""
    if address.WhichOneof("address") != "socket_address":
        return None, None
    socket = address.socket_address
    ip: IPAddress | None = None
    if socket.address:
        try:
            ip = ipaddress.ip_address(socket.address.strip("[]"))
        except ValueError:
            ip = None
    port = socket.port_value if socket.WhichOneof("port_specifier") == "port_value" else None
    return ip, port


def set_endpoint(attrs: dict[str, AttributeValue], side: str, address: Address) -> None:
    """``{side}.ip`` and ``{side}.port`` from ``address``, each only when known."""
    ip, port = socket_endpoint(address)
    if ip is not None:
        attrs[f"{side}.ip"] = ip
    if port is not None:
        attrs[f"{side}.port"] = port


def utc_datetime(timestamp: Timestamp) -> datetime:
    """The instant of ``timestamp``, to the microsecond.

    :raises EnvoyRequestError: the instant is outside the years 1 to 9999 that datetime holds.
    """
    try:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
            seconds=timestamp.seconds, microseconds=timestamp.nanos // 1000
        )
    except OverflowError:
        raise EnvoyRequestError(f"timestamp of {timestamp.seconds} seconds is out of range") from None


def header_options(operations: list[HeaderOperationResult]) -> list[HeaderValueOption]:
    """Envoy header options for REPLACE and APPEND operations, names lower-cased as HTTP/2 needs.

    In ext_authz answers an option without ``append`` replaces the header, so only APPEND sets it.
    """
    options: list[HeaderValueOption] = []
    for op in operations:
        if op.operation is HeaderOperationKind.REMOVE:
            continue
        option = HeaderValueOption(header=HeaderValue(key=op.name.lower(), value=op.value))
        if op.operation is HeaderOperationKind.APPEND:
            option.append.CopyFrom(BoolValue(value=True))
        options.append(option)
    return options


def check_limits(attrs: Mapping[str, AttributeValue], limits: ServiceLimits, what: str) -> None:
    """Apply the server's decoding limits to attributes built from an Envoy message.

    :raises EnvoyRequestError: too many attributes, a string or map value too long.
    """
    if len(attrs) > limits.max_attributes:
        raise EnvoyRequestError(
            f"{what} has {len(attrs)} attributes: exceeds max_attributes ({limits.max_attributes})"
        )
    longest = limits.max_string_length
    for name, value in attrs.items():
        if isinstance(value, str):
            if len(value) > longest:
                raise EnvoyRequestError(
                    f"{what}: {name} of {len(value)} characters exceeds max_string_length ({longest})"
                )
        elif isinstance(value, Mapping):
            if len(value) > limits.max_map_entries:
                raise EnvoyRequestError(
                    f"{what}: {name} has {len(value)} entries: "
                    f"exceeds max_map_entries ({limits.max_map_entries})"
                )
            for key, item in value.items():
                if len(key) > longest or len(item) > longest:
                    raise EnvoyRequestError(
                        f"{what}: an entry of {name} exceeds max_string_length ({longest})"
                    )


def expired(context: Any) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def time_budget(limits: ServiceLimits, context: Any) -> float:
    """Seconds this call may still take: the Check budget, or less when the caller's deadline is
    nearer. Not positive when the caller has already given up."""
    budget = limits.check_timeout
    remaining = context.time_remaining()
    if remaining is not None and remaining < budget:
        budget = remaining
    return float(budget)


class UnaryCalls:
    """Admission, the runtime lease, metrics and status mapping around one servicer's unary calls.

    ``work(runtime, context)`` returns the serialized answer or raises :class:`EnvoyRequestError`
    (INVALID_ARGUMENT, counted as a decode error) or :class:`CallFailure` (that status).
    """

    __slots__ = ("_admission", "_holder", "_log", "in_flight")

    def __init__(self, holder: RuntimeHolder, admission: Admission, logger: logging.Logger) -> None:
        self._holder = holder
        self._admission = admission
        self._log = logger
        self.in_flight = 0

    async def run(
        self,
        metrics: MethodMetrics,
        name: str,
        context: Any,
        work: Callable[[Runtime, Any], Awaitable[bytes]],
    ) -> bytes:
        started = perf_counter()
        admission = self._admission
        if admission.full:
            metrics.observe(OVERLOADED[0].name, perf_counter() - started)
            await context.abort(*OVERLOADED)
        admission.in_flight += 1
        self.in_flight += 1
        holder = self._holder
        runtime = holder.acquire()
        # Log lines of this call, the envelope's own included, name the config it ran on.
        generation = logcontext.generation.set(runtime.generation)
        code = "OK"
        failure: tuple[grpc.StatusCode, str] | None = None
        try:
            return await work(runtime, context)
        except EnvoyRequestError as exc:
            metrics.decode_errors.inc()
            failure = (grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except CallFailure as exc:
            failure = (exc.status_code, exc.message)
        except asyncio.CancelledError:
            # grpc cancels the handler when the caller cancels or its deadline passes.
            code = "DEADLINE_EXCEEDED" if expired(context) else "CANCELLED"
            raise
        except Exception:
            self._log.exception("%s failed unexpectedly", name)
            failure = INTERNAL
        finally:
            logcontext.generation.reset(generation)
            holder.release(runtime)
            admission.in_flight -= 1
            self.in_flight -= 1
            if failure is not None:
                code = failure[0].name
            metrics.observe(code, perf_counter() - started)
        assert failure is not None
        await context.abort(*failure)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover


def deadline_failure() -> CallFailure:
    return CallFailure(*DEADLINE_EXCEEDED)
