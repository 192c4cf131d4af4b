"""Cached key hashes equal aiokafka's murmur2 (the default partitioner's) on many keys."""

from __future__ import annotations

from aiokafka.partitioner import murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.kafka._hashing import KeyHashes


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.binary(max_size=64), min_size=1, max_size=40))
def test_equal_to_murmur2(keys: list[bytes]) -> None:
    hashes = KeyHashes(max_bytes=2_000)
    # Each key twice: the second answer comes from the cache (or after a reset, fresh again).
    for key in keys + keys:
        assert hashes(key) == murmur2(key) & 0x7FFFFFFF


def test_service_names_hit_and_the_cache_is_bounded() -> None:
    hashes = KeyHashes(max_bytes=10_000)
    names = [f"svc-{i}.default.svc.cluster.local".encode() for i in range(500)]
    for name in names:
        assert hashes(name) == murmur2(name) & 0x7FFFFFFF
    assert hashes.resets > 0
    assert len(hashes) * (len(names[0]) + 100) <= 10_000 + 1_000
    before = hashes.hits
    assert hashes(names[-1]) == murmur2(names[-1]) & 0x7FFFFFFF
    assert hashes.hits == before + 1
    # A key larger than the whole bound is hashed but not kept.
    huge = b"k" * 20_000
    assert hashes(huge) == murmur2(huge) & 0x7FFFFFFF
    assert huge not in hashes._cache
