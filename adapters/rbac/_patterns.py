"""Value patterns of RBAC rules: exact, ``prefix*``, ``*suffix`` and ``*``, compiled once."""

from __future__ import annotations

from collections.abc import Iterable


def check_pattern(pattern: str) -> str:
    """:raises ValueError: ``*`` anywhere but alone, at the start or at the end."""
    if pattern != "*" and "*" in pattern[1:-1]:
        raise ValueError(f"pattern {pattern!r}: '*' may only stand alone, start or end a pattern")
    if len(pattern) > 1 and pattern.startswith("*") and pattern.endswith("*"):
        raise ValueError(f"pattern {pattern!r}: '*' may start or end a pattern, not both")
    return pattern


class Patterns:
    """A set of patterns; an empty set matches every value (the field was not constrained).

    A lookup is one set probe for the exact patterns plus one ``startswith`` / ``endswith`` call
    with a tuple of all prefixes / suffixes.
    """

    __slots__ = ("_any", "_exact", "_prefixes", "_suffixes")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        suffixes: list[str] = []
        anything = False
        count = 0
        for pattern in patterns:
            count += 1
            check_pattern(pattern)
            if pattern == "*":
                anything = True
            elif pattern.endswith("*"):
                prefixes.append(pattern[:-1])
            elif pattern.startswith("*"):
                suffixes.append(pattern[1:])
            else:
                exact.add(pattern)
        self._any = anything or count == 0
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)
        self._suffixes = tuple(suffixes)

    def matches(self, value: str | None) -> bool:
        if self._any:
            return True
        if value is None:
            return False
        return (
            value in self._exact
            or (bool(self._prefixes) and value.startswith(self._prefixes))
            or (bool(self._suffixes) and value.endswith(self._suffixes))
        )

    @property
    def exact_only(self) -> frozenset[str] | None:
        """The exact values when the set holds nothing else (for indexing), else None."""
        if self._any or self._prefixes or self._suffixes:
            return None
        return self._exact
