"""Decoding istio.mixer.v1 Check and Report requests into attribute bags.

Two decoders give the same bags and the same errors: the compiled one (mixer/wire/_cdecode.pyx,
when it is built) reads the wire bytes itself and hands anything it is unsure of back to the
pure-Python one here, which parses with upb and decodes the values with mixer/wire/_attributes.py.
``MIXER_PURE_PYTHON=1`` selects the pure-Python one alone (see mixer/wire/_fast.py).
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Final, TypeVar

from google.protobuf.message import DecodeError, Message

from mixer.decision import QuotaRequest
from mixer.proto.istio.mixer.v1.attributes_pb2 import CompressedAttributes
from mixer.proto.istio.mixer.v1.check_pb2 import CheckRequest
from mixer.proto.istio.mixer.v1.report_pb2 import ReportRequest
from mixer.values import ISTIO_MANIFEST, AttributeBag, AttributeValue, ValueType, nano_duration
from mixer.wire import _fast
from mixer.wire._attributes import (
    _ISTIO_IP_NAMES,
    DEFAULT_MAX_ATTRIBUTES,
    DEFAULT_MAX_MAP_ENTRIES,
    DEFAULT_MAX_REPORT_RECORDS,
    DEFAULT_MAX_STRING_LENGTH,
    _decode_values,
    _ip_address,
    _ip_cache,
    _ip_names,
    _Limits,
    _limits,
    _lookup_table,
    _negative_or_bad_duration,
    decode_attributes,
)
from mixer.wire._dictionary import GLOBAL_WORDS, check_global_word_count
from mixer.wire._errors import ReportTooLarge, WireDecodeError
from mixer.wire._maps import FrozenStringMap

__all__ = [
    "DEFAULT_MAX_ATTRIBUTES",
    "DEFAULT_MAX_MAP_ENTRIES",
    "DEFAULT_MAX_REPORT_RECORDS",
    "DEFAULT_MAX_STRING_LENGTH",
    "DecodedCheck",
    "ReportReader",
    "count_entries",
    "decode_attributes",
    "decode_check_request",
    "decode_report_request",
]

_DELTA: Final = ReportRequest.DELTA_ENCODING
_INDEPENDENT: Final = ReportRequest.INDEPENDENT_ENCODING

_M = TypeVar("_M", bound=Message)

if _fast.compiled is not None:
    # The compiled decoder builds its values with the same helpers, types and caches.
    _fast.compiled.configure(
        GLOBAL_WORDS,
        UTC,
        _ip_cache,
        _ip_address,
        _negative_or_bad_duration,
        nano_duration,
        AttributeBag,
        FrozenStringMap,
        WireDecodeError,
    )


@dataclass(frozen=True, slots=True)
class DecodedCheck:
    """A decoded CheckRequest."""

    bag: AttributeBag
    deduplication_id: str
    quotas: dict[str, QuotaRequest]
    global_word_count: int


# --- requests -----------------------------------------------------------------------------------


def _parse(cls: type[_M], data: bytes | bytearray | memoryview) -> _M:
    msg = cls()
    try:
        msg.ParseFromString(data if isinstance(data, bytes) else bytes(data))
    except DecodeError as exc:
        raise WireDecodeError(f"malformed {cls.DESCRIPTOR.full_name}: {exc}") from None
    return msg


def _check_length(what: str, value: str, limits: _Limits) -> None:
    if len(value) > limits.max_string_length:
        raise WireDecodeError(
            f"{what} of {len(value)} characters exceeds max_string_length ({limits.max_string_length})"
        )


def decode_check_request(
    data: bytes | bytearray | memoryview | CheckRequest,
    manifest: Mapping[str, ValueType] = ISTIO_MANIFEST,
    *,
    max_attributes: int = DEFAULT_MAX_ATTRIBUTES,
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH,
    max_map_entries: int = DEFAULT_MAX_MAP_ENTRIES,
) -> DecodedCheck:
    """Decode a CheckRequest, serialized or already parsed.

    :raises GlobalDictionaryMismatch: the client used more global words than this server knows.
    :raises WireDecodeError: anything malformed (see :func:`decode_attributes`).
    """
    ip_names = _ISTIO_IP_NAMES if manifest is ISTIO_MANIFEST else _ip_names(manifest)
    if isinstance(data, CheckRequest):
        msg = data
    else:
        raw = data if type(data) is bytes else bytes(data)
        cdecode = _fast.cdecode
        if cdecode is None:
            _fast.note_pure_python()
        else:
            fast = cdecode.check_request(raw, ip_names, max_attributes, max_string_length, max_map_entries)
            if fast is not None:
                decoded, dedup, quota_params, word_count = fast
                requested = {name: QuotaRequest(amount, effort) for name, amount, effort in quota_params}
                return DecodedCheck(AttributeBag(decoded), dedup, requested, word_count)
        msg = _parse(CheckRequest, raw)
    limits = _limits(max_attributes, max_string_length, max_map_entries)
    check_global_word_count(msg.global_word_count)
    attributes = msg.attributes
    table = _lookup_table(attributes.words, limits)
    values = _decode_values(attributes, table, ip_names, limits)
    dedup_id = msg.deduplication_id
    _check_length("deduplication_id", dedup_id, limits)
    quotas: dict[str, QuotaRequest] = {}
    for quota_name, params in msg.quotas.items():
        _check_length("quota name", quota_name, limits)
        quotas[quota_name] = QuotaRequest(params.amount, params.best_effort)
    return DecodedCheck(AttributeBag(values), dedup_id, quotas, msg.global_word_count)


def decode_report_request(
    data: bytes | bytearray | memoryview | ReportRequest,
    manifest: Mapping[str, ValueType] = ISTIO_MANIFEST,
    *,
    max_records: int = DEFAULT_MAX_REPORT_RECORDS,
    max_attributes: int = DEFAULT_MAX_ATTRIBUTES,
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH,
    max_map_entries: int = DEFAULT_MAX_MAP_ENTRIES,
) -> list[AttributeBag]:
    """One bag per element of a ReportRequest, serialized or already parsed.

    An element whose own word list is empty resolves its indices against ``default_words``.
    Under DELTA_ENCODING bag k holds element 0 updated by elements 1..k (``max_attributes``
    then bounds the accumulated bag); under INDEPENDENT_ENCODING each element is whole. A server
    decodes through :class:`ReportReader` instead, a slice at a time.

    :raises ReportTooLarge: more than ``max_records`` elements.
    :raises GlobalDictionaryMismatch: the client used more global words than this server knows.
    :raises WireDecodeError: anything malformed; the message names the element.
    """
    if isinstance(data, ReportRequest):
        if len(data.attributes) > max_records:
            raise _too_large(max_records)
        elements = _ReportElements(
            data, manifest, _limits(max_attributes, max_string_length, max_map_entries)
        )
        return elements.decode(data.attributes, 0)
    reader = ReportReader(
        data,
        manifest,
        max_records=max_records,
        max_attributes=max_attributes,
        max_string_length=max_string_length,
        max_map_entries=max_map_entries,
    )
    reader.scan(len(reader.data) + 1)
    return reader.read(max_records)


def _too_large(max_records: int) -> ReportTooLarge:
    return ReportTooLarge(f"the Report has more than {max_records} records (see --max-report-records)")


class _ReportElements:
    """Decodes the elements of one ReportRequest in order, carrying the delta-encoded bag along."""

    __slots__ = (
        "_current",
        "_default_fit",
        "_default_list",
        "_default_table",
        "_default_words",
        "_delta",
        "_ip_names",
        "_limits",
    )

    def __init__(self, header: ReportRequest, manifest: Mapping[str, ValueType], limits: _Limits) -> None:
        check_global_word_count(header.global_word_count)
        semantics = header.repeated_attributes_semantics
        if semantics != _INDEPENDENT and semantics != _DELTA:  # noqa: PLR1714 - enum ints, not a set
            raise WireDecodeError(f"unknown repeated_attributes_semantics {int(semantics)}")
        self._delta = semantics == _DELTA
        self._default_words = header.default_words
        self._default_table: dict[int, str] | None = None
        self._default_list: list[str] | None = None
        self._default_fit = True
        self._ip_names = _ISTIO_IP_NAMES if manifest is ISTIO_MANIFEST else _ip_names(manifest)
        self._limits = limits
        self._current: dict[str, AttributeValue] = {}

    def decode(self, elements: Sequence[CompressedAttributes], first: int) -> list[AttributeBag]:
        """Bags for ``elements``, the next ones after the ``first`` already decoded."""
        limits = self._limits
        ip_names = self._ip_names
        decode = _decode_values
        delta = self._delta
        current = self._current
        bags: list[AttributeBag] = []
        append = bags.append
        for position, element in enumerate(elements, first):
            try:
                own_words = element.words
                if own_words:
                    table = _lookup_table(own_words, limits)
                else:
                    if self._default_table is None:
                        self._default_table = _lookup_table(self._default_words, limits)
                    table = self._default_table
                values = decode(element, table, ip_names, limits)
                if delta:
                    if position:
                        values = {**current, **values}
                        if len(values) > limits.max_attributes:
                            raise WireDecodeError(
                                f"accumulated bag has {len(values)} attributes: exceeds max_attributes "
                                f"({limits.max_attributes})"
                            )
                    current = values
            except WireDecodeError as exc:
                raise WireDecodeError(f"report element {position}: {exc}") from None
            append(AttributeBag(values))
        self._current = current
        return bags

    def decode_compiled(
        self, cdecode: _fast.CompiledDecoder, data: bytes, start: int, end: int, first: int
    ) -> list[AttributeBag] | None:
        """Bags for the fields in ``data[start:end]``, or None when the pure-Python path must decide."""
        limits = self._limits
        if self._default_list is None:
            self._default_list = list(self._default_words)
            # As _lookup_table's check, made once: the words are only refused if an element uses them.
            self._default_fit = all(len(word) <= limits.max_string_length for word in self._default_list)
        result = cdecode.report_elements(
            data,
            start,
            end,
            first,
            self._default_list,
            self._default_fit,
            self._ip_names,
            limits.max_attributes,
            limits.max_string_length,
            limits.max_map_entries,
            self._delta,
            self._current,
        )
        if result is None:
            return None
        bags, self._current = result
        return bags


_REPORT_NAME: Final = ReportRequest.DESCRIPTOR.full_name


def _malformed_report(reason: str) -> WireDecodeError:
    return WireDecodeError(f"malformed {_REPORT_NAME}: {reason}")


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise WireDecodeError("malformed message: truncated or overlong varint")


class ReportReader:
    """A serialized ReportRequest decoded a slice at a time, so a large one never holds the caller.

    :meth:`scan` walks the message's top-level fields without parsing the elements, and refuses the
    Report as soon as it sees one element more than ``max_records``, so an oversized Report costs
    only the scan of its first ``max_records`` elements. :meth:`read` then parses and decodes the
    next elements. Each call does work bounded by its argument; the caller yields between calls.
    """

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        manifest: Mapping[str, ValueType] = ISTIO_MANIFEST,
        *,
        max_records: int = DEFAULT_MAX_REPORT_RECORDS,
        max_attributes: int = DEFAULT_MAX_ATTRIBUTES,
        max_string_length: int = DEFAULT_MAX_STRING_LENGTH,
        max_map_entries: int = DEFAULT_MAX_MAP_ENTRIES,
    ) -> None:
        self.data = data if type(data) is bytes else bytes(data)
        self._manifest = manifest
        self._max_records = max_records
        self._limits = _limits(max_attributes, max_string_length, max_map_entries)
        self._pos = 0
        self._spans: list[tuple[int, int]] = []
        self._header = bytearray()
        self._elements: _ReportElements | None = None
        self._next = 0

    @property
    def records(self) -> int:
        """The elements seen so far (all of them once :meth:`scan` has returned ``True``)."""
        return len(self._spans)

    @property
    def done(self) -> bool:
        """Whether every element has been read."""
        return self._elements is not None and self._next >= len(self._spans)

    def scan(self, fields: int) -> bool:
        """Walk up to ``fields`` more top-level fields; whether the scan is complete.

        :raises ReportTooLarge: more than ``max_records`` elements.
        :raises GlobalDictionaryMismatch: (when complete) more global words than this server knows.
        :raises WireDecodeError: the framing or the fields other than the elements are malformed.
        """
        if self._elements is not None:
            return True
        data = self.data
        size = len(data)
        pos = self._pos
        spans = self._spans
        limit = self._max_records
        cdecode = _fast.cdecode
        while pos < size and fields > 0:
            if cdecode is not None:
                # Well-formed fields in C; whatever it stops at (a refusal, an odd encoding) here.
                pos, fields = cdecode.scan_fields(data, pos, fields, spans, limit, self._header)
                if pos >= size or fields <= 0:
                    break
            fields -= 1
            start = pos
            if data[pos] == 0x0A and pos + 2 < size and data[pos + 1] < 0x80:
                # The common case, an element shorter than 128 bytes, without the general varint loop.
                end = pos + 2 + data[pos + 1]
                if end > size:
                    raise _malformed_report("truncated field")
                if len(spans) == limit:
                    raise _too_large(limit)
                spans.append((start, end))
                pos = end
                continue
            try:
                tag, pos = _varint(data, pos, size)
                wire_type = tag & 7
                if wire_type == 2:
                    length, pos = _varint(data, pos, size)
                    end = pos + length
                elif wire_type == 0:
                    end = _varint(data, pos, size)[1]
                else:
                    end = pos + (4 if wire_type == 5 else 8)
            except WireDecodeError:
                raise _malformed_report("truncated or overlong varint") from None
            if wire_type not in (0, 1, 2, 5):
                raise _malformed_report(f"unsupported wire type {wire_type}")
            if end > size:
                raise _malformed_report("truncated field")
            if tag == 0x0A:  # field 1, length-delimited: one element of ``attributes``
                if len(spans) == limit:
                    raise _too_large(limit)
                spans.append((start, end))
            else:
                self._header += data[start:end]
            pos = end
        self._pos = pos
        if pos < size:
            return False
        self._elements = _ReportElements(_parse(ReportRequest, self._header), self._manifest, self._limits)
        return True

    def read(self, count: int) -> list[AttributeBag]:
        """The bags of the next ``count`` elements (fewer at the end); call after :meth:`scan`.

        :raises WireDecodeError: an element is malformed; the message names it.
        """
        elements = self._elements
        if elements is None:
            raise RuntimeError("read() before the scan is complete")
        first = self._next
        last = min(len(self._spans), first + count)
        if first >= last:
            return []
        # The bytes from the first element's start to the last one's end parse as a ReportRequest
        # holding exactly those elements (any other field between them is already in the header).
        start, end = self._spans[first][0], self._spans[last - 1][1]
        cdecode = _fast.cdecode
        if cdecode is None:
            _fast.note_pure_python()
        else:
            bags = elements.decode_compiled(cdecode, self.data, start, end, first)
            if bags is not None:
                self._next = last
                return bags
        chunk = _parse(ReportRequest, self.data[start:end])
        self._next = last
        return elements.decode(chunk.attributes, first)


def count_entries(data: bytes, containers: Container[int], limit: int) -> int:
    """How many field-1 elements the length-delimited top-level fields ``containers`` of a serialized
    message hold together, counting no further than ``limit + 1`` and parsing nothing.

    For messages shaped like Envoy's ``StreamAccessLogsMessage`` (``http_logs { repeated log_entry
    = 1 }``): a count over ``limit`` is known after walking ``limit + 1`` entries, however many more
    the message carries.

    :raises WireDecodeError: the framing is malformed.
    """
    count = 0
    for number, start, end in _length_delimited(data, 0, len(data)):
        if number in containers:
            for inner, _, _ in _length_delimited(data, start, end):
                if inner == 1:
                    count += 1
                    if count > limit:
                        return count
    return count


def _length_delimited(data: bytes, pos: int, size: int) -> Iterator[tuple[int, int, int]]:
    """``(field number, payload start, payload end)`` of each length-delimited field in the range."""
    while pos < size:
        tag, pos = _varint(data, pos, size)
        wire_type = tag & 7
        if wire_type == 2:
            length, pos = _varint(data, pos, size)
            end = pos + length
            if end > size:
                raise WireDecodeError("malformed message: truncated field")
            yield tag >> 3, pos, end
            pos = end
            continue
        if wire_type == 0:
            pos = _varint(data, pos, size)[1]
        elif wire_type == 5:
            pos += 4
        elif wire_type == 1:
            pos += 8
        else:
            raise WireDecodeError(f"malformed message: unsupported wire type {wire_type}")
        if pos > size:
            raise WireDecodeError("malformed message: truncated field")
