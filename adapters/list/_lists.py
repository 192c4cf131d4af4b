"""Lookup structures for each ``entry_type``, built once per fetched list."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Iterator
from typing import Protocol

from mixer.expr import Regex, RegexError, compile_re2


class EntryType(enum.Enum):
    STRINGS = "STRINGS"
    CASE_INSENSITIVE_STRINGS = "CASE_INSENSITIVE_STRINGS"
    IP_ADDRESSES = "IP_ADDRESSES"
    REGEX = "REGEX"


class EntryList(Protocol):
    def contains(self, value: object) -> bool:
        """Whether ``value`` is in the list.

        :raises ValueError: ``value`` cannot be an entry of this type (e.g. not an IP address).
        """
        ...

    def __len__(self) -> int: ...


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class StringList:
    def __init__(self, entries: Iterable[str]) -> None:
        self._entries = frozenset(entries)

    def contains(self, value: object) -> bool:
        return _text(value) in self._entries

    def __len__(self) -> int:
        return len(self._entries)


class CaseInsensitiveStringList:
    def __init__(self, entries: Iterable[str]) -> None:
        self._entries = frozenset(entry.casefold() for entry in entries)

    def contains(self, value: object) -> bool:
        return _text(value).casefold() in self._entries

    def __len__(self) -> int:
        return len(self._entries)


class RegexList:
    """Unanchored searches, as Go's ``regexp.MatchString`` in Mixer's list adapter: RE2, linear time."""

    def __init__(self, entries: Iterable[str]) -> None:
        patterns: list[Regex] = []
        for entry in entries:
            try:
                patterns.append(compile_re2(entry))
            except RegexError as exc:
                raise ValueError(f"invalid regular expression {entry!r}: {exc}") from None
        self._count = len(patterns)
        self._patterns = patterns
        self._combined: Regex | None = None
        # One alternation scans the value once instead of once per entry. RE2 scopes inline flags to
        # their group and has no backreferences to renumber, so only a budget overrun stops it.
        if len(patterns) > 1:
            try:
                self._combined = compile_re2("|".join(f"(?:{p.pattern})" for p in patterns))
            except RegexError:
                self._combined = None

    def contains(self, value: object) -> bool:
        text = _text(value)
        if self._combined is not None:
            return self._combined.search(text)
        return any(p.search(text) for p in self._patterns)

    def __len__(self) -> int:
        return self._count


class IPList:
    """Single addresses and CIDR ranges; a lookup costs one set probe per distinct prefix length."""

    def __init__(self, entries: Iterable[str]) -> None:
        v4: dict[int, set[int]] = {}
        v6: dict[int, set[int]] = {}
        count = 0
        for entry in entries:
            try:
                net = ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(f"invalid IP address or CIDR range {entry!r}: {exc}") from None
            table = v4 if net.version == 4 else v6
            table.setdefault(net.prefixlen, set()).add(int(net.network_address))
            count += 1
        self._count = count
        self._v4 = _by_longest_prefix(v4, 32)
        self._v6 = _by_longest_prefix(v6, 128)

    def contains(self, value: object) -> bool:
        address = _address(value)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        table = self._v4 if address.version == 4 else self._v6
        number = int(address)
        return any(number & mask in networks for mask, networks in table)

    def __len__(self) -> int:
        return self._count


def _by_longest_prefix(table: dict[int, set[int]], bits: int) -> tuple[tuple[int, frozenset[int]], ...]:
    full = (1 << bits) - 1
    return tuple(
        (full ^ ((1 << (bits - prefix)) - 1), frozenset(table[prefix]))
        for prefix in sorted(table, reverse=True)
    )


def _address(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    try:
        if isinstance(value, bytes) and len(value) in (4, 16):
            return ipaddress.ip_address(value)
        return ipaddress.ip_address(_text(value).strip())
    except ValueError:
        raise ValueError(f"{_text(value)} is not a valid IP address") from None


def build_list(entry_type: EntryType, entries: Iterable[str]) -> EntryList:
    """The lookup structure for ``entries``.

    :raises ValueError: an entry is invalid for the type (bad regex, bad IP or CIDR), named.
    """
    if entry_type is EntryType.STRINGS:
        return StringList(entries)
    if entry_type is EntryType.CASE_INSENSITIVE_STRINGS:
        return CaseInsensitiveStringList(entries)
    if entry_type is EntryType.IP_ADDRESSES:
        return IPList(entries)
    return RegexList(entries)


def parse_entries(text: str) -> Iterator[str]:
    """One entry per line; blank lines and lines starting with ``#`` are skipped."""
    for line in text.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            yield entry
