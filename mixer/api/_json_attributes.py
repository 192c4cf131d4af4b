"""Attribute values from JSON, typed by an attribute manifest, for the HTTP and syslog inputs.

JSON has strings, numbers, booleans, objects and arrays; attributes have the types of
:class:`~mixer.attributes.ValueType`. Each attribute's JSON value is converted to the Python form of
the type the manifest gives its name:

=================================  ==============================================================
manifest type                      JSON value accepted
=================================  ==============================================================
STRING, EMAIL_ADDRESS, URI,        a string
DNS_NAME
INT64                              an integer (or a number with no fraction, or a decimal string)
DOUBLE                             a number (or a decimal string)
BOOL                               ``true`` / ``false``
TIMESTAMP                          an RFC 3339 string with a zone (``2024-05-06T07:08:09Z``), or a
                                   number of seconds since the Unix epoch
DURATION                           a Go duration string (``250ms``, ``1m30s``), or a number of
                                   seconds
IP_ADDRESS                         an IPv4 or IPv6 address string
STRING_MAP                         an object whose values are strings
BYTES                              a base64 string
=================================  ==============================================================

``null`` leaves the attribute out. A name the manifest does not declare is an error naming every
such name, as is any value of the wrong shape; nothing is converted partially. The decoding limits
of the gRPC codec apply (attributes per bag, characters per string, entries per map).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from mixer.api._common import ServiceLimits
from mixer.attributes import AttributeValue, IPAddress, ValueType, parse_duration, parse_ip

__all__ = ["AttributeConversionError", "attributes_from_json", "check_limits"]

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_INTEGER_TEXT: Final = re.compile(r"[+-]?[0-9]+")
#: Problems listed in one error message; the rest are counted.
_MAX_PROBLEMS: Final = 10
#: Characters of a caller's name or value quoted back in an error.
_QUOTE_LIMIT: Final = 80


class AttributeConversionError(ValueError):
    """The attributes do not convert; the message names each attribute and what is wrong with it."""


class _Bad(Exception):
    """One value that does not convert (the reason, without the attribute's name)."""


def _quote(text: str) -> str:
    return repr(text if len(text) <= _QUOTE_LIMIT else text[:_QUOTE_LIMIT] + "...")


def _string(value: object, limits: ServiceLimits) -> str:
    if not isinstance(value, str):
        raise _Bad(f"want a string, got {_json_type(value)}")
    if len(value) > limits.max_string_length:
        raise _Bad(f"string of {len(value)} characters is over the limit of {limits.max_string_length}")
    return value


def _int64(value: object, limits: ServiceLimits) -> int:
    number: int
    if isinstance(value, bool):
        raise _Bad("want an integer, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float | str) and _integral(value):
        number = int(value)
    else:
        raise _Bad(f"want an integer, got {_json_type(value)}")
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise _Bad("integer outside the int64 range")
    return number


def _integral(value: float | str) -> bool:
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer()
    return len(value) <= 20 and _INTEGER_TEXT.fullmatch(value) is not None


def _double(value: object, limits: ServiceLimits) -> float:
    if isinstance(value, bool):
        raise _Bad("want a number, got a boolean")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and len(value) <= 64:
        try:
            number = float(value)
        except ValueError:
            raise _Bad(f"want a number, got the string {_quote(value)}") from None
    else:
        raise _Bad(f"want a number, got {_json_type(value)}")
    if not math.isfinite(number):
        raise _Bad("want a finite number")
    return number


def _bool(value: object, limits: ServiceLimits) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"want true or false, got {_json_type(value)}")
    return value


def _timestamp(value: object, limits: ServiceLimits) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise _Bad("seconds since the epoch out of range") from None
    text = _string(value, limits)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _Bad(f"{_quote(text)} is not an RFC 3339 timestamp (e.g. 2024-05-06T07:08:09Z)") from None
    if parsed.tzinfo is None:
        raise _Bad(f"timestamp {_quote(text)} has no zone (add Z or +hh:mm)")
    return parsed


def _duration(value: object, limits: ServiceLimits) -> timedelta:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise _Bad("want a finite number of seconds")
        try:
            return timedelta(seconds=value)
        except OverflowError:
            raise _Bad("duration out of range") from None
    text = _string(value, limits)
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise _Bad(str(exc)) from None


def _ip(value: object, limits: ServiceLimits) -> IPAddress:
    text = _string(value, limits)
    try:
        return parse_ip(text)
    except ValueError:
        raise _Bad(f"{_quote(text)} is not an IP address") from None


def _string_map(value: object, limits: ServiceLimits) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Bad(f"want an object of strings, got {_json_type(value)}")
    if len(value) > limits.max_map_entries:
        raise _Bad(f"{len(value)} entries is over the limit of {limits.max_map_entries}")
    entries: dict[str, str] = {}
    for key, item in value.items():
        try:
            entries[_string(key, limits)] = _string(item, limits)
        except _Bad as exc:
            raise _Bad(f"key {_quote(str(key))}: {exc}") from None
    return entries


def _bytes(value: object, limits: ServiceLimits) -> bytes:
    text = _string(value, limits)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _Bad("want base64 text") from None


def _unsupported(value: object, limits: ServiceLimits) -> AttributeValue:
    raise _Bad("the manifest gives this attribute no value type")


_Convert = Callable[[object, ServiceLimits], AttributeValue]
_CONVERTERS: Final[dict[ValueType, _Convert]] = {
    ValueType.STRING: _string,
    ValueType.EMAIL_ADDRESS: _string,
    ValueType.URI: _string,
    ValueType.DNS_NAME: _string,
    ValueType.INT64: _int64,
    ValueType.DOUBLE: _double,
    ValueType.BOOL: _bool,
    ValueType.TIMESTAMP: _timestamp,
    ValueType.DURATION: _duration,
    ValueType.IP_ADDRESS: _ip,
    ValueType.STRING_MAP: _string_map,
    ValueType.BYTES: _bytes,
}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def attributes_from_json(
    data: object,
    manifest: Mapping[str, ValueType],
    limits: ServiceLimits,
    *,
    where: str = "attributes",
) -> dict[str, AttributeValue]:
    """The attribute values a JSON object holds, each converted to its manifest type.

    :param data: the parsed JSON (an object of attribute name to value).
    :param where: how error messages name the object (e.g. ``records[3]``).
    :raises AttributeConversionError: not an object, too many attributes, names the manifest does not
        declare (all of them named), or values that do not convert (each named with the reason).
    """
    if not isinstance(data, dict):
        raise AttributeConversionError(
            f"{where}: want an object of attribute name to value, got {_json_type(data)}"
        )
    if len(data) > limits.max_attributes:
        raise AttributeConversionError(
            f"{where}: {len(data)} attributes is over the limit of {limits.max_attributes}"
        )
    unknown = [name for name in data if name not in manifest]
    if unknown:
        shown = ", ".join(_quote(name) for name in sorted(unknown)[:_MAX_PROBLEMS])
        more = f" and {len(unknown) - _MAX_PROBLEMS} more" if len(unknown) > _MAX_PROBLEMS else ""
        raise AttributeConversionError(
            f"{where}: unknown attributes (not in the attribute manifest): {shown}{more}"
        )
    values: dict[str, AttributeValue] = {}
    problems: list[str] = []
    for name, raw in data.items():
        if raw is None:
            continue
        value_type = manifest[name]
        try:
            values[name] = _CONVERTERS.get(value_type, _unsupported)(raw, limits)
        except _Bad as exc:
            problems.append(f"{name} ({value_type.name}): {exc}")
    if problems:
        more = f"; and {len(problems) - _MAX_PROBLEMS} more" if len(problems) > _MAX_PROBLEMS else ""
        raise AttributeConversionError(f"{where}: " + "; ".join(problems[:_MAX_PROBLEMS]) + more)
    return values


def check_limits(values: Mapping[str, AttributeValue], limits: ServiceLimits, *, where: str) -> None:
    """Hold values built by a protocol adapter (not from JSON) to the same decoding limits.

    :raises AttributeConversionError: too many attributes, a string or map over its limit.
    """
    if len(values) > limits.max_attributes:
        raise AttributeConversionError(
            f"{where}: {len(values)} attributes is over the limit of {limits.max_attributes}"
        )
    longest = limits.max_string_length
    for name, value in values.items():
        try:
            if isinstance(value, str):
                _string(value, limits)
            elif isinstance(value, Mapping):
                entries = value if isinstance(value, dict) else dict(value)
                if not _short_string_map(entries, limits.max_map_entries, longest):
                    # The entry by entry check, for the reason.
                    _string_map(entries, limits)
        except _Bad as exc:
            raise AttributeConversionError(f"{where}: {name}: {exc}") from None


def _short_string_map(entries: dict[Any, Any], max_entries: int, longest: int) -> bool:
    # What _string_map checks, in one loop without its calls; a str subclass takes the slow path,
    # which accepts it.
    if len(entries) > max_entries:
        return False
    for key, item in entries.items():
        if type(key) is not str or type(item) is not str or len(key) > longest or len(item) > longest:
            return False
    return True
