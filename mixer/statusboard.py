"""What the status page shows that no metric holds: recent denials and the busiest plan subjects.

Both are process-wide and bounded whatever callers send:

- :data:`DENIALS`, a ring of the most recent denied Checks (code, reason, when): at most
  :data:`DENIAL_CAPACITY` entries of at most twice :data:`MAX_REASON` characters each, redacted
  and cut to :data:`MAX_REASON` when read.
- :data:`USAGE`, per-plan counts of the busiest subjects, kept with the Space-Saving algorithm:
  at most :data:`USAGE_CAPACITY` ``(plan, subject)`` entries; a new subject replaces the least
  counted one and inherits its count as a bound on its error, so a heavy hitter is never lost.

Recording is a few dict and deque operations: cheap enough for every Check.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from mixer.redact import redact_text

__all__ = [
    "DENIALS",
    "DENIAL_CAPACITY",
    "MAX_REASON",
    "MAX_SUBJECT",
    "USAGE",
    "USAGE_CAPACITY",
    "DenialRing",
    "TopSubjects",
]

DENIAL_CAPACITY: Final = 50
USAGE_CAPACITY: Final = 64
MAX_REASON: Final = 200
MAX_SUBJECT: Final = 64


@dataclass(frozen=True, slots=True)
class Denial:
    at: float
    api: str
    code: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "api": self.api, "code": self.code, "reason": self.reason}


class DenialRing:
    """The last ``capacity`` denials; reasons redacted and cut, so no API key or token is kept."""

    def __init__(self, capacity: int = DENIAL_CAPACITY) -> None:
        self._ring: deque[Denial] = deque(maxlen=capacity)
        self.total = 0

    def record(self, api: str, code: str, reason: str) -> None:
        self.total += 1
        # Only cut here: redaction (regular expressions, tens of microseconds) waits for a reader,
        # so a flood of denials costs the Check path a slice and an append.
        self._ring.append(Denial(time.time(), api[:32], code[:32], reason[: MAX_REASON * 2]))

    def recent(self) -> list[Denial]:
        """Newest first, reasons redacted and cut to :data:`MAX_REASON` characters."""
        return [Denial(d.at, d.api, d.code, redact_text(d.reason)[:MAX_REASON]) for d in reversed(self._ring)]

    def clear(self) -> None:
        self._ring.clear()
        self.total = 0


@dataclass(slots=True)
class _Usage:
    checks: int
    denied: int
    error: int


class TopSubjects:
    """Space-Saving counts of checks and denials by ``(plan, subject)``, ``capacity`` entries at most."""

    def __init__(self, capacity: int = USAGE_CAPACITY) -> None:
        self._capacity = capacity
        self._counts: dict[tuple[str, str], _Usage] = {}
        # A min-heap of (checks, order, key) with one entry per held key, its count as of when it
        # was pushed: counts only grow, so an entry is refreshed only when it reaches the top. A
        # scan for the least counted key on every new subject cost 3 % of a /v1/auth call when
        # callers outnumber the capacity; this costs a push, and a pop per eviction.
        self._heap: list[tuple[int, int, tuple[str, str]]] = []
        self._order = itertools.count()
        self.evictions = 0

    def count(self, plan: str, subject: str, *, denied: bool) -> None:
        key = (plan[:MAX_SUBJECT], subject[:MAX_SUBJECT])
        usage = self._counts.get(key)
        if usage is None:
            floor = self._evict() if len(self._counts) >= self._capacity else 0
            usage = _Usage(floor, 0, floor)
            self._counts[key] = usage
            heapq.heappush(self._heap, (floor, next(self._order), key))
        usage.checks += 1
        if denied:
            usage.denied += 1

    def _evict(self) -> int:
        """Drop the least counted key; its count, which the newcomer inherits."""
        heap, counts = self._heap, self._counts
        while True:
            checks, _, key = heap[0]
            current = counts[key].checks
            if current == checks:
                heapq.heappop(heap)
                del counts[key]
                self.evictions += 1
                return checks
            heapq.heapreplace(heap, (current, next(self._order), key))

    def top(self, n: int) -> list[dict[str, Any]]:
        """The ``n`` busiest entries, busiest first; subjects redacted like any logged text."""
        ranked = sorted(self._counts.items(), key=lambda item: -item[1].checks)[:n]
        return [
            {
                "plan": plan,
                "subject": redact_text(subject),
                "checks": usage.checks,
                "denied": usage.denied,
                "error_bound": usage.error,
            }
            for (plan, subject), usage in ranked
        ]

    def top_by_plan(self, n: int) -> dict[str, list[dict[str, Any]]]:
        """The ``n`` busiest subjects of each plan, plans by name."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for entry in self.top(len(self._counts)):
            ranked = grouped.setdefault(entry["plan"], [])
            if len(ranked) < n:
                ranked.append(entry)
        return dict(sorted(grouped.items()))

    def clear(self) -> None:
        self._counts.clear()
        self._heap.clear()
        self.evictions = 0


DENIALS: Final = DenialRing()
USAGE: Final = TopSubjects()
