"""Record keys to partitions as Kafka's default partitioner does, without hashing a key twice.

aiokafka's ``murmur2`` is pure Python (about 9 us for a host name); the access log's key is the
destination service, so a handful of keys recur in every batch. Hashes are cached by key, bounded
in bytes; a full cache is emptied and counted.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2

__all__ = ["KEY_HASHES_MAX_BYTES", "KeyHashes"]

#: Bytes of keys (plus a fixed overhead per entry) kept with their hashes.
KEY_HASHES_MAX_BYTES = 1024 * 1024
# A dict slot, the bytes object's header and the int: roughly, per entry.
_ENTRY_OVERHEAD = 120


class KeyHashes:
    """``murmur2(key) & 0x7FFFFFFF``, the positive hash Kafka's partitioner takes modulo the
    partition count."""

    __slots__ = ("_bytes", "_cache", "hits", "max_bytes", "resets")

    def __init__(self, max_bytes: int = KEY_HASHES_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._cache: dict[bytes, int] = {}
        self._bytes = 0
        self.hits = 0
        self.resets = 0

    def __call__(self, key: bytes) -> int:
        hashed = self._cache.get(key)
        if hashed is not None:
            self.hits += 1
            return hashed
        hashed = int(murmur2(key)) & 0x7FFFFFFF
        size = len(key) + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            return hashed  # never kept: it alone would be over the bound
        if self._bytes + size > self.max_bytes:
            self._cache.clear()
            self._bytes = 0
            self.resets += 1
        self._cache[bytes(key)] = hashed
        self._bytes += size
        return hashed

    def __len__(self) -> int:
        return len(self._cache)
