"""Python source for compiled expressions: one generated function instead of a tree of closures.

Safety rule: the source text is built only from our own identifiers (``bag``, ``get``, ``gmv``,
``_kN`` for values, ``_tN`` for temporaries) and from ``repr`` of ints and bools the checker already
validated. Every other value, including attribute names, map keys, string literals and expression
texts from the configuration, is bound in a closure cell of a factory function and referenced by
its ``_kN`` name: no configuration text ever becomes code. ``compile()`` and ``exec`` run only on
source we generated from our own AST under that rule.

Each generated form has the semantics of the closure it replaces (the checker modules keep the closures
as the reference implementation; tests compare both on the expression cases and the stock configs).
A node without a generated form is called through its closure, so every expression works.
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Callable
from typing import Any

from mixer.expr._errors import AbsentAttributeError, EvaluationError

#: What ``CompiledExpression.evaluate`` turns into :class:`EvaluationError` (a mismatched bag value).
CAUGHT: tuple[type[Exception], ...] = (TypeError, AttributeError, ValueError, KeyError, OverflowError)

_sources = itertools.count()


def absent(name: str, key: str | None, pos: int) -> Any:
    """Raises for a missing attribute inside a generated expression (a ``raise`` is a statement)."""
    raise AbsentAttributeError(name, key, pos)


def evaluation_error(text: str, exc: Exception) -> EvaluationError:
    return EvaluationError(f"cannot evaluate {text!r}: {exc}")


class Emitter:
    """Collects the values a generated function refers to and hands out local names."""

    __slots__ = ("_by_id", "_temps", "values")

    def __init__(self) -> None:
        self.values: list[object] = []
        self._by_id: dict[int, str] = {}
        self._temps = 0

    def value(self, obj: object) -> str:
        """The name under which ``obj`` (any object) is visible to the generated code."""
        name = self._by_id.get(id(obj))
        if name is None:
            name = self._by_id[id(obj)] = f"_k{len(self.values)}"
            self.values.append(obj)  # also keeps obj alive, so its id stays unique
        return name

    def literal(self, obj: object) -> str:
        # Only exact ints and bools are written as text (repr of a validated number is a literal);
        # strings and everything else go through a cell.
        if obj is None or type(obj) is bool or type(obj) is int:
            return repr(obj)
        return self.value(obj)

    def temp(self) -> str:
        self._temps += 1
        return f"_t{self._temps}"


def make_function(
    emitter: Emitter, body: list[str], name: str, fallback: Callable[..., Any]
) -> Callable[..., Any]:
    """Compiles ``def name(bag): body`` with the emitter's values in closure cells.

    ``body`` lines are our generated statements (see the module's safety rule), indented by the caller
    relative to the function body. Code Python cannot compile (a ``|`` chain of hundreds of operands
    nests deeper than its parser allows) gives ``fallback``, the closures' equivalent.
    """
    params = ", ".join(f"_k{i}" for i in range(len(emitter.values)))
    lines = [f"def _factory({params}):", f"    def {name}(bag):"]
    lines.extend("        " + line for line in body)
    lines.append(f"    return {name}")
    source = "\n".join(lines) + "\n"
    namespace: dict[str, Any] = {"__builtins__": builtins}
    # Our own generated source (module docstring): no configuration text is part of it.
    try:
        code = builtins.compile(source, f"<mixer-generated-{next(_sources)}>", "exec")
    except (SyntaxError, RecursionError, MemoryError):
        return fallback
    exec(code, namespace)  # noqa: S102 - generated from our AST only, see the module docstring
    function: Callable[..., Any] = namespace["_factory"](*emitter.values)
    return function
