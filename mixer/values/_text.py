"""Text and JSON forms of attribute values: Go durations, RFC 3339 timestamps, IPs, base64 bytes."""

from __future__ import annotations

import base64
import dataclasses
import enum
import ipaddress
import re
from collections.abc import Mapping, Set
from datetime import datetime, timedelta
from typing import Any, Final

_HINT: Final = " (expected e.g. 10s, 1m30s, 250ms)"
_NS_PER_UNIT: Final = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART: Final = re.compile(r"([0-9]*)(?:\.([0-9]*))?([a-z\u00b5\u03bc]+)")
_MAX_DURATION_NS: Final = 2**63 - 1
_MICROSECOND: Final = timedelta(microseconds=1)


class NanoDuration(timedelta):
    """A duration that keeps Go's nanosecond resolution, where a timedelta stops at microseconds.

    As a timedelta it is the duration truncated toward zero to the microsecond, so every timedelta
    consumer works unchanged; comparisons, hashing, formatting (:func:`format_duration`) and the
    wire encoding use the exact ``nanoseconds``. Arithmetic gives plain timedeltas.
    """

    __slots__ = ("nanoseconds",)
    nanoseconds: int

    def __new__(cls, nanoseconds: int) -> NanoDuration:
        micros = abs(nanoseconds) // 1000
        self = super().__new__(cls, microseconds=-micros if nanoseconds < 0 else micros)
        self.nanoseconds = nanoseconds
        return self

    def __reduce__(self) -> tuple[type[NanoDuration], tuple[int]]:
        return (NanoDuration, (self.nanoseconds,))

    def __repr__(self) -> str:
        return f"NanoDuration({self.nanoseconds})"

    def __hash__(self) -> int:
        # Equal to a plain timedelta only when whole microseconds, and then hashed as one.
        return timedelta.__hash__(self) if self.nanoseconds % 1000 == 0 else hash(("ns", self.nanoseconds))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, timedelta):
            return NotImplemented
        return self.nanoseconds == nanoseconds_of(other)

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, timedelta):
            return NotImplemented
        return self.nanoseconds != nanoseconds_of(other)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, timedelta):
            return NotImplemented
        return self.nanoseconds < nanoseconds_of(other)

    def __le__(self, other: object) -> bool:
        if not isinstance(other, timedelta):
            return NotImplemented
        return self.nanoseconds <= nanoseconds_of(other)

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, timedelta):
            return NotImplemented
        return self.nanoseconds > nanoseconds_of(other)

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, timedelta):
            return NotImplemented
        return self.nanoseconds >= nanoseconds_of(other)


def nano_duration(seconds: int, nanos: int) -> NanoDuration:
    """A :class:`NanoDuration` from a protobuf Duration's non-negative parts (the decoder's fast path)."""
    self = timedelta.__new__(NanoDuration, 0, seconds, nanos // 1000)
    self.nanoseconds = seconds * 1_000_000_000 + nanos
    return self


def nanoseconds_of(value: timedelta) -> int:
    """A duration in whole nanoseconds (exact for a :class:`NanoDuration`)."""
    if isinstance(value, NanoDuration):
        return value.nanoseconds
    return (value // _MICROSECOND) * 1000


def duration_from_nanoseconds(nanoseconds: int) -> timedelta:
    """A plain timedelta when the value is whole microseconds, else a :class:`NanoDuration`."""
    if nanoseconds % 1000 == 0:
        return timedelta(microseconds=nanoseconds // 1000)
    return NanoDuration(nanoseconds)


def parse_duration(text: str) -> timedelta:
    """Go's time.ParseDuration: ``300ms``, ``-1.5h``, ``2h45m``; units ns us ms s m h.

    :raises ValueError: not a Go duration.

    Sub-microsecond parts are kept (a :class:`NanoDuration`), as Go's nanosecond durations.
    """
    s = text
    negative = False
    if s[:1] in ("-", "+"):
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return timedelta(0)
    if not s:
        raise ValueError(f"invalid duration {text!r}{_HINT}")
    total_ns = 0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None or (not m.group(1) and not m.group(2)):
            raise ValueError(f"invalid duration {text!r}{_HINT}")
        whole, frac, unit = m.group(1), m.group(2) or "", m.group(3)
        scale = _NS_PER_UNIT.get(unit)
        if scale is None:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r}{_HINT}")
        total_ns += int(whole or "0") * scale
        if frac:
            total_ns += int(frac) * scale // 10 ** len(frac)
        if total_ns > _MAX_DURATION_NS:
            raise ValueError(f"invalid duration {text!r}: out of range")
        pos = m.end()
    if negative:
        total_ns = -total_ns
    return duration_from_nanoseconds(total_ns)


def format_duration(value: timedelta) -> str:
    """Go's ``time.Duration.String()``: ``13.601485ms``, ``1.5µs``, ``250ns``, ``1m30s``, ``1h0m0s``."""
    nanos = nanoseconds_of(value)
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos == 0:
        return "0s"
    if nanos < 1_000:
        return f"{sign}{nanos}ns"
    if nanos < 1_000_000:
        return f"{sign}{_decimal(nanos, 1_000, 3)}µs"
    if nanos < 1_000_000_000:
        return f"{sign}{_decimal(nanos, 1_000_000, 6)}ms"
    seconds, fraction = divmod(nanos, 1_000_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    head = f"{hours}h{minutes}m" if hours else (f"{minutes}m" if minutes else "")
    return f"{sign}{head}{_decimal(seconds * 1_000_000_000 + fraction, 1_000_000_000, 9)}s"


def _decimal(amount: int, unit: int, places: int) -> str:
    whole, fraction = divmod(amount, unit)
    if not fraction:
        return str(whole)
    return f"{whole}.{fraction:0{places}d}".rstrip("0")


def to_jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        # Before int: IntEnum members are ints but read better by name.
        return value.value if isinstance(value.value, str) else value.name
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, Set):
        return sorted(to_jsonable(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return str(value)
