"""What the checker compiles a node into: a :class:`Code` of closures, with its generated forms.

Every node becomes a :class:`Code` holding two closures over the bag: ``strict`` raises
AbsentAttributeError when something it needs is absent, ``optional`` returns None instead. ``a | b``
evaluates ``a`` through ``optional``, so the common fallback (an attribute or a map key) costs one
``None`` test and no exception. Literals, and operations whose operands are all literals, are folded
into constants at compile time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, TypeAlias

from mixer.attributes import AttributeBag, ValueType
from mixer.expr._errors import AbsentAttributeError, EvaluationError, ExpressionTypeError
from mixer.expr._parser import Literal, Node
from mixer.expr.codegen import Emitter, absent

# Values are typed by the checker, not by Python's type system, so closures handle them as Any.
Value: TypeAlias = Any
Evaluator: TypeAlias = Callable[[AttributeBag], Value]

NOT_CONSTANT: Final = object()

#: (attribute name, map key or None, position in the text) of code that is a single bag read.
_Source: TypeAlias = tuple[str, str | None, int]
#: Writes a node's generated Python expression (see ``codegen`` for what it may contain).
Emit: TypeAlias = Callable[[Emitter], str]


class Code:
    __slots__ = ("const", "emit", "emit_opt", "names", "optional", "source", "strict", "type")

    def __init__(
        self,
        type_: ValueType,
        strict: Evaluator,
        names: frozenset[str],
        optional: Evaluator | None = None,
        const: Value = NOT_CONSTANT,
        source: _Source | None = None,
        emit: Emit | None = None,
        emit_opt: Emit | None = None,
    ) -> None:
        self.type = type_
        # Generated-code forms of strict and optional; None falls back to calling the closure.
        self.emit = emit
        self.emit_opt = emit_opt
        self.strict = strict
        self.names = names
        self.const = const
        # Set for code that is one bag read, so hot callers can inline the read.
        self.source = source
        if optional is None:
            # Code that reads no attribute can never be absent.
            optional = strict if not names else _absent_as_none(strict)
        self.optional = optional

    @property
    def is_const(self) -> bool:
        return self.const is not NOT_CONSTANT


def strict_source(code: Code, e: Emitter) -> str:
    """A Python expression with the value of ``code.strict(bag)``."""
    if code.is_const:
        return e.literal(code.const)
    if code.emit is not None:
        return code.emit(e)
    return f"{e.value(code.strict)}(bag)"


def optional_source(code: Code, e: Emitter) -> str:
    """A Python expression with the value of ``code.optional(bag)``."""
    if code.is_const:
        return e.literal(code.const)
    if code.emit_opt is not None:
        return code.emit_opt(e)
    if code.optional is code.strict:
        return strict_source(code, e)
    return f"{e.value(code.optional)}(bag)"


def read_source(e: Emitter, name: str, key: str | None) -> str:
    if key is None:
        return f"get({e.value(name)})"
    return f"gmv({e.value(name)}, {e.value(key)})"


def required_source(e: Emitter, name: str, key: str | None, pos: int) -> str:
    t = e.temp()
    k = "None" if key is None else e.value(key)
    read = read_source(e, name, key)
    return f"({t} if ({t} := {read}) is not None else {e.value(absent)}({e.value(name)}, {k}, {pos!r}))"


def _absent_as_none(strict: Evaluator) -> Evaluator:
    def optional(bag: AttributeBag) -> Value:
        try:
            return strict(bag)
        except AbsentAttributeError:
            return None

    return optional


def constant(type_: ValueType, value: Value) -> Code:
    def const(bag: AttributeBag) -> Value:
        return value

    return Code(type_, const, frozenset(), const, value)


def union(codes: Iterator[Code] | Sequence[Code]) -> frozenset[str]:
    names: frozenset[str] = frozenset()
    for code in codes:
        names |= code.names
    return names


def lift(
    func: Callable[..., Value], args: Sequence[Code], pos: int, fallible: bool
) -> tuple[Evaluator, bool, Value]:
    """A strict evaluator applying ``func`` to the arguments' values (or the folded constant).

    Returns (evaluator, folded, constant-value).
    """
    if all(a.is_const for a in args):
        try:
            return _never, True, func(*(a.const for a in args))
        except ValueError as exc:
            raise ExpressionTypeError(str(exc), pos) from None
    f: Evaluator
    if len(args) == 1:
        a0 = args[0].strict

        def f(bag: AttributeBag) -> Value:
            return func(a0(bag))

    elif len(args) == 2 and args[1].is_const:
        a0, c1 = args[0].strict, args[1].const

        def f(bag: AttributeBag) -> Value:
            return func(a0(bag), c1)

    elif len(args) == 2:
        a0, a1 = args[0].strict, args[1].strict

        def f(bag: AttributeBag) -> Value:
            return func(a0(bag), a1(bag))

    else:
        evaluators = tuple(a.strict for a in args)

        def f(bag: AttributeBag) -> Value:
            return func(*[e(bag) for e in evaluators])

    if not fallible:
        return f, False, None
    inner = f

    def checked(bag: AttributeBag) -> Value:
        try:
            return inner(bag)
        except ValueError as exc:
            raise EvaluationError(str(exc), pos) from None

    return checked, False, None


def _never(bag: AttributeBag) -> Value:  # pragma: no cover - placeholder for folded code
    raise AssertionError("folded code is never called")


def convertible(node: Node, strings: bool) -> bool:
    """Whether ``node`` is a literal whose type may follow the other operand's."""
    return isinstance(node, Literal) and (node.kind == "int" or (strings and node.kind == "string"))
