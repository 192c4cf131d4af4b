"""The exceptions raised by compiling and evaluating expressions."""

from __future__ import annotations

_EXCERPT = 40


class ExpressionError(Exception):
    """An expression could not be compiled or evaluated.

    ``position`` is the 0-based offset into the expression text of the offending part, when known.
    The message names the problem and, with a position, shows it and the text around it, with
    ``>>>`` marking the spot: ``unknown attribute "foo.bar" at 5: 1 == >>>foo.bar``.
    """

    def __init__(self, message: str, position: int | None = None, text: str | None = None) -> None:
        self.reason = message
        self.position = position
        self.text = text
        super().__init__(_format(message, position, text))


class ExpressionSyntaxError(ExpressionError):
    """The text is not a well-formed expression (or exceeds the length or nesting bounds)."""


class ExpressionTypeError(ExpressionError):
    """The expression is well formed but its types do not check against the manifest."""


class EvaluationError(ExpressionError):
    """Evaluating a compiled expression against a bag failed."""


class AbsentAttributeError(EvaluationError):
    """An attribute (or string-map key) the expression needs is absent and has no ``|`` fallback.

    ``name`` is the attribute ("" for a key of a computed map), ``key`` the map key if one was absent.
    """

    def __init__(self, name: str, key: str | None = None, position: int | None = None) -> None:
        self.name = name
        self.key = key
        if key is None:
            what = f'attribute "{name}"'
        elif name:
            what = f'key "{key}" of attribute "{name}"'
        else:  # a computed map, such as emptyStringMap() or (a | b)
            what = f'map key "{key}"'
        super().__init__(f"{what} is absent", position)


def _format(message: str, position: int | None, text: str | None) -> str:
    if position is None:
        return message
    if text is None:
        return f"{message} at {position}"
    start = max(0, position - _EXCERPT)
    end = min(len(text), position + _EXCERPT)
    prefix = "..." if start > 0 else ""
    suffix = "..." if end < len(text) else ""
    # One line, so the message stays whole in logs; ">>>" marks the position.
    before = text[start:position].replace("\n", " ")
    after = text[position:end].replace("\n", " ")
    return f"{message} at {position}: {prefix}{before}>>>{after}{suffix}"
