"""Encoding attribute values into istio.mixer.v1 requests (for clients, tools and tests)."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from mixer.decision import QuotaRequest
from mixer.proto.istio.mixer.v1.attributes_pb2 import CompressedAttributes
from mixer.proto.istio.mixer.v1.check_pb2 import CheckRequest
from mixer.proto.istio.mixer.v1.report_pb2 import ReportRequest
from mixer.values import ISTIO_MANIFEST, AttributeBag, AttributeValue, ValueType, conforms, nanoseconds_of
from mixer.wire._dictionary import GLOBAL_WORD_COUNT, GLOBAL_WORD_INDEX

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_MAX_DURATION_SECONDS: Final = 315_576_000_000


class ReportEncoding(enum.IntEnum):
    """istio.mixer.v1.ReportRequest.RepeatedAttributesSemantics."""

    #: Each element holds what changed since the previous one (Istio 1.0 proxies).
    DELTA_ENCODING = 0
    #: Each element is a whole bag (Istio 1.1+ proxies).
    INDEPENDENT_ENCODING = 1


class WordTable:
    """The words of one message being encoded: a global index where there is one, else a new word."""

    __slots__ = ("_index", "words")

    def __init__(self) -> None:
        self.words: list[str] = []
        self._index: dict[str, int] = {}

    def index(self, word: str) -> int:
        found = GLOBAL_WORD_INDEX.get(word)
        if found is not None:
            return found
        return self.local_index(word)

    def map_key_index(self, word: str) -> int:
        """Like :meth:`index`, never 0: a referenced map key of 0 means "no key" to a proxy."""
        found = GLOBAL_WORD_INDEX.get(word)
        if found:
            return found
        return self.local_index(word)

    def local_index(self, word: str) -> int:
        found = self._index.get(word)
        if found is None:
            self.words.append(word)
            found = self._index[word] = -len(self.words)
        return found


def timestamp_of(value: datetime) -> Timestamp:
    """A Timestamp for an aware datetime, to the microsecond."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise TypeError("timestamp attributes must be timezone-aware datetimes")
    seconds, micros = divmod((value - _EPOCH) // _MICROSECOND, 1_000_000)
    return Timestamp(seconds=seconds, nanos=micros * 1000)


def duration_parts(value: timedelta) -> tuple[int, int]:
    """A timedelta's Duration seconds and nanos, of the same sign as the protobuf type requires.

    :raises ValueError: outside Duration's +-10,000 years.
    """
    nanos = nanoseconds_of(value)
    seconds, rest = divmod(abs(nanos), 1_000_000_000)
    if seconds > _MAX_DURATION_SECONDS:
        raise ValueError(f"duration {value} is outside google.protobuf.Duration's +-10000 years")
    sign = -1 if nanos < 0 else 1
    return sign * seconds, sign * rest


def duration_of(value: timedelta) -> Duration:
    """A Duration for a timedelta (see :func:`duration_parts`)."""
    seconds, nanos = duration_parts(value)
    return Duration(seconds=seconds, nanos=nanos)


def _ip_bytes(name: str, value: object) -> bytes:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value.packed
    if isinstance(value, str):
        try:
            return ipaddress.ip_address(value).packed
        except ValueError:
            raise ValueError(f"attribute {name!r}: {value!r} is not an IP address") from None
    if isinstance(value, bytes) and len(value) in (4, 16):
        return value
    raise TypeError(f"attribute {name!r} is declared IP_ADDRESS, got {type(value).__name__}")


def _encode_into(
    msg: CompressedAttributes,
    values: Mapping[str, AttributeValue],
    manifest: Mapping[str, ValueType],
    table: WordTable,
) -> None:
    index = table.index
    for name, value in values.items():
        key = index(name)
        declared = manifest.get(name)
        if declared is ValueType.IP_ADDRESS:
            msg.bytes[key] = _ip_bytes(name, value)
            continue
        if declared is not None and not conforms(value, declared):
            raise TypeError(f"attribute {name!r} is declared {declared.name}, got {type(value).__name__}")
        # bool before int: bool is a subclass of int.
        if isinstance(value, bool):
            msg.bools[key] = value
        elif isinstance(value, int):
            msg.int64s[key] = value
        elif isinstance(value, float):
            msg.doubles[key] = value
        elif isinstance(value, str):
            msg.strings[key] = index(value)
        elif isinstance(value, datetime):
            msg.timestamps[key].CopyFrom(timestamp_of(value))
        elif isinstance(value, timedelta):
            msg.durations[key].CopyFrom(duration_of(value))
        elif isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            msg.bytes[key] = value.packed
        elif isinstance(value, bytes):
            msg.bytes[key] = value
        elif isinstance(value, Mapping):
            entries = msg.string_maps[key].entries
            for map_key, map_value in value.items():
                if not isinstance(map_key, str) or not isinstance(map_value, str):
                    raise TypeError(f"string map attribute {name!r} has a non-string key or value")
                entries[index(map_key)] = index(map_value)
        else:
            raise TypeError(f"attribute {name!r}: {type(value).__name__} is not an attribute value type")


def encode_attributes(
    values: Mapping[str, AttributeValue] | AttributeBag,
    manifest: Mapping[str, ValueType] = ISTIO_MANIFEST,
) -> CompressedAttributes:
    """A CompressedAttributes carrying ``values`` with its own word list.

    Names and strings in the global dictionary are sent as global indices, others as message
    words. Attributes the manifest types IP_ADDRESS are sent as 4 or 16 bytes (``ipaddress``
    objects or their text); EMAIL_ADDRESS, URI and DNS_NAME are strings on the wire.

    :raises TypeError: a value of no attribute type, or not of the type the manifest declares.
    :raises ValueError: a value outside its wire range (an int beyond int64, a huge duration).
    """
    msg = CompressedAttributes()
    table = WordTable()
    _encode_into(msg, _as_mapping(values), manifest, table)
    msg.words.extend(table.words)
    return msg


def _as_mapping(values: Mapping[str, AttributeValue] | AttributeBag) -> Mapping[str, AttributeValue]:
    return values.to_dict() if isinstance(values, AttributeBag) else values


def _same(a: AttributeValue, b: AttributeValue) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return dict(a) == dict(b)
    # The types must match too: True == 1 == 1.0 but they are different attributes on the wire.
    return type(a) is type(b) and a == b


def encode_report_request(
    bags: Iterable[Mapping[str, AttributeValue] | AttributeBag],
    encoding: ReportEncoding = ReportEncoding.INDEPENDENT_ENCODING,
    *,
    use_default_words: bool = True,
    manifest: Mapping[str, ValueType] = ISTIO_MANIFEST,
) -> ReportRequest:
    """A ReportRequest with one element per bag.

    With ``use_default_words`` (what Istio 1.4 proxies do) the batch shares one word list in
    ``default_words`` and every element's own list is empty; otherwise each element has its own.
    DELTA_ENCODING sends each bag as the attributes whose value changed since the previous one.

    :raises ValueError: under DELTA_ENCODING, a bag lacks an attribute its predecessor had (the
        encoding cannot express a removal).
    """
    request = ReportRequest(
        repeated_attributes_semantics=(
            ReportRequest.DELTA_ENCODING
            if encoding is ReportEncoding.DELTA_ENCODING
            else ReportRequest.INDEPENDENT_ENCODING
        ),
        global_word_count=GLOBAL_WORD_COUNT,
    )
    shared = WordTable() if use_default_words else None
    delta = encoding is ReportEncoding.DELTA_ENCODING
    previous: Mapping[str, AttributeValue] | None = None
    for position, bag in enumerate(bags):
        values = whole = _as_mapping(bag)
        if delta and previous is not None:
            removed = [name for name in previous if name not in whole]
            if removed:
                raise ValueError(
                    f"bag {position} lacks {sorted(removed)!r}: DELTA_ENCODING cannot express a "
                    "removal, use INDEPENDENT_ENCODING"
                )
            before = previous
            values = {n: v for n, v in whole.items() if n not in before or not _same(before[n], v)}
        previous = whole
        element = request.attributes.add()
        table = shared if shared is not None else WordTable()
        _encode_into(element, values, manifest, table)
        if shared is None:
            element.words.extend(table.words)
    if shared is not None:
        request.default_words.extend(shared.words)
    return request


def encode_check_request(
    values: Mapping[str, AttributeValue] | AttributeBag,
    *,
    deduplication_id: str = "",
    quotas: Mapping[str, QuotaRequest | tuple[int, bool]] | None = None,
    manifest: Mapping[str, ValueType] = ISTIO_MANIFEST,
    global_word_count: int = GLOBAL_WORD_COUNT,
) -> CheckRequest:
    """A CheckRequest for ``values``, asking for ``quotas`` (name -> amount and best effort)."""
    request = CheckRequest(
        attributes=encode_attributes(values, manifest),
        global_word_count=global_word_count,
        deduplication_id=deduplication_id,
    )
    for name, quota in (quotas or {}).items():
        amount, best_effort = (quota.amount, quota.best_effort) if isinstance(quota, QuotaRequest) else quota
        params = request.quotas[name]
        params.amount = amount
        params.best_effort = best_effort
    return request
