"""The in-process counter store: the embedded default's quota store, for one process only."""

from __future__ import annotations

import hashlib
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from mixer.cache import ENTRY_OVERHEAD
from mixer.quota._algorithms import (
    Algorithm,
    Decision,
    FixedWindowState,
    GcraState,
    RollingWindowState,
    fixed_window,
    gcra,
    rolling_window,
)
from mixer.quota._store import Allocation, CounterRequest

State: TypeAlias = FixedWindowState | RollingWindowState | GcraState

DEFAULT_MAX_KEYS = 100_000
DEFAULT_MAX_DEDUP_ENTRIES = 100_000
#: The records' estimated bytes, kept at most: 100,000 records of one decision each fit (about
#: 500 bytes apiece), and records of plans with many limits (five numbers per limit) stop here.
DEFAULT_MAX_DEDUP_BYTES = 64 * 1024 * 1024
#: Seconds between sweeps that drop expired counters nobody asked for again.
DEFAULT_SWEEP_INTERVAL = 60.0


@dataclass(slots=True)
class MemoryStoreStats:
    """Counters for self-metrics. ``evictions`` are live counters dropped to stay within
    ``max_keys`` (their subjects start afresh: raise ``max_keys`` if it grows).
    ``dedup_evictions`` are deduplication records dropped before they expired to stay within
    ``max_dedup_entries`` or ``max_dedup_bytes`` (a retry then spends again);
    ``dedup_rejected`` records never kept because one alone exceeds ``max_dedup_bytes``;
    ``dedup_bytes`` is the estimated size of the records held now."""

    allocations: int = 0
    denials: int = 0
    evictions: int = 0
    expired: int = 0
    dedup_hits: int = 0
    dedup_evictions: int = 0
    dedup_rejected: int = 0
    dedup_bytes: int = 0


@dataclass(slots=True)
class _Entry:
    shape: tuple[object, ...]
    state: State
    #: After this time the state is as good as none (the window ended, the GCRA drained).
    expires_at: float


#: A deduplication record: (expires at, allowed as 1 or 0, then granted, limit, remaining, reset
#: after and retry after (-1: none) of each decision). Flat numbers only, so that the collector
#: stops tracking it at the first collection that meets it (a nested tuple takes one per level).
_Record: TypeAlias = tuple[float, ...]


def _compact(expires_at: float, allocation: Allocation) -> _Record:
    record: list[float] = [expires_at, 1 if allocation.allowed else 0]
    for d in allocation.decisions:
        retry = -1.0 if d.retry_after is None else d.retry_after
        record += (d.granted, d.limit, d.remaining, d.reset_after, retry)
    return tuple(record)


def _expand(record: _Record) -> Allocation:
    decisions = tuple(
        Decision(
            int(record[i]),
            int(record[i + 1]),
            int(record[i + 2]),
            record[i + 3],
            None if record[i + 4] < 0 else record[i + 4],
        )
        for i in range(2, len(record), 5)
    )
    return Allocation(decisions, record[1] == 1, replayed=True)


def _record_size(deduplication_id: str, record: _Record) -> int:
    """Estimated bytes a record keeps alive: its id, the tuple, its numbers and the dict entry."""
    return (
        sys.getsizeof(deduplication_id)
        + sys.getsizeof(record)
        + sum(map(sys.getsizeof, record))
        + ENTRY_OVERHEAD
    )


def transition(request: CounterRequest, state: Any, now: float, amount: int) -> tuple[State, Decision]:
    """One algorithm step for ``request`` from ``state`` (None: a fresh counter)."""
    if request.algorithm is Algorithm.FIXED_WINDOW:
        assert request.window is not None
        return fixed_window(state, now, amount, request.limit, request.window, request.best_effort)
    if request.algorithm is Algorithm.ROLLING_WINDOW:
        return rolling_window(
            state, now, amount, request.limit, request.period, request.bucket_seconds, request.best_effort
        )
    return gcra(state, now, amount, request.limit, request.period, request.burst, request.best_effort)


#: Longest counter key or deduplication id kept as is; longer ones are kept as their SHA-256, so
#: that the entry bounds (``max_keys``, ``max_dedup_entries``) bound the bytes held too.
MAX_KEY_CHARS = 128


def _bounded_key(key: str) -> str:
    if len(key) <= MAX_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class MemoryCounterStore:
    """Counters in a dict, bounded to ``max_keys`` with least-recently-used eviction.

    Safe on one event loop without locks: ``allocate`` never awaits, so one call is atomic.
    Expired counters are dropped when next touched and by a sweep every ``sweep_interval``
    seconds; deduplication records the same way, the oldest first beyond ``max_dedup_entries``
    records or ``max_dedup_bytes`` estimated bytes (see :class:`MemoryStoreStats`). ``clock``
    gives wall-clock seconds (calendar windows need the real date); tests inject a fake one.
    """

    def __init__(
        self,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        max_dedup_entries: int = DEFAULT_MAX_DEDUP_ENTRIES,
        max_dedup_bytes: int = DEFAULT_MAX_DEDUP_BYTES,
        sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self.max_dedup_entries = max_dedup_entries
        self.max_dedup_bytes = max_dedup_bytes
        self.sweep_interval = sweep_interval
        self.clock = clock
        self.stats = MemoryStoreStats()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # Records are tuples of numbers only (see _compact): the collector stops tracking such
        # tuples, so a hundred thousand records add nothing to the time of a full collection.
        self._dedup: OrderedDict[str, _Record] = OrderedDict()
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    async def allocate(
        self,
        requests: Sequence[CounterRequest],
        *,
        deduplication_id: str = "",
        dedup_seconds: float = 0.0,
    ) -> Allocation:
        return self.allocate_now(requests, deduplication_id=deduplication_id, dedup_seconds=dedup_seconds)

    def allocate_now(
        self,
        requests: Sequence[CounterRequest],
        *,
        deduplication_id: str = "",
        dedup_seconds: float = 0.0,
    ) -> Allocation:
        """:meth:`allocate` without the coroutine, for synchronous callers and tests."""
        now = self.clock()
        if now >= self._next_sweep:
            self._next_sweep = now + self.sweep_interval
            self.sweep(now)
        dedup = bool(deduplication_id) and dedup_seconds > 0
        if dedup:
            deduplication_id = _bounded_key(deduplication_id)
            recorded = self._dedup.get(deduplication_id)
            if recorded is not None and recorded[0] > now:
                self.stats.dedup_hits += 1
                return _expand(recorded)

        self.stats.allocations += 1
        # Transitions are computed against a scratch copy so a denial leaves every counter as it was.
        scratch: dict[str, State | None] = {}
        outcomes: list[tuple[CounterRequest, State | None, State, Decision]] = []
        for request in requests:
            before = scratch[request.key] if request.key in scratch else self._state(request, now)
            after, decision = transition(request, before, now, request.amount)
            scratch[request.key] = after if decision.granted else before
            outcomes.append((request, before, after, decision))

        allowed = all(decision.allowed or not request.enforce for request, _, _, decision in outcomes)
        decisions: list[Decision] = []
        if allowed:
            for request, _, after, decision in outcomes:
                if decision.granted:
                    self._store(request, after, now, decision.reset_after)
                decisions.append(decision)
        else:
            self.stats.denials += 1
            for request, before, _, decision in outcomes:
                # What was granted is not spent after all: report such a counter as it stands.
                spent = decision.allowed and decision.granted
                decisions.append(transition(request, before, now, 0)[1] if spent else decision)
        allocation = Allocation(tuple(decisions), allowed)
        if dedup:
            self._remember(deduplication_id, now + dedup_seconds, allocation)
        return allocation

    def sweep(self, now: float | None = None) -> int:
        """Drop every expired counter and deduplication record; returns the counters dropped."""
        now = self.clock() if now is None else now
        expired = [key for key, entry in self._entries.items() if entry.expires_at <= now]
        for key in expired:
            del self._entries[key]
        self.stats.expired += len(expired)
        for key in [key for key, record in self._dedup.items() if record[0] <= now]:
            self.stats.dedup_bytes -= _record_size(key, self._dedup.pop(key))
        return len(expired)

    def _state(self, request: CounterRequest, now: float) -> State | None:
        key = _bounded_key(request.key)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now or entry.shape != request.shape:
            # Lazily pruned; a limit whose window changed on reload starts afresh.
            del self._entries[key]
            if entry.expires_at <= now:
                self.stats.expired += 1
            return None
        self._entries.move_to_end(key)
        return entry.state

    def _store(self, request: CounterRequest, state: State, now: float, reset_after: float) -> None:
        key = _bounded_key(request.key)
        entries = self._entries
        if key in entries:
            entry = entries[key]
            entry.shape, entry.state, entry.expires_at = request.shape, state, now + reset_after
            entries.move_to_end(key)
            return
        while len(entries) >= self.max_keys:
            _, oldest = entries.popitem(last=False)
            if oldest.expires_at <= now:
                self.stats.expired += 1
            else:
                self.stats.evictions += 1
        entries[key] = _Entry(request.shape, state, now + reset_after)

    def _remember(self, deduplication_id: str, expires_at: float, allocation: Allocation) -> None:
        records, stats = self._dedup, self.stats
        record = _compact(expires_at, allocation)
        size = _record_size(deduplication_id, record)
        previous = records.pop(deduplication_id, None)
        if previous is not None:
            stats.dedup_bytes -= _record_size(deduplication_id, previous)
        if size > self.max_dedup_bytes:
            stats.dedup_rejected += 1
            return
        records[deduplication_id] = record
        stats.dedup_bytes += size
        while records and (len(records) > self.max_dedup_entries or stats.dedup_bytes > self.max_dedup_bytes):
            oldest_id, oldest = records.popitem(last=False)
            stats.dedup_bytes -= _record_size(oldest_id, oldest)
            stats.dedup_evictions += 1
