"""Text forms of the typed values: parsing string literals into DURATION, TIMESTAMP, IP_ADDRESS and the
validated string types, with the rules Mixer used (Go's time, net and net/mail packages)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Final
from urllib.parse import urlsplit

from mixer.attributes import AttributeValue, IPAddress, ValueType
from mixer.attributes import parse_duration as _parse_go_duration


class ConversionError(ValueError):
    """A text is not a valid form of the type asked for."""


def parse_duration(text: str) -> timedelta:
    try:
        return _parse_go_duration(text)
    except ValueError as exc:
        raise ConversionError(str(exc)) from None


_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:(Z)|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_timestamp(text: str) -> datetime:
    """RFC 3339 as Go's time.RFC3339 layout reads it; fractions past microseconds are truncated."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ConversionError(f"invalid timestamp {text!r}: expected RFC 3339 like 2015-01-02T15:04:05Z")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac = (m.group(7) or "").ljust(6, "0")[:6]
    if m.group(8):
        tz: timezone = UTC
    else:
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        if int(m.group(10)) > 23 or int(m.group(11)) > 59:
            raise ConversionError(f"invalid timestamp {text!r}: bad zone offset")
        tz = timezone(-offset if m.group(9) == "-" else offset)
    try:
        return datetime(year, month, day, hour, minute, second, int(frac), tzinfo=tz)
    except ValueError as exc:
        raise ConversionError(f"invalid timestamp {text!r}: {exc}") from None


def parse_ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ConversionError(f"invalid IP address {text!r}") from None


_DNS_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)


def parse_dns_name(text: str) -> str:
    """A DNS name: dot-separated labels of letters, digits and inner hyphens; one trailing dot allowed."""
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in name.split(".")):
        raise ConversionError(f"invalid DNS name {text!r}")
    return text


_EMAIL_LOCAL: Final = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*", re.ASCII
)


def parse_email(text: str) -> str:
    """A bare address ``local@domain`` (no display name), the domain a valid DNS name."""
    local, at, domain = text.rpartition("@")
    if not at or not _EMAIL_LOCAL.fullmatch(local) or len(local) > 64:
        raise ConversionError(f"invalid email address {text!r}")
    try:
        parse_dns_name(domain)
    except ConversionError:
        raise ConversionError(f"invalid email address {text!r}: bad domain") from None
    return text


_URI_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*", re.ASCII)


def parse_uri(text: str) -> str:
    """A URI Go's url.Parse accepts: non-empty, no spaces or control characters, a well-formed scheme."""
    if not text or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ConversionError(f"invalid URI {text!r}")
    head, colon, _ = text.partition(":")
    if colon and "/" not in head and not _URI_SCHEME.fullmatch(head):
        raise ConversionError(f"invalid URI {text!r}: bad scheme")
    try:
        urlsplit(text)
    except ValueError as exc:
        raise ConversionError(f"invalid URI {text!r}: {exc}") from None
    return text


#: Target types a string literal converts to at compile time, with the parser for each.
CONVERTERS: Final[dict[ValueType, Callable[[str], AttributeValue]]] = {
    ValueType.DURATION: parse_duration,
    ValueType.TIMESTAMP: parse_timestamp,
    ValueType.IP_ADDRESS: parse_ip,
    ValueType.EMAIL_ADDRESS: parse_email,
    ValueType.URI: parse_uri,
    ValueType.DNS_NAME: parse_dns_name,
}

ORDERED: Final = frozenset(
    {
        ValueType.INT64,
        ValueType.DOUBLE,
        ValueType.TIMESTAMP,
        ValueType.DURATION,
        ValueType.STRING,
        ValueType.EMAIL_ADDRESS,
        ValueType.URI,
        ValueType.DNS_NAME,
    }
)
NUMERIC: Final = frozenset({ValueType.INT64, ValueType.DOUBLE})
