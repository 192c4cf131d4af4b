"""What the Envoy v3 servicers share: parsing, addresses, header options and limits."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.wrappers_pb2 import BoolValue

from mixer.api._common import ServiceLimits
from mixer.api._envelope import RequestError
from mixer.attributes import AttributeValue, IPAddress, parse_ip
from mixer.decision import HeaderOperationKind, HeaderOperationResult
from mixer.proto.envoy.config.core.v3.address_pb2 import Address
from mixer.proto.envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from mixer.status import Code

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


class EnvoyRequestError(RequestError):
    """A request that cannot be used: malformed, or over a decoding limit. Answered INVALID_ARGUMENT."""


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
            ip = parse_ip(socket.address.strip("[]"))
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
