"""Decoding istio.mixer.v1 CompressedAttributes into attribute values: the pure-Python reference.

This is the server's hot path, so the code trades some elegance for speed: protobuf parsing is
left to the C runtime, every index is resolved with one dict look-up against a table that merges
the global dictionary with the message's words (negative keys), and the checks that cost per
attribute are folded into the look-ups themselves: an index outside either list is a missing
key, and only then does a slow pass work out which index was wrong and say so. The compiled
decoder (_cdecode.pyx) builds its values with the helpers here and leaves every refusal to them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from mixer.proto.istio.mixer.v1.attributes_pb2 import CompressedAttributes
from mixer.values import (
    ISTIO_MANIFEST,
    AttributeManifest,
    AttributeValue,
    IPAddress,
    ValueType,
    duration_from_nanoseconds,
    nano_duration,
)
from mixer.wire._dictionary import GLOBAL_WORD_COUNT, GLOBAL_WORDS
from mixer.wire._errors import WireDecodeError
from mixer.wire._maps import FrozenStringMap

#: Istio 1.4 proxies send 30 to 60 attributes; a thousand leaves room for custom ones.
DEFAULT_MAX_ATTRIBUTES: Final = 1000
#: In characters. Envoy caps all request headers together at 60 KiB by default; JWT claims and
#: other values built by filters can be larger, hence the margin.
DEFAULT_MAX_STRING_LENGTH: Final = 256 * 1024
#: Entries of one STRING_MAP (Envoy allows 100 request headers by default).
DEFAULT_MAX_MAP_ENTRIES: Final = 1000
#: Bags in one Report (records in one HTTP report). Istio 1.4 proxies batch about a thousand.
DEFAULT_MAX_REPORT_RECORDS: Final = 10_000

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NANOS_PER_SECOND: Final = 1_000_000_000
#: google.protobuf.Duration's documented range, +-10,000 years.
_MAX_DURATION_SECONDS: Final = 315_576_000_000
_IP = ValueType.IP_ADDRESS

#: Index -> word for the global dictionary alone; copied and extended per word list.
_GLOBAL_LOOKUP: Final[dict[int, str]] = dict(enumerate(GLOBAL_WORDS))


@dataclass(frozen=True, slots=True)
class _Limits:
    max_attributes: int
    max_string_length: int
    max_map_entries: int


# --- index tables -------------------------------------------------------------------------------


def _lookup_table(words: Sequence[str], limits: _Limits) -> dict[int, str]:
    """Index -> word for one word list: the global dictionary plus ``words`` at -1, -2, ..."""
    if not words:
        # Shared, never mutated: nothing downstream writes to a table.
        return _GLOBAL_LOOKUP
    # Every string value, map key and map value is one of these words, so checking the words once
    # bounds every string in the message without a per-value check.
    longest = max(map(len, words))
    if longest > limits.max_string_length:
        raise WireDecodeError(
            f"message word of {longest} characters exceeds max_string_length ({limits.max_string_length})"
        )
    table = _GLOBAL_LOOKUP.copy()
    table.update(zip(range(-1, -len(words) - 1, -1), words, strict=True))
    return table


def _describe_index(what: str, index: int, table: Mapping[int, str]) -> str | None:
    """Why ``index`` does not resolve, or None when it does."""
    if index in table:
        return None
    if index < 0:
        return f"{what} index {index} out of range: message has {len(table) - GLOBAL_WORD_COUNT} words"
    return f"{what} index {index} out of range: global dictionary has {GLOBAL_WORD_COUNT} words"


def _typed_maps(msg: CompressedAttributes) -> tuple[Mapping[int, object], ...]:
    """The message's maps from name index to value, in the order the decoder goes through them."""
    return (
        msg.strings,
        msg.int64s,
        msg.doubles,
        msg.bools,
        msg.timestamps,
        msg.durations,
        msg.bytes,
        msg.string_maps,
    )


def _bad_index(msg: CompressedAttributes, table: Mapping[int, str]) -> WireDecodeError:
    """The error for the first index of ``msg`` that ``table`` lacks (the slow path)."""
    for typed in _typed_maps(msg):
        for index in typed:
            problem = _describe_index("attribute name", index, table)
            if problem is not None:
                return WireDecodeError(problem)
    for index, value_index in msg.strings.items():
        problem = _describe_index(f"string value of attribute {table[index]!r}", value_index, table)
        if problem is not None:
            return WireDecodeError(problem)
    for index, string_map in msg.string_maps.items():
        name = table[index]
        for key, value in string_map.entries.items():
            problem = _describe_index(f"string map key of attribute {name!r}", key, table) or (
                _describe_index(f"string map value of attribute {name!r}", value, table)
            )
            if problem is not None:
                return WireDecodeError(problem)
    return WireDecodeError("malformed attributes: unresolvable index")


def _duplicate_name(msg: CompressedAttributes, table: Mapping[int, str]) -> WireDecodeError:
    seen: set[str] = set()
    for typed in _typed_maps(msg):
        for index in typed:
            name = table[index]
            if name in seen:
                return WireDecodeError(f"attribute {name!r} appears more than once in one message")
            seen.add(name)
    return WireDecodeError("attribute names repeat within one message")


# --- manifests ----------------------------------------------------------------------------------


class _IPNamesOf:
    """``name in self`` is whether a mutable manifest types ``name`` as IP_ADDRESS right now."""

    __slots__ = ("_manifest",)

    def __init__(self, manifest: Mapping[str, ValueType]) -> None:
        self._manifest = manifest

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._manifest.get(name) is _IP


# Manifest objects are immutable, so their IP names are worked out once. The manifest is kept in
# the value so that its id cannot be reused by another object while the entry exists.
_ip_names_cache: dict[int, tuple[AttributeManifest, frozenset[str]]] = {}
_IP_NAMES_CACHE_SIZE: Final = 32


def _ip_names(manifest: Mapping[str, ValueType]) -> Container[str]:
    if not isinstance(manifest, AttributeManifest):
        return _IPNamesOf(manifest)
    cached = _ip_names_cache.get(id(manifest))
    if cached is not None and cached[0] is manifest:
        return cached[1]
    names = frozenset(name for name, value_type in manifest.items() if value_type is _IP)
    if len(_ip_names_cache) >= _IP_NAMES_CACHE_SIZE:
        _ip_names_cache.clear()
    _ip_names_cache[id(manifest)] = (manifest, names)
    return names


_ISTIO_IP_NAMES: Final = _ip_names(ISTIO_MANIFEST)


# --- values that need more than a look-up -------------------------------------------------------


def _bad_timestamp(name: str, seconds: int, nanos: int) -> WireDecodeError:
    return WireDecodeError(
        f"timestamp attribute {name!r} ({seconds}s) has nanos {nanos} outside [0, 999999999]"
    )


def _timestamp_out_of_range(msg: CompressedAttributes, table: Mapping[int, str]) -> WireDecodeError:
    for k, ts in msg.timestamps.items():
        try:
            _EPOCH + timedelta(0, ts.seconds)
        except OverflowError:
            if k not in table:
                # The value is computed before its name is looked up: report the name first.
                return _bad_index(msg, table)
            return WireDecodeError(
                f"timestamp attribute {table[k]!r} ({ts.seconds}s) is outside years 1 to 9999"
            )
    return WireDecodeError("timestamp outside years 1 to 9999")


def _negative_or_bad_duration(name: str, seconds: int, nanos: int) -> timedelta:
    """The slow path of a DURATION: negative, or malformed."""
    if not -_MAX_DURATION_SECONDS <= seconds <= _MAX_DURATION_SECONDS:
        raise WireDecodeError(f"duration attribute {name!r} ({seconds}s) is outside +-10000 years")
    if not -_NANOS_PER_SECOND < nanos < _NANOS_PER_SECOND:
        raise WireDecodeError(f"duration attribute {name!r} has nanos {nanos} outside +-999999999")
    if (seconds < 0 < nanos) or (nanos < 0 < seconds):
        raise WireDecodeError(f"duration attribute {name!r} has seconds and nanos of different signs")
    return duration_from_nanoseconds(seconds * _NANOS_PER_SECOND + nanos)


#: Packed address -> address object. Proxies send the same few pod addresses over and over, and
#: the objects are immutable, so sharing them is safe; bounded so that a stream of distinct
#: addresses cannot grow it without limit.
_ip_cache: dict[bytes, IPAddress] = {}
_IP_CACHE_SIZE: Final = 4096


def _ip_address(name: str, raw: bytes) -> IPAddress:
    address: IPAddress
    if len(raw) == 4:
        address = ipaddress.IPv4Address(raw)
    elif len(raw) == 16:
        address = ipaddress.IPv6Address(raw)
    else:
        raise WireDecodeError(f"IP address attribute {name!r} has {len(raw)} bytes: expected 4 or 16")
    if len(_ip_cache) >= _IP_CACHE_SIZE:
        _ip_cache.clear()
    _ip_cache[raw] = address
    return address


def _bytes_too_long(name: str, raw: bytes, limits: _Limits) -> WireDecodeError:
    return WireDecodeError(
        f"bytes attribute {name!r} of {len(raw)} bytes exceeds max_string_length ({limits.max_string_length})"
    )


def _map_too_large(name: str, entries: int, limit: int) -> WireDecodeError:
    return WireDecodeError(
        f"string map attribute {name!r} has {entries} entries: exceeds max_map_entries ({limit})"
    )


# --- attributes ---------------------------------------------------------------------------------


def _decode_values(
    msg: CompressedAttributes,
    table: dict[int, str],
    ip_names: Container[str],
    limits: _Limits,
) -> dict[str, AttributeValue]:
    strings = msg.strings
    int64s = msg.int64s
    doubles = msg.doubles
    bools = msg.bools
    timestamps = msg.timestamps
    durations = msg.durations
    bytes_ = msg.bytes
    string_maps = msg.string_maps
    total = (
        len(strings)
        + len(int64s)
        + len(doubles)
        + len(bools)
        + len(timestamps)
        + len(durations)
        + len(bytes_)
        + len(string_maps)
    )
    if total > limits.max_attributes:
        raise WireDecodeError(
            f"message has {total} attributes: exceeds max_attributes ({limits.max_attributes})"
        )
    out: dict[str, AttributeValue] = {}
    try:
        # Plain loops with everything in locals: the upb map look-ups dominate, and these
        # measured no slower than comprehensions or map()/zip() pipelines over the same maps.
        if strings:
            for k in strings:
                out[table[k]] = table[strings[k]]
        if int64s:
            for k in int64s:
                out[table[k]] = int64s[k]
        if doubles:
            for k in doubles:
                out[table[k]] = doubles[k]
        if bools:
            for k in bools:
                out[table[k]] = bools[k]
        if timestamps:
            for k in timestamps:
                ts = timestamps[k]
                nanos = ts.nanos
                if not 0 <= nanos < _NANOS_PER_SECOND:
                    raise _bad_timestamp(table[k], ts.seconds, nanos)
                # OverflowError (outside years 1-9999) is turned into a decode error below.
                # Nanoseconds are truncated: datetime holds microseconds.
                out[table[k]] = _EPOCH + timedelta(0, ts.seconds, nanos // 1000)
        if durations:
            for k in durations:
                d = durations[k]
                seconds = d.seconds
                nanos = d.nanos
                if nanos < 0 or seconds < 0 or seconds > _MAX_DURATION_SECONDS or nanos >= _NANOS_PER_SECOND:
                    out[table[k]] = _negative_or_bad_duration(table[k], seconds, nanos)
                elif nanos % 1000:
                    # Go's nanosecond durations, kept: Mixer prints them (``13.601485ms``).
                    out[table[k]] = nano_duration(seconds, nanos)
                else:
                    out[table[k]] = timedelta(0, seconds, nanos // 1000)
        if bytes_:
            for k in bytes_:
                name = table[k]
                raw = bytes_[k]
                if name in ip_names:
                    out[name] = _ip_cache.get(raw) or _ip_address(name, raw)
                elif len(raw) > limits.max_string_length:
                    raise _bytes_too_long(name, raw, limits)
                else:
                    out[name] = raw
        if string_maps:
            max_entries = limits.max_map_entries
            for k in string_maps:
                entries = string_maps[k].entries
                if len(entries) > max_entries:
                    raise _map_too_large(table[k], len(entries), max_entries)
                # Resolved now: measured faster than validating the indices now and resolving
                # on first read, because the upb look-ups dominate either way.
                out[table[k]] = FrozenStringMap({table[i]: table[entries[i]] for i in entries})
    except KeyError:
        raise _bad_index(msg, table) from None
    except OverflowError:
        raise _timestamp_out_of_range(msg, table) from None
    if len(out) != total:
        raise _duplicate_name(msg, table)
    return out


def _limits(max_attributes: int, max_string_length: int, max_map_entries: int) -> _Limits:
    return _Limits(max_attributes, max_string_length, max_map_entries)


def decode_attributes(
    msg: CompressedAttributes,
    manifest: Mapping[str, ValueType] = ISTIO_MANIFEST,
    *,
    words: Sequence[str] | None = None,
    max_attributes: int = DEFAULT_MAX_ATTRIBUTES,
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH,
    max_map_entries: int = DEFAULT_MAX_MAP_ENTRIES,
) -> dict[str, AttributeValue]:
    """The attributes ``msg`` carries, by name.

    Values take the Python forms of :data:`mixer.attributes.AttributeValue`: TIMESTAMP is a UTC
    ``datetime`` (nanoseconds truncated to microseconds), DURATION a ``timedelta`` (a
    :class:`~mixer.attributes.NanoDuration` when it has nanoseconds below the microsecond),
    bytes of an attribute the manifest types IP_ADDRESS an ``ipaddress`` object, other bytes
    ``bytes``, STRING_MAP a :class:`FrozenStringMap`. The manifest is consulted only for IP
    addresses: a value in a typed map other than its declared type is passed through as sent.

    :param words: the word list to resolve negative indices against instead of ``msg.words``
        (a ReportRequest's ``default_words``).
    :raises WireDecodeError: an index outside the dictionaries, a name sent twice, a timestamp or
        duration outside its range, an IP address of the wrong length, or a limit exceeded.
    """
    limits = _limits(max_attributes, max_string_length, max_map_entries)
    table = _lookup_table(msg.words if words is None else words, limits)
    ip_names = _ISTIO_IP_NAMES if manifest is ISTIO_MANIFEST else _ip_names(manifest)
    return _decode_values(msg, table, ip_names, limits)
