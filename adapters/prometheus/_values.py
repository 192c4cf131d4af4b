"""Metric values and dimension values as Prometheus numbers and label text, spelled the way
Mixer's Go adapter spelled them (so that series keep their identity across the move)."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal

from mixer.attributes import format_duration


def as_number(value: object) -> float | None:
    """The float a metric value stands for: durations in seconds, numeric strings parsed; else None."""
    cls = value.__class__
    if cls is int or cls is float:
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        # Mixer accepted numeric strings too.
        try:
            return float(value)
        except ValueError:
            return None
    return None


def label_value(value: object) -> str:
    """A dimension value as a label value, formatted the way Mixer's Go code printed it."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return "&".join(f"{k}={label_value(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
    return str(value)


def go_float(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'g', -1, 64)``: ``1``, ``0.005``, ``2.5``, ``1e+08``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)  # finite
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + exponent  # digits before the decimal point
    exp10 = point - 1
    prefix = "-" if sign else ""
    # Go switches to exponent form below 1e-4 and from 1e+06 when printing the shortest form.
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'+' if exp10 >= 0 else '-'}{abs(exp10):02d}"
    if exponent >= 0:
        return prefix + digits + "0" * exponent
    if point > 0:
        return f"{prefix}{digits[:point]}.{digits[point:]}"
    return f"{prefix}0.{'0' * -point}{digits}"
