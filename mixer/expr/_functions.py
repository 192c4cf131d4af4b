"""Run-time implementations of operators and functions, shared by compiled code and constant folding.

Each raises :class:`OpError` (a ValueError) for a failure that depends on the values, which the compiler
turns into an EvaluationError at run time or an ExpressionTypeError when folding constants.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from mixer.attributes import IPAddress

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

#: The value of emptyStringMap(): immutable so one instance serves every evaluation.
EMPTY_STRING_MAP: Final[Mapping[str, str]] = MappingProxyType({})


class OpError(ValueError):
    pass


def _int64(value: int) -> int:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise OpError("integer overflow")
    return value


def add_int(a: int, b: int) -> int:
    return _int64(a + b)


def sub_int(a: int, b: int) -> int:
    return _int64(a - b)


def mul_int(a: int, b: int) -> int:
    return _int64(a * b)


def div_int(a: int, b: int) -> int:
    if b == 0:
        raise OpError("integer division by zero")
    # Go truncates toward zero; Python's // floors.
    q = abs(a) // abs(b)
    return _int64(q if (a < 0) == (b < 0) else -q)


def neg_int(a: int) -> int:
    return _int64(-a)


def div_float(a: float, b: float) -> float:
    if b == 0.0:
        # IEEE 754 (and Go) give an infinity or NaN; Python would raise.
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def concat(a: str, b: str) -> str:
    return a + b


def ip_key(a: IPAddress) -> IPAddress:
    """The address compared for equality: an IPv4-mapped IPv6 address equals its IPv4 form, as in Go."""
    if isinstance(a, ipaddress.IPv6Address):
        mapped = a.ipv4_mapped
        if mapped is not None:
            return mapped
    return a


def ip_equal(a: IPAddress, b: IPAddress) -> bool:
    return ip_key(a) == ip_key(b)


def map_equal(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    return dict(a) == dict(b)


def glob_match(s: str, pattern: str) -> bool:
    """Mixer's match(): a trailing ``*`` is a prefix match, a leading one a suffix match, else equality."""
    if pattern.endswith("*"):
        return s.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return s.endswith(pattern[1:])
    return s == pattern


def starts_with(s: str, prefix: str) -> bool:
    return s.startswith(prefix)


def ends_with(s: str, suffix: str) -> bool:
    return s.endswith(suffix)


def to_lower(s: str) -> str:
    return s.lower()


def size_of_string(s: str) -> int:
    # Go's len() counts UTF-8 bytes; only non-ASCII text needs the encoding step.
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def size_of_container(m: Mapping[str, str] | bytes) -> int:
    return len(m)
