"""mixc-style attribute flags: ``-s name=value``, ``-i``, ``-d``, ``-b``, ``-t``, ``-u``, ``--ip``, ``-m``."""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from mixer.attributes import ISTIO_MANIFEST, AttributeValue, ValueType, conforms, parse_duration


class AttributeFlagError(ValueError):
    pass


def _split(flag: str, item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise AttributeFlagError(f"{flag} {item!r}: want name=value")
    return name, value


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise AttributeFlagError(f"invalid bool {text!r}")


def _parse_timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as err:
        raise AttributeFlagError(f"invalid RFC 3339 timestamp {text!r}") from err
    if value.tzinfo is None:
        raise AttributeFlagError(f"timestamp {text!r} needs a zone (Z or +hh:mm)")
    return value


def _parse_map(text: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for part in filter(None, text.split(";")):
        # HTTP/2 pseudo-headers (":authority:example.com") keep their leading colon in the key.
        lead = ":" if part.startswith(":") else ""
        key, sep, value = part[len(lead) :].partition(":")
        key = lead + key
        if not sep:
            raise AttributeFlagError(f"string map entry {part!r}: want key:value")
        entries[key] = value
    return entries


def _parse_duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise AttributeFlagError(str(err)) from err


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError as err:
        raise AttributeFlagError(f"invalid IP address {text!r}") from err


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError as err:
        raise AttributeFlagError(f"invalid int64 {text!r}") from err


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError as err:
        raise AttributeFlagError(f"invalid double {text!r}") from err


_FLAGS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("-s", "--string"), "strings", "string attribute name=value (repeatable)"),
    (("-i", "--int64"), "int64s", "int64 attribute name=value"),
    (("-d", "--double"), "doubles", "double attribute name=value"),
    (("-b", "--bool"), "bools", "bool attribute name=true|false"),
    (("-t", "--timestamp"), "timestamps", "timestamp attribute name=RFC3339"),
    (("-u", "--duration"), "durations", "duration attribute name=1.5s"),
    (("--ip",), "ips", "IP address attribute name=10.0.0.1"),
    (("-m", "--stringmap"), "stringmaps", "string map attribute name=k1:v1;k2:v2"),
)

_CONVERTERS: dict[str, Callable[[str], AttributeValue]] = {
    "strings": str,
    "int64s": _parse_int,
    "doubles": _parse_float,
    "bools": _parse_bool,
    "timestamps": _parse_timestamp,
    "durations": _parse_duration,
    "ips": _parse_ip,
    "stringmaps": _parse_map,
}


def add_attribute_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("attributes")
    for flags, dest, help_text in _FLAGS:
        group.add_argument(
            *flags, dest=dest, action="append", default=[], metavar="NAME=VALUE", help=help_text
        )


def attributes_from_args(
    args: argparse.Namespace, manifest: Mapping[str, ValueType] = ISTIO_MANIFEST
) -> dict[str, AttributeValue]:
    """The attributes the flags give, typed against ``manifest`` (Istio's vocabulary): the one
    parser of ``eval``, ``check`` and ``report``, so that all three take and refuse the same flags.

    A string for an attribute the manifest types IP_ADDRESS becomes an address; a value of another
    type than the manifest declares is refused. Names outside the manifest keep their flag's type.

    :raises AttributeFlagError: a flag's value does not parse as its type, or is not of the type
        the manifest declares for its name.
    """
    values: dict[str, AttributeValue] = {}
    for flags, dest, _ in _FLAGS:
        convert = _CONVERTERS[dest]
        for item in getattr(args, dest):
            name, text = _split(flags[0], item)
            values[name] = _typed(name, convert(text), manifest.get(name))
    return values


def _typed(name: str, value: AttributeValue, declared: ValueType | None) -> AttributeValue:
    if declared is None:
        return value
    if declared is ValueType.IP_ADDRESS:
        if isinstance(value, str):
            try:
                return ipaddress.ip_address(value)
            except ValueError:
                raise AttributeFlagError(f"attribute {name!r}: {value!r} is not an IP address") from None
        if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return value
    elif conforms(value, declared):
        return value
    raise AttributeFlagError(f"attribute {name!r} is declared {declared.name}, got {type(value).__name__}")
