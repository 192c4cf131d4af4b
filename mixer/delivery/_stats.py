"""A snapshot of one Delivery's counters and gauges, and the counters it keeps while it runs."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["SEND_DURATION_BUCKETS", "Counters", "DeliveryStats"]

#: Upper bounds (seconds) of the send latency histogram; the last bucket is +Inf.
SEND_DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.025, 0.1, 0.5, 2.5, 10.0)


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    """Counters are in records and only grow; gauges are the state when the snapshot was taken.

    ``failed`` counts records in send attempts that failed (a whole-batch retryable error, a
    timeout, or an item the backend asked to retry), once per attempt; ``retried`` the records
    sent again after such a failure. ``dropped`` is by reason: ``spool_full`` (drop_oldest),
    ``queue_full`` (no spool, drop policy), ``dead_letter_full`` (rotated away),
    ``spool_error`` (the spool could not be written and memory was full). ``spooled`` counts
    records written to the spool to wait there; ``written_ahead`` those written ahead in
    ``spool`` acknowledgement while the backend answers (sent from memory, deleted once accepted).
    ``send_duration_buckets`` are cumulative counts for :data:`SEND_DURATION_BUCKETS` then +Inf.
    """

    queued_records: int = 0
    queued_bytes: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    spooled: int = 0
    written_ahead: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)
    spool_records: int = 0
    spool_bytes: int = 0
    in_flight: int = 0
    circuit_open: bool = False
    send_duration_count: int = 0
    send_duration_sum: float = 0.0
    send_duration_buckets: tuple[int, ...] = ()


class Counters:
    """The counters one Delivery keeps while it runs; :class:`DeliveryStats` snapshots them."""

    __slots__ = (
        "dead_lettered",
        "dropped",
        "duration_buckets",
        "duration_count",
        "duration_sum",
        "failed",
        "replayed",
        "retried",
        "sent",
        "spooled",
        "written_ahead",
    )

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.retried = 0
        self.spooled = 0
        self.written_ahead = 0
        self.replayed = 0
        self.dead_lettered = 0
        self.dropped: dict[str, int] = {}
        self.duration_count = 0
        self.duration_sum = 0.0
        self.duration_buckets = [0] * (len(SEND_DURATION_BUCKETS) + 1)

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def observe(self, seconds: float) -> None:
        self.duration_count += 1
        self.duration_sum += seconds
        self.duration_buckets[bisect.bisect_left(SEND_DURATION_BUCKETS, seconds)] += 1

    def cumulative_buckets(self) -> tuple[int, ...]:
        out: list[int] = []
        running = 0
        for count in self.duration_buckets:
            running += count
            out.append(running)
        return tuple(out)
