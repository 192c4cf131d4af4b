"""Attribute value types and the Python representation of each."""

from __future__ import annotations

import enum
import ipaddress
import socket
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TypeAlias

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Every Python value an attribute may hold. STRING, EMAIL_ADDRESS, URI and DNS_NAME are ``str``;
#: TIMESTAMP is a timezone-aware ``datetime``; STRING_MAP any ``Mapping[str, str]``.
AttributeValue: TypeAlias = (
    str | int | float | bool | datetime | timedelta | IPAddress | Mapping[str, str] | bytes
)


class ValueType(enum.IntEnum):
    """Attribute value types; numbers follow istio.policy.v1beta1.ValueType (BYTES is ours)."""

    VALUE_TYPE_UNSPECIFIED = 0
    STRING = 1
    INT64 = 2
    DOUBLE = 3
    BOOL = 4
    TIMESTAMP = 5
    IP_ADDRESS = 6
    EMAIL_ADDRESS = 7
    URI = 8
    DNS_NAME = 9
    DURATION = 10
    STRING_MAP = 11
    BYTES = 12

    @property
    def is_string_like(self) -> bool:
        return self in _STRING_LIKE


def parse_ip(text: str) -> IPAddress:
    """``ipaddress.ip_address(text)`` for a string: the same address, or the same ValueError.

    The C parser (``inet_pton``) reads the usual spellings in a third of the time the pure-Python
    one takes; whatever it refuses (a scope id, a stray space, a leading zero) is left to
    ``ipaddress``, which gives the answer or the error.
    """
    try:
        if ":" in text:
            return ipaddress.IPv6Address(_inet_pton(_AF_INET6, text))
        return ipaddress.IPv4Address(_inet_pton(_AF_INET, text))
    except (OSError, ValueError):
        return ipaddress.ip_address(text)


_inet_pton = socket.inet_pton
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6

_STRING_LIKE = frozenset({ValueType.STRING, ValueType.EMAIL_ADDRESS, ValueType.URI, ValueType.DNS_NAME})


def infer_value_type(value: object) -> ValueType:
    """The value type a Python value stands for, as used when no manifest names the attribute.

    :raises TypeError: the value is of no attribute type.
    """
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return ValueType.BOOL
    if isinstance(value, int):
        return ValueType.INT64
    if isinstance(value, float):
        return ValueType.DOUBLE
    if isinstance(value, str):
        return ValueType.STRING
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError("timestamp attributes must be timezone-aware datetimes")
        return ValueType.TIMESTAMP
    if isinstance(value, timedelta):
        return ValueType.DURATION
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ValueType.IP_ADDRESS
    if isinstance(value, bytes):
        return ValueType.BYTES
    if isinstance(value, Mapping):
        return ValueType.STRING_MAP
    raise TypeError(f"{type(value).__name__} is not an attribute value type")


def conforms(value: object, value_type: ValueType) -> bool:
    """Whether ``value`` is a valid Python representation of ``value_type``."""
    if value_type.is_string_like:
        return isinstance(value, str)
    try:
        return infer_value_type(value) is value_type
    except TypeError:
        return False
