"""Type checking and compilation of operators: arithmetic, comparisons, boolean chains, ``|``."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Final

from mixer.attributes import AttributeBag, ValueType
from mixer.expr import _functions as fn
from mixer.expr._check_base import CheckerBase
from mixer.expr._code import (
    Code,
    Evaluator,
    Value,
    constant,
    convertible,
    optional_source,
    required_source,
    strict_source,
    union,
)
from mixer.expr._errors import AbsentAttributeError
from mixer.expr._parser import Binary, Chain, Unary
from mixer.expr._types import NUMERIC, ORDERED
from mixer.expr.codegen import Emitter

_S = ValueType.STRING
_I = ValueType.INT64
_D = ValueType.DOUBLE
_B = ValueType.BOOL
_M = ValueType.STRING_MAP

_ORDER_OPS: Final = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_ARITH: Final[dict[tuple[str, ValueType], tuple[Callable[..., Value], bool]]] = {
    ("+", _I): (fn.add_int, True),
    ("-", _I): (fn.sub_int, True),
    ("*", _I): (fn.mul_int, True),
    ("/", _I): (fn.div_int, True),
    ("+", _D): (operator.add, False),
    ("-", _D): (operator.sub, False),
    ("*", _D): (operator.mul, False),
    ("/", _D): (fn.div_float, False),
}


class OperatorChecks(CheckerBase):
    """Unary and binary operators, comparisons, ``&&``/``||`` and the ``|`` fallback."""

    __slots__ = ()

    def _unary(self, node: Unary) -> Code:
        operand = self.check(node.operand, None)
        if node.op == "!":
            self._expect(operand, _B, 'the operand of "!"', node.operand.pos)
            return self._apply(operator.not_, _B, [operand], node.pos, fallible=False)
        if operand.type is _I:
            return self._apply(fn.neg_int, _I, [operand], node.pos, fallible=True)
        if operand.type is _D:
            return self._apply(operator.neg, _D, [operand], node.pos, fallible=False)
        raise self._error(
            f'the operand of unary "-" must be INT64 or DOUBLE, got {operand.type.name}', node.pos
        )

    def _binary(self, node: Binary, hint: ValueType | None) -> Code:
        op = node.op
        if op in ("==", "!="):
            left, right = self._pair(node.left, node.right, None, strings=True)
            self._same_type(op, left, right, node.op_pos)
            return self._equality(op, left, right, node.op_pos)
        if op in _ORDER_OPS:
            left, right = self._pair(node.left, node.right, None, strings=True)
            self._same_type(op, left, right, node.op_pos)
            if left.type not in ORDERED:
                raise self._error(f'"{op}" cannot compare {left.type.name} values', node.op_pos)
            return self._apply(_ORDER_OPS[op], _B, [left, right], node.op_pos, fallible=False)
        numeric_hint = hint if hint in NUMERIC else None
        left, right = self._pair(node.left, node.right, numeric_hint, strings=False)
        if op == "+" and left.type.is_string_like and right.type.is_string_like:
            return self._apply(fn.concat, _S, [left, right], node.op_pos, fallible=False)
        self._same_type(op, left, right, node.op_pos)
        entry = _ARITH.get((op, left.type))
        if entry is None:
            kinds = "numbers or strings" if op == "+" else "numbers"
            raise self._error(f'"{op}" applies to {kinds}, not {left.type.name}', node.op_pos)
        func, fallible = entry
        return self._apply(func, left.type, [left, right], node.op_pos, fallible)

    def _same_type(self, op: str, left: Code, right: Code, pos: int) -> None:
        if left.type is not right.type:
            raise self._error(
                f'operands of "{op}" must have the same type, got {left.type.name} and {right.type.name}', pos
            )

    def _equality(self, op: str, left: Code, right: Code, pos: int) -> Code:
        negate = op == "!="
        if left.type is ValueType.IP_ADDRESS:
            func: Callable[[Value, Value], bool] = fn.ip_equal
        elif left.type is _M:
            func = fn.map_equal
        else:
            func = operator.eq
        if left.is_const and right.is_const:
            return constant(_B, func(left.const, right.const) != negate)
        if left.is_const:
            left, right = right, left
        a = left.strict
        if right.is_const and func is operator.eq and left.source is not None and left.source[1] is None:
            name, _, attr_pos = left.source
            cmp = "!=" if negate else "=="
            const = right.const
            return Code(
                _B,
                _compare_attribute(name, const, negate, attr_pos),
                left.names,
                emit=lambda e: f"({required_source(e, name, None, attr_pos)} {cmp} {e.literal(const)})",
            )
        if right.is_const and func is operator.eq:
            c = right.const
            cmp = "!=" if negate else "=="
            lcode = left

            def emit_eq(e: Emitter) -> str:
                return f"({strict_source(lcode, e)} {cmp} {e.literal(c)})"

            if negate:
                return Code(_B, lambda bag: a(bag) != c, left.names, emit=emit_eq)
            return Code(_B, lambda bag: a(bag) == c, left.names, emit=emit_eq)
        if right.is_const and func is fn.ip_equal:
            key = fn.ip_key(right.const)
            if negate:
                return Code(_B, lambda bag: fn.ip_key(a(bag)) != key, left.names)
            return Code(_B, lambda bag: fn.ip_key(a(bag)) == key, left.names)
        b = right.strict
        names = left.names | right.names
        if negate:
            return Code(_B, lambda bag: not func(a(bag), b(bag)), names)
        return Code(_B, lambda bag: func(a(bag), b(bag)), names)

    def _chain(self, node: Chain, hint: ValueType | None) -> Code:
        if node.op == "|":
            return self._fallback(node, hint)
        is_and = node.op == "&&"
        codes: list[Code] = []
        for operand in node.operands:
            code = self.check(operand, None)
            self._expect(code, _B, f'an operand of "{node.op}"', operand.pos)
            codes.append(code)
        # Drop operands that cannot change the result and stop at one that decides it: both are
        # constants, so nothing observable (reads, errors) is lost.
        kept: list[Code] = []
        for code in codes:
            if code.is_const:
                if code.const is is_and:
                    continue
                kept.append(code)
                break
            kept.append(code)
        if not kept:
            return constant(_B, is_and)
        if len(kept) == 1:
            return kept[0]
        names = union(kept)
        evaluators = tuple(c.strict for c in kept)
        joiner = " and " if is_and else " or "

        def emit(e: Emitter) -> str:
            # Operands are BOOL, so `and`/`or` give the same value as the closures' loops.
            return "(" + joiner.join(strict_source(c, e) for c in kept) + ")"

        if len(evaluators) == 2:
            e0, e1 = evaluators
            if is_and:
                return Code(_B, lambda bag: e0(bag) and e1(bag), names, emit=emit)
            return Code(_B, lambda bag: e0(bag) or e1(bag), names, emit=emit)

        # Plain loops: all()/any() over a generator allocate on every call.
        def all_of(bag: AttributeBag) -> Value:
            for e in evaluators:  # noqa: SIM110
                if not e(bag):
                    return False
            return True

        def any_of(bag: AttributeBag) -> Value:
            for e in evaluators:  # noqa: SIM110
                if e(bag):
                    return True
            return False

        return Code(_B, all_of if is_and else any_of, names, emit=emit)

    def _fallback(self, node: Chain, hint: ValueType | None) -> Code:
        operands = node.operands
        # Type the operands that are not literals first, so "0ms" in `response.duration | "0ms"`
        # is converted to the type of the attribute.
        order = sorted(range(len(operands)), key=lambda i: convertible(operands[i], True))
        codes: dict[int, Code] = {}
        wanted = hint
        for i in order:
            code = self.check(operands[i], wanted)
            if i == order[0]:
                wanted = code.type
            codes[i] = code
        first = codes[order[0]]
        for i in range(len(operands)):
            if codes[i].type is not first.type:
                pos = node.op_positions[i - 1] if i > 0 else operands[i].pos
                raise self._error(
                    f'operands of "|" must have the same type, got {first.type.name} and '
                    f"{codes[i].type.name}",
                    pos,
                )
        chain: list[Code] = []
        for i in range(len(operands)):
            chain.append(codes[i])
            if codes[i].is_const:
                break  # a constant is never absent: the rest is unreachable
        if len(chain) == 1:
            return chain[0]
        type_ = first.type
        names = union(chain)
        heads = chain[:-1]

        def emit_chain(e: Emitter, last_source: Callable[[Code, Emitter], str]) -> str:
            text = last_source(chain[-1], e)
            for code in reversed(heads):
                t = e.temp()
                text = f"({t} if ({t} := {optional_source(code, e)}) is not None else {text})"
            return text

        def emit(e: Emitter) -> str:
            return emit_chain(e, strict_source)

        def emit_opt(e: Emitter) -> str:
            return emit_chain(e, optional_source)

        if chain[-1].is_const and all(h.source is not None for h in heads) and len(heads) <= 2:
            # The common `attr | attr | "default"` shape: bag reads and None tests, no calls between.
            return Code(type_, _read_or_default(heads, chain[-1].const), names, emit=emit)
        head = tuple(c.optional for c in chain[:-1])
        last, last_opt = chain[-1].strict, chain[-1].optional
        if len(head) == 1:
            h0 = head[0]

            def strict2(bag: AttributeBag) -> Value:
                value = h0(bag)
                return last(bag) if value is None else value

            def optional2(bag: AttributeBag) -> Value:
                value = h0(bag)
                return last_opt(bag) if value is None else value

            return Code(type_, strict2, names, optional2, emit=emit, emit_opt=emit_opt)

        def strict(bag: AttributeBag) -> Value:
            for h in head:
                value = h(bag)
                if value is not None:
                    return value
            return last(bag)

        def optional(bag: AttributeBag) -> Value:
            for h in head:
                value = h(bag)
                if value is not None:
                    return value
            return last_opt(bag)

        return Code(type_, strict, names, optional, emit=emit, emit_opt=emit_opt)


def _compare_attribute(name: str, const: Value, negate: bool, pos: int) -> Evaluator:
    if negate:

        def not_equal(bag: AttributeBag) -> Value:
            value = bag.get(name)
            if value is None:
                raise AbsentAttributeError(name, None, pos)
            return value != const

        return not_equal

    def equal(bag: AttributeBag) -> Value:
        value = bag.get(name)
        if value is None:
            raise AbsentAttributeError(name, None, pos)
        return value == const

    return equal


def _read_or_default(heads: list[Code], default: Value) -> Evaluator:
    source = heads[0].source
    assert source is not None
    n0, k0, _ = source
    if len(heads) == 1:
        if k0 is None:
            return lambda bag: default if (v := bag.get(n0)) is None else v
        return lambda bag: default if (v := bag.get_map_value(n0, k0)) is None else v
    source = heads[1].source
    assert source is not None
    n1, k1, _ = source
    first = heads[0].optional

    def two(bag: AttributeBag) -> Value:
        v = first(bag)
        if v is None:
            v = bag.get(n1) if k1 is None else bag.get_map_value(n1, k1)
            if v is None:
                return default
        return v

    return two
