"""Topic and key formats: text with ``{placeholders}`` filled from each instance's fields.

Syntax (checked when config loads)::

    mixer-{template}
    {variables[destinationName] | dimensions[destination_service] | "unknown"}

A placeholder holds one or more alternatives separated by ``|``; the first that has a value wins,
as in the expression language. An alternative is a field reference or a double-quoted literal:

- ``template`` (``logentry``, ``metric``, ``tracespan``) and ``name`` (the instance name);
- any field of those templates (``severity``, ``span_name``, ``monitored_resource_type``, ...);
- an entry of a map field: ``variables[key]``, ``dimensions[key]``, ``span_tags[key]``,
  ``monitored_resource_dimensions[key]`` (the key is taken literally up to ``]``).

``{{`` and ``}}`` stand for literal braces. A field the instance lacks (another template's field,
an absent map key, a ``None`` value) has no value.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mixer.attributes import to_jsonable
from mixer.templates import Instance, LogEntryInstance, MetricInstance, TraceSpanInstance

__all__ = ["FIELD_NAMES", "MAP_FIELDS", "FormatError", "InstanceFormat"]

#: The templates whose fields a format may name.
_TEMPLATE_TYPES: tuple[type[Instance], ...] = (LogEntryInstance, MetricInstance, TraceSpanInstance)
#: Fields that hold a map and must be indexed.
MAP_FIELDS = frozenset({"variables", "dimensions", "span_tags", "monitored_resource_dimensions"})
#: Every name a reference may start with.
FIELD_NAMES = frozenset({"template"} | {f.name for t in _TEMPLATE_TYPES for f in dataclasses.fields(t)})
_REFERENCE = re.compile(r"([a-z_][a-z0-9_]*)(?:\[([^\]]*)\])?")
_LITERAL = re.compile(r'"([^"]*)"')


class FormatError(ValueError):
    """A format that does not parse or names no field of the adapter's templates."""


@dataclass(frozen=True, slots=True)
class _Reference:
    field: str
    key: str | None

    def value(self, instance: Instance) -> str | None:
        if self.field == "template":
            return instance.template
        value = getattr(instance, self.field, None)
        if self.key is not None:
            value = value.get(self.key) if isinstance(value, Mapping) else None
        return None if value is None else _text(value)


@dataclass(frozen=True, slots=True)
class _Placeholder:
    alternatives: tuple[_Reference | str, ...]

    def value(self, instance: Instance) -> str | None:
        for alternative in self.alternatives:
            if isinstance(alternative, str):
                return alternative
            value = alternative.value(instance)
            if value is not None:
                return value
        return None


def _text(value: Any) -> str:
    plain = to_jsonable(value)
    if isinstance(plain, str):
        return plain
    # JSON spelling for the rest: true/false, numbers, and objects for maps.
    return json.dumps(plain, separators=(",", ":"), sort_keys=True)


class InstanceFormat:
    """A parsed format; :meth:`render` fills it from one instance.

    :raises FormatError: ``text`` does not parse, or a reference names no known field, indexes a
        field that is not a map, or leaves a map field unindexed.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: tuple[str | _Placeholder, ...] = tuple(_parse(text))

    @property
    def literal_text(self) -> str:
        """The text outside placeholders, with braces unescaped."""
        return "".join(part for part in self.parts if isinstance(part, str))

    @property
    def is_constant(self) -> bool:
        return all(isinstance(part, str) for part in self.parts)

    def render(self, instance: Instance) -> str | None:
        """The filled text, or None when a placeholder has no value (and no literal fallback)."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = part.value(instance)
            if value is None:
                return None
            out.append(value)
        return "".join(out)

    def __repr__(self) -> str:
        return f"InstanceFormat({self.text!r})"


def _parse(text: str) -> list[str | _Placeholder]:
    parts: list[str | _Placeholder] = []
    literal: list[str] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if text.startswith("{{", pos) or text.startswith("}}", pos):
            literal.append(char)
            pos += 2
        elif char == "}":
            raise FormatError(f"unmatched '}}' at position {pos} in {text!r} (write '}}}}' for a brace)")
        elif char == "{":
            end = _placeholder_end(text, pos)
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(_parse_placeholder(text[pos + 1 : end], text))
            pos = end + 1
        else:
            literal.append(char)
            pos += 1
    if literal:
        parts.append("".join(literal))
    return parts


def _placeholder_end(text: str, start: int) -> int:
    # Quotes and brackets may hold braces, so skip over them to find the closing one.
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char in '"[':
            close = text.find('"' if char == '"' else "]", pos + 1)
            if close < 0:
                break
            pos = close + 1
        elif char == "}":
            return pos
        elif char == "{":
            raise FormatError(f"'{{' inside a placeholder at position {pos} in {text!r}")
        else:
            pos += 1
    raise FormatError(f"placeholder at position {start} is not closed in {text!r}")


def _parse_placeholder(body: str, text: str) -> _Placeholder:
    alternatives: list[_Reference | str] = []
    for raw in _split_alternatives(body):
        item = raw.strip()
        if literal := _LITERAL.fullmatch(item):
            alternatives.append(literal.group(1))
            continue
        ref = _REFERENCE.fullmatch(item)
        if ref is None:
            raise FormatError(
                f"{{{body}}} in {text!r}: {item!r} is neither a field (name, variables[key], ...) "
                'nor a "quoted" literal'
            )
        field, key = ref.group(1), ref.group(2)
        if field not in FIELD_NAMES:
            known = ", ".join(sorted(FIELD_NAMES))
            raise FormatError(f"{{{body}}} in {text!r}: unknown field {field!r} (known: {known})")
        if field in MAP_FIELDS and key is None:
            raise FormatError(f"{{{body}}} in {text!r}: {field} is a map, name an entry: {field}[key]")
        if field not in MAP_FIELDS and key is not None:
            raise FormatError(f"{{{body}}} in {text!r}: {field} is not a map and cannot be indexed")
        alternatives.append(_Reference(field, key))
    for position, alternative in enumerate(alternatives[:-1]):
        if isinstance(alternative, str):
            raise FormatError(
                f"{{{body}}} in {text!r}: the literal {alternative!r} always has a value, "
                f"so alternative {position + 2} is never used"
            )
    return _Placeholder(tuple(alternatives))


def _split_alternatives(body: str) -> list[str]:
    items: list[str] = []
    current: list[str] = []
    pos = 0
    while pos < len(body):
        char = body[pos]
        if char in '"[':
            close = body.find('"' if char == '"' else "]", pos + 1)
            close = len(body) - 1 if close < 0 else close
            current.append(body[pos : close + 1])
            pos = close + 1
        elif char == "|":
            items.append("".join(current))
            current = []
            pos += 1
        else:
            current.append(char)
            pos += 1
    items.append("".join(current))
    return items
