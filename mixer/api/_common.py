"""What every protocol's servicer shares: the concurrency limit and the decoding limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Final

from mixer.attributes import AttributeBag, ValueType
from mixer.runtime import yield_for
from mixer.wire import (
    DEFAULT_MAX_ATTRIBUTES,
    DEFAULT_MAX_MAP_ENTRIES,
    DEFAULT_MAX_REPORT_RECORDS,
    DEFAULT_MAX_STRING_LENGTH,
    ReportReader,
)

#: Top-level fields of a ReportRequest scanned between two yields to the event loop (a few ms).
REPORT_SCAN_SLICE: Final = 512
#: Report elements parsed and decoded between two yields (tens of µs each).
REPORT_DECODE_SLICE: Final = 64


class Admission:
    """The process-wide count of requests in flight over all APIs, and its limit.

    Servicers refuse a call (UNAVAILABLE) when ``in_flight`` has reached ``limit``, count it in when
    they start working on it and out when they answer. Single event loop: plain ints suffice.
    """

    __slots__ = ("in_flight", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the concurrency limit must be at least 1")
        self.limit = limit
        self.in_flight = 0

    @property
    def full(self) -> bool:
        return self.in_flight >= self.limit


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """Bounds applied to every request: decoding limits (see :func:`mixer.wire.decode_check_request`),
    the longest a Check may take when the caller's deadline is later or absent (seconds), and the
    most records one report call may carry."""

    max_attributes: int = DEFAULT_MAX_ATTRIBUTES
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH
    max_map_entries: int = DEFAULT_MAX_MAP_ENTRIES
    check_timeout: float = 5.0
    #: Bags in one Report, records in one HTTP report or Envoy access-log message.
    max_report_records: int = DEFAULT_MAX_REPORT_RECORDS


async def decode_report_in_slices(
    data: bytes, manifest: Mapping[str, ValueType], limits: ServiceLimits
) -> list[AttributeBag]:
    """The bags of a serialized ReportRequest, decoded a slice at a time with yields in between.

    :raises ReportTooLarge: more than ``limits.max_report_records`` bags (found before any is decoded).
    :raises GlobalDictionaryMismatch: the client used more global words than this server knows.
    :raises WireDecodeError: anything malformed.
    """
    reader = ReportReader(
        data,
        manifest,
        max_records=limits.max_report_records,
        max_attributes=limits.max_attributes,
        max_string_length=limits.max_string_length,
        max_map_entries=limits.max_map_entries,
    )
    started = perf_counter()
    while not reader.scan(REPORT_SCAN_SLICE):
        await yield_for(perf_counter() - started)
        started = perf_counter()
    bags: list[AttributeBag] = []
    while not reader.done:
        bags += reader.read(REPORT_DECODE_SLICE)
        if not reader.done:
            await yield_for(perf_counter() - started)
            started = perf_counter()
    return bags
