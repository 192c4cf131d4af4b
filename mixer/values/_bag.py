"""Attribute bags: the one model of a request inside the server, whatever protocol it came in on."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from mixer.cache import ByteLRU
from mixer.frozen import quick_init
from mixer.values._types import AttributeValue


class Condition(enum.IntEnum):
    """How a decision depended on an attribute (istio.mixer.v1.ReferencedAttributes.Condition)."""

    CONDITION_UNSPECIFIED = 0
    ABSENCE = 1
    EXACT = 2
    REGEX = 3


@quick_init
@dataclass(frozen=True, slots=True)
class AttributeMatch:
    """One attribute a decision read: ``map_key`` is set for a single key of a string map."""

    name: str
    condition: Condition
    map_key: str | None = None


class AttributeBag:
    """A read-only view of one request's attributes.

    The bag wraps the mapping it is given without copying it. Values are the Python forms listed
    in :data:`mixer.values.AttributeValue`; a STRING_MAP value may be any ``Mapping[str, str]``
    (the wire codec hands in lazy maps that decode on first use).

    Reads go through :meth:`get` and :meth:`get_map_value` so that a :class:`TrackingBag` can
    record them; compiled expressions use nothing else.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, AttributeValue] | None = None) -> None:
        self._values: Mapping[str, AttributeValue] = values if values is not None else {}

    def get(self, name: str) -> AttributeValue | None:
        """The attribute's value, or None when the bag lacks it."""
        return self._values.get(name)

    def get_map_value(self, name: str, key: str) -> str | None:
        """One key of a STRING_MAP attribute, or None when the map or the key is absent."""
        value = self._values.get(name)
        if value is None:
            return None
        # EAFP: an isinstance check against the Mapping ABC costs more than the lookup itself.
        try:
            return value.get(key)  # type: ignore[union-attr]
        except AttributeError:
            raise TypeError(f"attribute {name!r} is not a string map") from None

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def names(self) -> list[str]:
        return list(self._values)

    def to_dict(self) -> dict[str, AttributeValue]:
        """A plain copy, string maps included as dicts (for logs, JSON and tests; not the hot path)."""
        return {
            name: dict(value) if isinstance(value, Mapping) else value for name, value in self._values.items()
        }

    def tracking(self) -> TrackingBag:
        """A view over the same values that records every read (for Check's referenced_attributes)."""
        return TrackingBag(self._values)

    def with_overrides(self, overrides: Mapping[str, AttributeValue]) -> AttributeBag:
        """A new bag with ``overrides`` layered over this one (used by protocol adapters)."""
        merged = dict(self._values)
        merged.update(overrides)
        return AttributeBag(merged)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({sorted(self._values)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AttributeBag):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


class TrackingBag(AttributeBag):
    """An :class:`AttributeBag` that records each read as an :class:`AttributeMatch`.

    Present attributes are EXACT, missing ones ABSENCE; for a string-map key, one match per key
    read (EXACT or ABSENCE for the key), and the map itself is not listed unless read whole.
    """

    __slots__ = ("_refs",)

    def __init__(self, values: Mapping[str, AttributeValue] | None = None) -> None:
        super().__init__(values)
        self._refs: dict[tuple[str, str | None], Condition] = {}

    def get(self, name: str) -> AttributeValue | None:
        value = self._values.get(name)
        self._refs[(name, None)] = Condition.ABSENCE if value is None else Condition.EXACT
        return value

    def get_map_value(self, name: str, key: str) -> str | None:
        value = self._values.get(name)
        if value is None:
            self._refs[(name, None)] = Condition.ABSENCE
            return None
        try:
            item = value.get(key)  # type: ignore[union-attr]
        except AttributeError:
            raise TypeError(f"attribute {name!r} is not a string map") from None
        self._refs[(name, key)] = Condition.ABSENCE if item is None else Condition.EXACT
        return item

    def tracking(self) -> TrackingBag:
        return self

    def referenced(self) -> list[AttributeMatch]:
        """Every read so far, sorted by name then key."""
        # A policy reads the same attributes on most calls, so the sorted matches of each set of
        # reads are kept: building and sorting them cost four times the lookup.
        key = tuple(self._refs.items())
        known = _REFERENCED.get(key)
        if known is None:
            known = _sorted_matches(self._refs)
            _REFERENCED.put(key, known)
        return list(known)

    def clear_references(self) -> None:
        self._refs.clear()


#: The most bytes the sorted matches of distinct sets of reads may take (``cache_stats``).
REFERENCED_MAX_BYTES = 1 << 20
_REFERENCED: ByteLRU[tuple[tuple[tuple[str, str | None], Condition], ...], tuple[AttributeMatch, ...]] = (
    ByteLRU(REFERENCED_MAX_BYTES, name="attribute reads: sorted matches")
)


def reference_order(ref: tuple[str, str | None]) -> tuple[str, bool, str]:
    """The order of referenced attributes: by name, the whole attribute before its map keys."""
    name, key = ref
    return (name, key is not None, key or "")


def _sorted_matches(refs: Mapping[tuple[str, str | None], Condition]) -> tuple[AttributeMatch, ...]:
    return tuple(
        AttributeMatch(name, refs[(name, key)], key) for name, key in sorted(refs, key=reference_order)
    )
