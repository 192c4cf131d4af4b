"""The quota store contract: allocate several counters at once, all or nothing.

A Check on a plan allocates every limit of the plan; a store answers them in one call so that a
networked store (Redis) needs one round trip and can apply them atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mixer.frozen import quick_init
from mixer.quota._algorithms import Algorithm, Decision, Window


@quick_init
@dataclass(frozen=True, slots=True)
class CounterRequest:
    """Allocate ``amount`` units of counter ``key``, limited to ``limit`` per window.

    The algorithm decides which of the window fields apply: FIXED_WINDOW uses ``window``;
    ROLLING_WINDOW ``period`` (the window length) and ``bucket_seconds``; GCRA ``period`` and
    ``burst``. ``best_effort`` grants what is left when less than ``amount`` is. A request with
    ``enforce`` False (a shadow limit) is counted when it fits but never makes the others fail.

    ``group`` names the counters always allocated together (a plan's, for one subject): a Redis
    Cluster store keeps one group in one hash slot, so one script can allocate them atomically.
    Every request of one allocation has the same group; empty means the key alone is the group.
    A counter's group must be the same in every allocation that counts it.
    """

    key: str
    amount: int
    limit: int
    algorithm: Algorithm
    window: Window | None = None
    period: float = 0.0
    bucket_seconds: float = 0.0
    burst: int = 0
    best_effort: bool = False
    enforce: bool = True
    group: str = ""

    @property
    def shape(self) -> tuple[object, ...]:
        """What a counter's stored state means; state stored under another shape is stale."""
        if self.algorithm is Algorithm.FIXED_WINDOW:
            return (self.algorithm, self.window)
        if self.algorithm is Algorithm.ROLLING_WINDOW:
            return (self.algorithm, self.period, self.bucket_seconds)
        return (self.algorithm, self.period / self.limit if self.limit else 0.0)


@quick_init
@dataclass(frozen=True, slots=True)
class Allocation:
    """The answer to one :meth:`CounterStore.allocate` call, one decision per request in order.

    ``allowed`` is False when an enforced request was denied; then nothing was spent on any
    counter, and the other decisions report the counters as they are (granted 0). ``replayed`` is
    True when the answer was the one recorded for the same deduplication id.
    """

    decisions: tuple[Decision, ...]
    allowed: bool
    replayed: bool = False


class CounterStore(Protocol):
    """Where counters live (process memory, Redis). Implementations apply one call atomically."""

    async def allocate(
        self,
        requests: Sequence[CounterRequest],
        *,
        deduplication_id: str = "",
        dedup_seconds: float = 0.0,
    ) -> Allocation:
        """Allocate every request or, if an enforced one is denied, none.

        With a non-empty ``deduplication_id``, the answer is recorded for ``dedup_seconds`` and a
        call with the same id within that time returns it again without spending anything: a
        retried Check never spends quota twice.

        :raises Exception: the store cannot answer (a networked store is unreachable).
        """
        ...
