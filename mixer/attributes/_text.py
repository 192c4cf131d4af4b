"""Text and JSON forms of attribute values: Go durations, RFC 3339 timestamps, IPs, base64 bytes."""

from __future__ import annotations

import base64
import dataclasses
import enum
import ipaddress
import re
from collections.abc import Mapping, Set
from datetime import datetime, timedelta
from typing import Any

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> timedelta:
    """Go's duration syntax (``300ms``, ``1h30m``, ``-2.5s``); bare numbers are seconds."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    if body[:1] in ("+", "-"):
        body = body[1:]
    if re.fullmatch(r"\d+(\.\d*)?", body):
        return timedelta(seconds=sign * float(body))
    pos = 0
    seconds = 0.0
    for m in _DURATION_PART.finditer(body):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(body) or not body:
        raise ValueError(f"invalid duration {text!r} (want Go syntax such as 1.5s, 300ms or 1h30m)")
    return timedelta(seconds=sign * seconds)


def format_duration(value: timedelta) -> str:
    """Go's duration text (``7.25ms``, ``1m30s``), the form Istio tools print."""
    total_us = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    if total_us == 0:
        return "0s"
    sign = "-" if total_us < 0 else ""
    total_us = abs(total_us)
    if total_us < 1000:
        return f"{sign}{total_us}µs"
    if total_us < 1_000_000:
        return f"{sign}{_trim(total_us / 1000)}ms"
    hours, rest = divmod(total_us, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    text = f"{hours}h" if hours else ""
    if hours or minutes:
        text += f"{minutes}m"
    return f"{sign}{text}{_trim(rest / 1_000_000)}s"


def _trim(number: float) -> str:
    return f"{number:.6f}".rstrip("0").rstrip(".")


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
