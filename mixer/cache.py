"""A least-recently-used cache bounded in bytes, for anything that holds caller-derived data.

A count bound is no bound on memory when entries hold what callers send (paths, keys, tag
values): 4,096 entries of 100 KB are 400 MB. :class:`ByteLRU` bounds the sum of its entries'
estimated sizes (and optionally their number), evicts the least recently used first, refuses an
entry larger than a quarter of the bound outright, and counts hits, misses, evictions and
refusals. Every cache built with a ``name`` is listed by :func:`cache_stats` for diagnostics.

It is not thread-safe: use one from one thread (the event loop) or guard it.
"""

from __future__ import annotations

import sys
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["ByteLRU", "CacheStats", "cache_stats", "estimate_size"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: The bookkeeping an entry costs beyond its key and value (the OrderedDict node and the tuple).
ENTRY_OVERHEAD = 120
#: How deep :func:`estimate_size` looks into nested containers; deeper ones count as their shell.
_MAX_DEPTH = 4

_registry: weakref.WeakValueDictionary[str, ByteLRU[Any, Any]] = weakref.WeakValueDictionary()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of a cache's counters."""

    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int
    #: Entries not stored because one alone exceeded a quarter of ``max_bytes``.
    rejected: int


def estimate_size(value: Any, _depth: int = 0) -> int:
    """An estimate, in bytes, of the memory ``value`` keeps alive: strings and bytes by their
    size, containers by their shell plus their items (a few levels deep), objects with slots or
    a ``__dict__`` by their fields. Shared objects are counted each time they are reached, so the
    estimate errs on the high side."""
    size = sys.getsizeof(value)
    if _depth >= _MAX_DEPTH or isinstance(value, str | bytes | bytearray | int | float | bool):
        return size
    depth = _depth + 1
    if isinstance(value, Mapping):
        return size + sum(estimate_size(k, depth) + estimate_size(v, depth) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return size + sum(estimate_size(item, depth) for item in value)
    fields = getattr(value, "__dict__", None)
    if fields is not None:
        return size + estimate_size(fields, depth)
    slots = getattr(type(value), "__slots__", ())
    if isinstance(slots, str):
        slots = (slots,)
    return size + sum(estimate_size(getattr(value, name, None), depth) for name in slots)


class ByteLRU(Generic[K, V]):
    """An LRU map bounded by the estimated bytes of its entries (and optionally their number).

    ``size`` estimates one entry (key and value); by default :func:`estimate_size` of both.
    ``max_bytes`` 0 disables the cache: nothing is stored, every lookup is a miss.
    """

    def __init__(
        self,
        max_bytes: int,
        *,
        max_entries: int | None = None,
        size: Callable[[K, V], int] | None = None,
        name: str = "",
    ) -> None:
        if max_bytes < 0 or (max_entries is not None and max_entries < 0):
            raise ValueError("max_bytes and max_entries must not be negative")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.name = name
        self._size = size if size is not None else _default_size
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.rejected = 0
        if name:
            _registry[name] = self

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        """The value for ``key`` (now the most recently used), or None; counts a hit or a miss."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: K, value: V) -> bool:
        """Store ``value`` under ``key``, evicting the least recently used entries past the
        bounds. False when the entry alone is too large to cache (it is then not stored)."""
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        cost = self._size(key, value) + ENTRY_OVERHEAD
        if cost * 4 > self.max_bytes or self.max_entries == 0:
            # One entry may not take over the cache: it would evict everything for one use.
            self.rejected += 1
            return False
        entries[key] = (value, cost)
        self.bytes += cost
        limit = self.max_entries
        while self.bytes > self.max_bytes or (limit is not None and len(entries) > limit):
            _, (_, evicted) = entries.popitem(last=False)
            self.bytes -= evicted
            self.evictions += 1
        return True

    def pop(self, key: K) -> V | None:
        """Remove ``key``; its value, or None (not counted as a hit, miss or eviction)."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self.bytes -= entry[1]
        return entry[0]

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def stats(self) -> CacheStats:
        return CacheStats(
            len(self._entries),
            self.bytes,
            self.max_bytes,
            self.hits,
            self.misses,
            self.evictions,
            self.rejected,
        )

    def __repr__(self) -> str:
        size = f"{len(self._entries)} entries, {self.bytes}/{self.max_bytes} B"
        return f"{type(self).__name__}({self.name!r}, {size})"


def _default_size(key: Any, value: Any) -> int:
    return estimate_size(key) + estimate_size(value)


def cache_stats() -> dict[str, CacheStats]:
    """The counters of every live named cache in the process, by name."""
    return {name: cache.stats() for name, cache in sorted(_registry.items())}
