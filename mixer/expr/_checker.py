"""The type checker: dispatches on node kinds; leaves (literals, attributes, map indexing) are here.

Operators are checked in :mod:`mixer.expr._check_operators`, calls in :mod:`mixer.expr._check_calls`.
"""

from __future__ import annotations

from mixer.attributes import AttributeBag, ValueType
from mixer.expr._check_calls import CallChecks
from mixer.expr._check_operators import OperatorChecks
from mixer.expr._code import (
    Code,
    Value,
    constant,
    optional_source,
    read_source,
    required_source,
    strict_source,
)
from mixer.expr._errors import AbsentAttributeError, ExpressionTypeError
from mixer.expr._parser import Attribute, Binary, Call, Chain, Index, Literal, Node, Unary
from mixer.expr._types import CONVERTERS, ConversionError
from mixer.expr.codegen import Emitter, absent

__all__ = ["Checker"]

_S = ValueType.STRING
_I = ValueType.INT64
_D = ValueType.DOUBLE
_B = ValueType.BOOL
_M = ValueType.STRING_MAP


class Checker(OperatorChecks, CallChecks):
    """Type-checks a parsed expression against a manifest and compiles it into :class:`Code`."""

    __slots__ = ()

    def check(self, node: Node, hint: ValueType | None) -> Code:
        """Compile ``node``; ``hint`` is the type the context wants, used only to convert literals."""
        try:
            if isinstance(node, Literal):
                return self._literal(node, hint)
            if isinstance(node, Attribute):
                return self._attribute(node)
            if isinstance(node, Index):
                return self._index(node)
            if isinstance(node, Unary):
                return self._unary(node)
            if isinstance(node, Binary):
                return self._binary(node, hint)
            if isinstance(node, Chain):
                return self._chain(node, hint)
            if isinstance(node, Call):
                return self._call(node, hint)
        except ExpressionTypeError as exc:
            if exc.text is None:
                # Folding reports failures without the text; add it so the message shows where.
                raise self._error(
                    exc.reason, exc.position if exc.position is not None else node.pos
                ) from None
            raise
        raise AssertionError(f"unknown node {type(node).__name__}")  # pragma: no cover

    # -- leaves

    def _literal(self, node: Literal, hint: ValueType | None) -> Code:
        value = node.value
        if node.kind == "string":
            assert isinstance(value, str)
            convert = CONVERTERS.get(hint) if hint is not None else None
            if convert is None or hint is None:
                return constant(_S, value)
            try:
                return constant(hint, convert(value))
            except ConversionError as exc:
                raise self._error(f"cannot convert string to {hint.name}: {exc}", node.pos) from None
        if node.kind == "int":
            return constant(_D, float(value)) if hint is _D else constant(_I, value)
        if node.kind == "float":
            return constant(_D, value)
        return constant(_B, value)

    def _attribute(self, node: Attribute) -> Code:
        name = node.name
        type_ = self._manifest.get(name)
        if type_ is None:
            raise self._error(f'unknown attribute "{name}"', node.pos)
        pos = node.pos

        def strict(bag: AttributeBag) -> Value:
            value = bag.get(name)
            if value is None:
                raise AbsentAttributeError(name, None, pos)
            return value

        def optional(bag: AttributeBag) -> Value:
            return bag.get(name)

        return Code(
            type_,
            strict,
            frozenset((name,)),
            optional,
            source=(name, None, pos),
            emit=lambda e: required_source(e, name, None, pos),
            emit_opt=lambda e: read_source(e, name, None),
        )

    def _index(self, node: Index) -> Code:
        target = self.check(node.target, None)
        if target.type is not _M:
            raise self._error(f"only a STRING_MAP can be indexed, not {target.type.name}", node.target.pos)
        key = self.check(node.key, None)
        self._expect(key, _S, "a map key", node.key.pos)
        names = target.names | key.names
        pos = node.pos
        if isinstance(node.target, Attribute):
            return self._attribute_index(node.target.name, key, names, pos)
        tmap, tmap_opt, kget, kget_opt = target.strict, target.optional, key.strict, key.optional

        def strict(bag: AttributeBag) -> Value:
            k = kget(bag)
            value = tmap(bag).get(k)
            if value is None:
                raise AbsentAttributeError("", k, pos)
            return value

        def optional(bag: AttributeBag) -> Value:
            k = kget_opt(bag)
            if k is None:
                return None
            m = tmap_opt(bag)
            return None if m is None else m.get(k)

        return Code(_S, strict, names, optional)

    def _attribute_index(self, name: str, key: Code, names: frozenset[str], pos: int) -> Code:
        if key.is_const:
            k = key.const
            assert isinstance(k, str)

            def strict(bag: AttributeBag) -> Value:
                value = bag.get_map_value(name, k)
                if value is None:
                    raise AbsentAttributeError(name, k, pos)
                return value

            def optional(bag: AttributeBag) -> Value:
                return bag.get_map_value(name, k)

            return Code(
                _S,
                strict,
                names,
                optional,
                source=(name, k, pos),
                emit=lambda e: required_source(e, name, k, pos),
                emit_opt=lambda e: read_source(e, name, k),
            )
        kget, kget_opt = key.strict, key.optional

        def dynamic_strict(bag: AttributeBag) -> Value:
            k = kget(bag)
            value = bag.get_map_value(name, k)
            if value is None:
                raise AbsentAttributeError(name, k, pos)
            return value

        def dynamic_optional(bag: AttributeBag) -> Value:
            k = kget_opt(bag)
            return None if k is None else bag.get_map_value(name, k)

        def emit(e: Emitter) -> str:
            v, kt, n = e.temp(), e.temp(), e.value(name)
            return (
                f"({v} if ({v} := gmv({n}, ({kt} := {strict_source(key, e)}))) is not None "
                f"else {e.value(absent)}({n}, {kt}, {pos!r}))"
            )

        def emit_opt(e: Emitter) -> str:
            kt = e.temp()
            return f"(None if ({kt} := {optional_source(key, e)}) is None else gmv({e.value(name)}, {kt}))"

        return Code(_S, dynamic_strict, names, dynamic_optional, emit=emit, emit_opt=emit_opt)
