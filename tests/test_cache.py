"""mixer.cache: the byte-bounded LRU every cache of caller-derived data uses."""

from __future__ import annotations

import pytest

from mixer.cache import ENTRY_OVERHEAD, ByteLRU, cache_stats, estimate_size


def sized(key: str, value: str) -> int:
    return len(value)


def test_it_evicts_the_least_recently_used_past_max_bytes_and_counts() -> None:
    cache: ByteLRU[str, str] = ByteLRU(4 * (100 + ENTRY_OVERHEAD), size=sized)
    for name in "abcd":
        assert cache.put(name, "x" * 100)
    assert cache.get("a") == "x" * 100  # a is now the most recently used
    cache.put("e", "x" * 100)
    assert "b" not in cache
    assert [name in cache for name in "acde"] == [True] * 4
    assert cache.bytes <= cache.max_bytes
    assert (cache.hits, cache.misses, cache.evictions) == (1, 0, 1)
    assert cache.get("b") is None
    assert cache.misses == 1


def test_an_entry_larger_than_a_quarter_of_the_bound_is_refused() -> None:
    cache: ByteLRU[str, str] = ByteLRU(1000, size=sized)
    cache.put("small", "x")
    assert not cache.put("huge", "x" * 1000)
    assert "huge" not in cache
    assert "small" in cache  # one large entry does not flush the cache
    assert cache.rejected == 1


def test_replacing_an_entry_keeps_the_byte_count_exact() -> None:
    cache: ByteLRU[str, str] = ByteLRU(10_000, size=sized)
    cache.put("k", "x" * 100)
    cache.put("k", "x" * 10)
    assert cache.bytes == 10 + ENTRY_OVERHEAD
    assert cache.pop("k") == "x" * 10
    assert cache.bytes == 0
    assert len(cache) == 0


def test_max_entries_bounds_the_count_as_well() -> None:
    cache: ByteLRU[int, str] = ByteLRU(1 << 20, max_entries=3)
    for n in range(5):
        cache.put(n, "v")
    assert len(cache) == 3
    assert cache.evictions == 2


def test_zero_bytes_disables_it_and_negative_bounds_are_refused() -> None:
    off: ByteLRU[str, str] = ByteLRU(0)
    assert not off.put("k", "v")
    assert off.get("k") is None
    with pytest.raises(ValueError):
        ByteLRU(-1)


def test_named_caches_are_listed_with_their_counters() -> None:
    cache: ByteLRU[str, str] = ByteLRU(10_000, name="test.listed")
    cache.put("k", "v")
    cache.get("k")
    stats = cache_stats()["test.listed"]
    assert (stats.entries, stats.hits, stats.max_bytes) == (1, 1, 10_000)
    assert stats.bytes == cache.bytes > 0


def test_estimate_size_counts_nested_strings() -> None:
    small = estimate_size({"path": "/"})
    large = estimate_size({"path": "/" + "p" * 100_000})
    assert large - small >= 100_000
    assert estimate_size(("a" * 1000, ["b" * 1000])) >= 2000
