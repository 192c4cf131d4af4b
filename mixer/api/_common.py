"""What every protocol's servicer shares: the concurrency limit and the decoding limits."""

from __future__ import annotations

from dataclasses import dataclass

from mixer.wire import DEFAULT_MAX_ATTRIBUTES, DEFAULT_MAX_MAP_ENTRIES, DEFAULT_MAX_STRING_LENGTH


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
    """Bounds applied to every request: decoding limits (see :func:`mixer.wire.decode_check_request`)
    and the longest a Check may take when the caller's deadline is later or absent (seconds)."""

    max_attributes: int = DEFAULT_MAX_ATTRIBUTES
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH
    max_map_entries: int = DEFAULT_MAX_MAP_ENTRIES
    check_timeout: float = 5.0
