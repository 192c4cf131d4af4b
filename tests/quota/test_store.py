"""The in-memory counter store: algorithms through the store, all or nothing, dedup, bounds."""

from __future__ import annotations

import gc

import pytest

from mixer.quota import Algorithm, Allocation, CounterRequest, EpochWindow, MemoryCounterStore
from mixer.quota._memory import _record_size
from tests.quota.support import FakeClock


def fixed(
    key: str,
    limit: int,
    amount: int = 1,
    seconds: float = 60,
    *,
    best_effort: bool = False,
    enforce: bool = True,
) -> CounterRequest:
    return CounterRequest(
        key,
        amount,
        limit,
        Algorithm.FIXED_WINDOW,
        window=EpochWindow(seconds),
        best_effort=best_effort,
        enforce=enforce,
    )


def rolling(key: str, limit: int, amount: int = 1, seconds: float = 60, buckets: int = 6) -> CounterRequest:
    return CounterRequest(
        key, amount, limit, Algorithm.ROLLING_WINDOW, period=seconds, bucket_seconds=seconds / buckets
    )


def gcra(key: str, limit: int, burst: int, amount: int = 1, seconds: float = 60) -> CounterRequest:
    return CounterRequest(key, amount, limit, Algorithm.GCRA, period=seconds, burst=burst)


@pytest.fixture
def clock() -> FakeClock:
    clock = FakeClock()
    clock.now = 6000.0  # the start of an epoch minute
    return clock


@pytest.fixture
def store(clock: FakeClock) -> MemoryCounterStore:
    return MemoryCounterStore(clock=clock)


def test_fixed_window_admits_the_limit_then_resets_at_the_window_end(
    store: MemoryCounterStore, clock: FakeClock
) -> None:
    answers = [store.allocate_now([fixed("k", 3)]) for _ in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    assert [a.decisions[0].remaining for a in answers] == [2, 1, 0, 0]
    assert answers[3].decisions[0].retry_after == pytest.approx(60)
    clock.advance(59.9)
    assert not store.allocate_now([fixed("k", 3)]).allowed
    clock.advance(0.1)
    assert store.allocate_now([fixed("k", 3)]).allowed


def test_rolling_window_frees_units_as_buckets_slide_out(store: MemoryCounterStore, clock: FakeClock) -> None:
    assert store.allocate_now([rolling("k", 2)]).allowed
    clock.advance(30)
    assert store.allocate_now([rolling("k", 2)]).allowed
    denied = store.allocate_now([rolling("k", 2)])
    assert not denied.allowed
    assert denied.decisions[0].retry_after == pytest.approx(30)
    clock.advance(30)  # the first bucket has left the window, the second has not
    assert store.allocate_now([rolling("k", 2)]).allowed
    assert not store.allocate_now([rolling("k", 2)]).allowed


def test_gcra_allows_the_burst_then_the_rate(store: MemoryCounterStore, clock: FakeClock) -> None:
    answers = [store.allocate_now([gcra("k", 60, burst=5)]) for _ in range(6)]
    assert [a.allowed for a in answers] == [True] * 5 + [False]
    assert answers[5].decisions[0].retry_after == pytest.approx(1.0)
    clock.advance(1.0)
    assert store.allocate_now([gcra("k", 60, burst=5)]).allowed
    assert not store.allocate_now([gcra("k", 60, burst=5)]).allowed


def test_all_or_nothing_across_requests(store: MemoryCounterStore) -> None:
    store.allocate_now([fixed("b", 1)])
    answer = store.allocate_now([fixed("a", 5), fixed("b", 1), gcra("c", 10, burst=10)])
    assert not answer.allowed
    a, b, c = answer.decisions
    assert (a.granted, a.remaining, a.retry_after) == (0, 5, None)  # reported as it stands
    assert not b.allowed
    assert (c.granted, c.remaining) == (0, 10)
    # Nothing was spent on "a" or "c".
    assert store.allocate_now([fixed("a", 1)]).allowed
    assert store.allocate_now([gcra("c", 10, burst=10, amount=10)]).allowed


def test_a_shadow_request_never_blocks_the_others(store: MemoryCounterStore) -> None:
    store.allocate_now([fixed("shadow", 1)])
    answer = store.allocate_now([fixed("a", 2), fixed("shadow", 1, enforce=False)])
    assert answer.allowed
    assert answer.decisions[0].remaining == 1
    assert not answer.decisions[1].allowed


def test_best_effort_grants_what_is_left(store: MemoryCounterStore) -> None:
    store.allocate_now([fixed("k", 5, amount=3)])
    answer = store.allocate_now([fixed("k", 5, amount=4, best_effort=True)])
    assert answer.allowed
    assert answer.decisions[0].granted == 2
    assert store.allocate_now([fixed("k", 5, amount=1, best_effort=True)]).decisions[0].granted == 0


def test_a_retry_with_the_same_dedup_id_spends_nothing(store: MemoryCounterStore, clock: FakeClock) -> None:
    first = store.allocate_now([fixed("k", 2)], deduplication_id="req-1", dedup_seconds=1)
    again = store.allocate_now([fixed("k", 2)], deduplication_id="req-1", dedup_seconds=1)
    assert again.replayed
    assert again.decisions == first.decisions
    assert store.stats.dedup_hits == 1
    assert store.allocate_now([fixed("k", 2)], deduplication_id="req-2", dedup_seconds=1).allowed
    assert not store.allocate_now([fixed("k", 2)]).allowed
    clock.advance(1)
    # Past the dedup window the same id is a new request.
    assert not store.allocate_now([fixed("k", 2)], deduplication_id="req-1", dedup_seconds=1).replayed


def test_keys_are_bounded_with_lru_eviction_counted(clock: FakeClock) -> None:
    store = MemoryCounterStore(max_keys=2, clock=clock)
    store.allocate_now([fixed("a", 1)])
    store.allocate_now([fixed("b", 1)])
    store.allocate_now([fixed("a", 5)])  # a is now the most recently used (denied, still touched)
    store.allocate_now([fixed("c", 1)])
    assert len(store) == 2
    assert store.stats.evictions == 1
    assert store.allocate_now([fixed("b", 1)]).allowed  # b was evicted: a fresh counter
    assert not store.allocate_now([fixed("c", 1)]).allowed


def test_dedup_records_leave_the_collector_nothing_to_walk(clock: FakeClock) -> None:
    store = MemoryCounterStore(clock=clock)
    first = store.allocate_now([fixed("k", 5), fixed("j", 5)], deduplication_id="req", dedup_seconds=10)
    denied = store.allocate_now([fixed("d", 1, 2)], deduplication_id="big", dedup_seconds=10)
    assert denied.decisions[0].retry_after is not None
    # The collector stops tracking a tuple of untracked values when it first meets one.
    gc.collect()
    assert not any(gc.is_tracked(record) for record in store._dedup.values())
    again = store.allocate_now([fixed("k", 5), fixed("j", 5)], deduplication_id="req", dedup_seconds=10)
    assert again.replayed
    assert again.allowed == first.allowed
    assert again.decisions == first.decisions
    assert store.allocate_now([fixed("d", 1, 2)], deduplication_id="big", dedup_seconds=10) == Allocation(
        denied.decisions, False, replayed=True
    )


def test_dedup_records_are_bounded(clock: FakeClock) -> None:
    store = MemoryCounterStore(max_dedup_entries=1, clock=clock)
    store.allocate_now([fixed("k", 9)], deduplication_id="one", dedup_seconds=10)
    store.allocate_now([fixed("k", 9)], deduplication_id="two", dedup_seconds=10)
    assert store.stats.dedup_evictions == 1
    assert not store.allocate_now([fixed("k", 9)], deduplication_id="one", dedup_seconds=10).replayed


def test_expired_counters_are_pruned(clock: FakeClock) -> None:
    store = MemoryCounterStore(sweep_interval=30, clock=clock)
    store.allocate_now([fixed("a", 1, seconds=10)])
    store.allocate_now([fixed("b", 1, seconds=600)])
    clock.advance(31)
    store.allocate_now([fixed("c", 1)])  # the sweep runs first
    assert len(store) == 2
    assert store.stats.expired == 1


def test_a_changed_window_starts_the_counter_afresh(store: MemoryCounterStore) -> None:
    store.allocate_now([fixed("k", 1, seconds=60)])
    assert not store.allocate_now([fixed("k", 1, seconds=60)]).allowed
    assert store.allocate_now([fixed("k", 1, seconds=3600)]).allowed


async def test_allocate_is_the_async_form(store: MemoryCounterStore) -> None:
    answer = await store.allocate([fixed("k", 1)])
    assert answer.allowed


def test_dedup_records_are_bounded_by_bytes(clock: FakeClock) -> None:
    store = MemoryCounterStore(clock=clock)
    store.allocate_now([fixed("k", 9)], deduplication_id="one", dedup_seconds=10)
    one_record = store.stats.dedup_bytes
    assert one_record > 0
    # Room for two one-decision records: the third pushes the oldest out.
    store.max_dedup_bytes = 2 * one_record
    store.allocate_now([fixed("k", 9)], deduplication_id="two", dedup_seconds=10)
    store.allocate_now([fixed("k", 9)], deduplication_id="six", dedup_seconds=10)
    assert store.stats.dedup_evictions == 1
    assert store.stats.dedup_bytes == 2 * one_record
    assert store.allocate_now([fixed("k", 9)], deduplication_id="six", dedup_seconds=10).replayed
    assert not store.allocate_now([fixed("k", 9)], deduplication_id="one", dedup_seconds=10).replayed


def test_a_record_larger_than_the_byte_budget_is_not_kept(clock: FakeClock) -> None:
    store = MemoryCounterStore(max_dedup_bytes=100, clock=clock)
    first = store.allocate_now([fixed("k", 9)], deduplication_id="one", dedup_seconds=10)
    assert first.allowed
    assert store.stats.dedup_rejected == 1
    assert store.stats.dedup_bytes == 0
    assert not store.allocate_now([fixed("k", 9)], deduplication_id="one", dedup_seconds=10).replayed


def test_dedup_bytes_return_to_zero_when_records_expire(clock: FakeClock) -> None:
    store = MemoryCounterStore(sweep_interval=5, clock=clock)
    for dedup_id in ("a", "b", "c"):
        store.allocate_now([fixed("k", 9), fixed("j", 9)], deduplication_id=dedup_id, dedup_seconds=2)
    # Replacing a record (an expired one, asked again) leaves one record's bytes, not two.
    clock.advance(3)
    store.allocate_now([fixed("k", 9), fixed("j", 9)], deduplication_id="a", dedup_seconds=1)
    assert len(store._dedup) == 3
    assert store.stats.dedup_bytes == sum(_record_size(key, record) for key, record in store._dedup.items())
    clock.advance(10)
    store.sweep()
    assert store.stats.dedup_bytes == 0
    assert store.stats.dedup_evictions == 0
