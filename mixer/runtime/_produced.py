"""Attributes that check handlers produce (a verified token's claims), layered over a request's bag."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from mixer.attributes import AttributeManifest, AttributeValue, Condition, TrackingBag, conforms
from mixer.expr import CompiledExpression


class _Layered(Mapping[str, AttributeValue]):
    """``produced`` over ``base`` without copying ``base`` (the wire codec's maps decode lazily)."""

    __slots__ = ("_base", "_produced")

    def __init__(self, produced: Mapping[str, AttributeValue], base: Mapping[str, AttributeValue]) -> None:
        self._produced = produced
        self._base = base

    def __getitem__(self, name: str) -> AttributeValue:
        try:
            return self._produced[name]
        except KeyError:
            return self._base[name]

    def get(self, name: str, default: AttributeValue | None = None) -> AttributeValue | None:  # type: ignore[override]
        value = self._produced.get(name)
        return self._base.get(name, default) if value is None else value

    def __contains__(self, name: object) -> bool:
        return name in self._produced or name in self._base

    def __iter__(self) -> Iterator[str]:
        yield from self._produced
        for name in self._base:
            if name not in self._produced:
                yield name

    def __len__(self) -> int:
        return len(self._produced) + sum(1 for name in self._base if name not in self._produced)


class ProducedBag(TrackingBag):
    """A tracking bag over a request's attributes with produced attributes layered on top.

    It carries over the references the producing phase recorded. Reading a produced attribute
    records those producing-phase references instead of the attribute itself: a proxy caches a
    Check answer under attributes it sent, and a produced value is a function of what its
    producer read (the token), never something the proxy could compare.
    """

    __slots__ = ("_produced", "_sources")

    def __init__(self, origin: TrackingBag, produced: Mapping[str, AttributeValue]) -> None:
        super().__init__(_Layered(produced, origin._values))
        self._produced = produced
        self._sources: dict[tuple[str, str | None], Condition] = dict(origin._refs)
        self._refs.update(self._sources)

    def get(self, name: str) -> AttributeValue | None:
        value = self._produced.get(name)
        if value is None:
            return super().get(name)
        self._refs.update(self._sources)
        return value

    def get_map_value(self, name: str, key: str) -> str | None:
        value = self._produced.get(name)
        if value is None:
            return super().get_map_value(name, key)
        self._refs.update(self._sources)
        try:
            return value.get(key)  # type: ignore[union-attr]
        except AttributeError:
            raise TypeError(f"attribute {name!r} is not a string map") from None

    @property
    def produced(self) -> Mapping[str, AttributeValue]:
        return self._produced


def conforming(
    attributes: Mapping[str, AttributeValue], manifest: AttributeManifest
) -> tuple[dict[str, AttributeValue], list[str]]:
    """The attributes whose values have their manifest type (undeclared names pass: no compiled
    expression can read them), and the names of those dropped."""
    kept: dict[str, AttributeValue] = {}
    dropped: list[str] = []
    for name, value in attributes.items():
        value_type = manifest.get(name)
        if value is None or (value_type is not None and not conforms(value, value_type)):
            dropped.append(name)
        else:
            kept[name] = value
    return kept, dropped


class FieldSources(Mapping[str, frozenset[str]]):
    """For each field, the attributes its expression read on the Check's attributes, present or
    absent (a caller who leaves an attribute out chooses the fallback as surely as one who sends
    it). Evaluated on first use, since only plan handlers without an API key ask. A field that
    fails to evaluate is missing, so it counts as unverified.

    The reads go to a separate tracking view over the same values: they are not the Check's
    references (the instance was already built from the bag).
    """

    __slots__ = ("_fields", "_known", "_values")

    def __init__(self, fields: Mapping[str, CompiledExpression], bag: TrackingBag) -> None:
        self._fields = fields
        self._values = bag._values
        self._known: dict[str, frozenset[str] | None] = {}

    def _sources(self, name: str) -> frozenset[str] | None:
        if name in self._known:
            return self._known[name]
        expression = self._fields.get(name)
        sources: frozenset[str] | None = None
        if expression is not None:
            probe = TrackingBag(self._values)
            try:
                expression.evaluate(probe)
            except Exception:  # noqa: S110 - the build of the instance already logged this failure
                pass
            else:
                sources = frozenset(read for read, _ in probe._refs)
        self._known[name] = sources
        return sources

    def __getitem__(self, name: str) -> frozenset[str]:
        sources = self._sources(name)
        if sources is None:
            raise KeyError(name)
        return sources

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._fields if self._sources(name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)
