"""The answers of the parts of a Check that spend no quota, cached as a proxy would cache them.

A precondition's answer (check rules' matches, header operations and the answers of handlers that
spend nothing: lists, RBAC, deniers) is a function of the attributes it read, as long as the
configuration and the handlers' state stay the same. It is cached under the values of exactly
those attributes, for the validity the handlers returned (the minimum over them: duration and
use count, as Mixer's proxy cache), in a :class:`~mixer.cache.ByteLRU`.

- A lookup does not know in advance which attributes a request's answer will depend on, so the
  cache remembers each distinct set of referenced attributes (a *shape*, bounded in number) and
  tries the request's values under each.
- Plan checks and quotas are never cached: they spend quota, and quotas stay exact. A cached
  entry lists the plan-check actions its rules selected, which the Check then builds and calls.
- An answer no handler let be cached (valid duration 0 or a use count of 1) is not stored; that
  covers every failure the runtime makes in place of a handler.
- Everything is dropped when a runtime of a newer configuration starts and whenever a handler
  says its answers changed (``HandlerEnv.answers_changed``, e.g. a list refreshed); a runtime an
  older configuration built stops using the cache from then on.

The counters (hits, misses, evictions, drops) and the bytes held are in :class:`RuntimeStats`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from mixer.adapter import CheckResult
from mixer.attributes import AttributeValue, Condition, reference_order
from mixer.cache import ByteLRU, estimate_size
from mixer.decision import HeaderOperationResult
from mixer.frozen import quick_init
from mixer.runtime._index import CheckAction
from mixer.runtime._outcomes import RuntimeStats

#: How many distinct sets of referenced attributes the cache tries a request's values under.
MAX_SHAPES: Final = 64

#: (attribute, map key or None) of each referenced attribute, sorted.
Shape = tuple[tuple[str, str | None], ...]
Refs = tuple[tuple[tuple[str, str | None], Condition], ...]

_NO_MAP: Final = object()
_NOT_A_MAP: Final = object()
#: What a reference to a plan-check action costs in an entry: the action itself is the config's.
_POINTER: Final = 8


@dataclass(slots=True)
class CachedPrecondition:
    """What the precondition of a Check decided, without its plan checks (slots hold None)."""

    names: tuple[str, ...]
    results: tuple[CheckResult | None, ...]
    #: The plan-check actions the rules selected, by slot (relative to the first of ``names``).
    spending: tuple[tuple[int, CheckAction], ...]
    request_ops: tuple[HeaderOperationResult, ...]
    response_ops: tuple[HeaderOperationResult, ...]
    refs: Refs
    #: By the cache's clock (seconds).
    expires: float
    #: Uses left after the answer that was cached.
    uses: int
    size: int = 0


@quick_init
@dataclass(frozen=True, slots=True)
class CacheHit:
    entry: CachedPrecondition
    #: What is left of the validity, for the answer given from the cache.
    seconds: float
    uses: int


class CheckCache:
    """A byte-bounded cache of precondition answers, shared by a runtime and those built from it."""

    __slots__ = ("_clock", "_generation", "_lru", "_next_shape", "_shapes", "_stats", "epoch")

    def __init__(self, max_bytes: int, stats: RuntimeStats, clock: Callable[[], float]) -> None:
        self._lru: ByteLRU[tuple[int, tuple[object, ...]], CachedPrecondition] = ByteLRU(
            max_bytes, size=_entry_size
        )
        self._stats = stats
        self._clock = clock
        self._shapes: OrderedDict[Shape, int] = OrderedDict()
        self._next_shape = 0
        self._generation = 0
        #: Counts the times the cache was emptied: an answer worked out across one is stale.
        self.epoch = 0

    @property
    def max_bytes(self) -> int:
        return self._lru.max_bytes

    def resize(self, max_bytes: int) -> None:
        """Bound the cache to ``max_bytes`` from now on (0 turns it off); drops every entry."""
        self.clear()
        self._lru.max_bytes = max_bytes

    def serves(self, generation: int) -> bool:
        """Whether a runtime of ``generation`` may use the cache: on (bytes above 0) and built
        from the newest configuration that started or used it (a newer one drops the entries)."""
        if self._lru.max_bytes == 0:
            return False
        if generation > self._generation:
            self.started(generation)
        return generation == self._generation

    def started(self, generation: int) -> None:
        """A runtime of ``generation`` starts serving: what older configurations decided goes."""
        if generation > self._generation:
            self._generation = generation
            self.clear()

    def clear(self) -> None:
        """Drop every entry (a handler's answers changed, or the configuration did)."""
        self._stats.check_cache_drops += len(self._lru)
        self.epoch += 1
        self._lru.clear()
        self._shapes.clear()
        self._stats.check_cache_bytes = 0

    def lookup(self, values: Mapping[str, AttributeValue]) -> CacheHit | None:
        """The entry cached for a request with these attribute values, if any is still valid."""
        lru = self._lru
        stats = self._stats
        for shape, shape_id in reversed(self._shapes.items()):
            key = (shape_id, _key_values(shape, values))
            # One lookup: hashing the key (an IP address hashes in Python) is most of its cost.
            entry = lru.get(key)
            if entry is None:
                continue
            left = entry.expires - self._clock()
            if left <= 0:
                self._drop(key)
                continue
            uses = entry.uses
            entry.uses -= 1
            if entry.uses <= 0:
                self._drop(key)
            stats.check_cache_hits += 1
            return CacheHit(entry, left, uses)
        stats.check_cache_misses += 1
        return None

    def store(
        self,
        values: Mapping[str, AttributeValue],
        entry: CachedPrecondition,
        valid_seconds: float,
        epoch: int,
    ) -> None:
        """Cache ``entry`` for ``valid_seconds`` under the values of the attributes it read,
        unless the cache was emptied since ``epoch`` (when its answer was being worked out)."""
        if epoch != self.epoch:
            self._stats.check_cache_drops += 1
            return
        entry.expires = self._clock() + valid_seconds
        shape: Shape = tuple(sorted((ref for ref, _ in entry.refs), key=reference_order))
        shape_id = self._shapes.get(shape)
        if shape_id is None:
            if len(self._shapes) >= MAX_SHAPES:
                # The entries of the forgotten shape can no longer be found: they age out.
                self._shapes.popitem(last=False)
                self._stats.check_cache_drops += 1
            shape_id = self._shapes[shape] = self._next_shape
            self._next_shape += 1
        else:
            self._shapes.move_to_end(shape)
        entry.size = _POINTER * len(entry.spending) + estimate_size(
            (entry.names, entry.results, entry.request_ops, entry.response_ops, entry.refs)
        )
        lru = self._lru
        evictions, rejected = lru.evictions, lru.rejected
        lru.put((shape_id, _key_values(shape, values)), entry)
        stats = self._stats
        stats.check_cache_evictions += lru.evictions - evictions
        stats.check_cache_drops += lru.rejected - rejected
        stats.check_cache_bytes = lru.bytes

    def _drop(self, key: tuple[int, tuple[object, ...]]) -> None:
        self._lru.pop(key)
        self._stats.check_cache_drops += 1
        self._stats.check_cache_bytes = self._lru.bytes

    def __len__(self) -> int:
        return len(self._lru)


def _key_values(shape: Shape, values: Mapping[str, AttributeValue]) -> tuple[object, ...]:
    """The request's value of each attribute of ``shape``, hashable and told apart by type
    (``True``, ``1`` and ``1.0`` are equal in Python, not as attribute values)."""
    out: list[object] = []
    for name, map_key in shape:
        value = values.get(name)
        if map_key is not None:
            if value is None:
                out.append(_NO_MAP)
                continue
            try:
                out.append(value.get(map_key))  # type: ignore[union-attr]
            except AttributeError:
                out.append(_NOT_A_MAP)
        elif value is None or isinstance(value, str):
            out.append(value)
        elif isinstance(value, Mapping):
            out.append(tuple(sorted(value.items())))
        else:
            out.append((type(value).__name__, value))
    return tuple(out)


def _entry_size(key: tuple[int, tuple[object, ...]], entry: CachedPrecondition) -> int:
    return estimate_size(key) + entry.size
