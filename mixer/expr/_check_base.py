"""The state and helpers the checker's parts share (see :mod:`mixer.expr._checker`)."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence

from mixer.attributes import ValueType
from mixer.expr._code import Code, Value, constant, convertible, lift, strict_source, union
from mixer.expr._errors import ExpressionTypeError
from mixer.expr._parser import Node
from mixer.expr.codegen import Emitter


class CheckerBase(abc.ABC):
    """What every part of the checker shares: the text and manifest, errors, typing helpers."""

    __slots__ = ("_manifest", "_text")

    def __init__(self, text: str, manifest: Mapping[str, ValueType]) -> None:
        self._text = text
        self._manifest = manifest

    def _error(self, message: str, pos: int) -> ExpressionTypeError:
        return ExpressionTypeError(message, pos, self._text)

    @abc.abstractmethod
    def check(self, node: Node, hint: ValueType | None) -> Code:
        """Compile ``node``; ``hint`` is the type the context wants, used only to convert literals."""

    def _expect(self, code: Code, wanted: ValueType, what: str, pos: int) -> None:
        if code.type is not wanted:
            raise self._error(f"{what} must be {wanted.name}, got {code.type.name}", pos)

    def _apply(
        self, func: Callable[..., Value], type_: ValueType, args: Sequence[Code], pos: int, fallible: bool
    ) -> Code:
        strict, folded, value = lift(func, args, pos, fallible)
        if folded:
            return constant(type_, value)
        if fallible:
            # The ValueError-to-EvaluationError translation needs a try: called through its closure.
            return Code(type_, strict, union(args))

        def emit(e: Emitter) -> str:
            return f"{e.value(func)}({', '.join(strict_source(a, e) for a in args)})"

        return Code(type_, strict, union(args), emit=emit)

    def _pair(self, left: Node, right: Node, hint: ValueType | None, strings: bool) -> tuple[Code, Code]:
        """Both operands, the literal one typed after the other (``strings``: also convert strings)."""
        if convertible(left, strings) and not convertible(right, strings):
            rc = self.check(right, hint)
            return self.check(left, rc.type), rc
        lc = self.check(left, hint)
        return lc, self.check(right, lc.type if convertible(right, strings) else hint)
