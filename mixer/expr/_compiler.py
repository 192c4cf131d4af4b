"""Type checking and compilation of the AST into nested closures.

Every node becomes a :class:`_Code` holding two closures over the bag: ``strict`` raises
AbsentAttributeError when something it needs is absent, ``optional`` returns None instead. ``a | b``
evaluates ``a`` through ``optional``, so the common fallback (an attribute or a map key) costs one
``None`` test and no exception. Literals, and operations whose operands are all literals, are folded
into constants at compile time.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, TypeAlias

from mixer.attributes import (
    ISTIO_MANIFEST,
    AttributeBag,
    AttributeValue,
    ValueType,
    conforms,
    infer_value_type,
)
from mixer.expr import _functions as fn
from mixer.expr._codegen import CAUGHT, Emitter, absent, evaluation_error, make_function
from mixer.expr._errors import AbsentAttributeError, EvaluationError, ExpressionTypeError
from mixer.expr._parser import Attribute, Binary, Call, Chain, Index, Literal, Node, Unary, parse
from mixer.expr._regex import REQUEST_PATTERNS, RegexError, compile_re2
from mixer.expr._types import CONVERTERS, NUMERIC, ORDERED, ConversionError

# Values are typed by the checker, not by Python's type system, so closures handle them as Any.
Value: TypeAlias = Any
Evaluator: TypeAlias = Callable[[AttributeBag], Value]

_S = ValueType.STRING
_I = ValueType.INT64
_D = ValueType.DOUBLE
_B = ValueType.BOOL
_M = ValueType.STRING_MAP

_NOT_CONSTANT: Final = object()

#: (attribute name, map key or None, position in the text) of code that is a single bag read.
_Source: TypeAlias = tuple[str, str | None, int]
#: Writes a node's generated Python expression (see ``_codegen`` for what it may contain).
Emit: TypeAlias = Callable[[Emitter], str]


class _Code:
    __slots__ = ("const", "emit", "emit_opt", "names", "optional", "source", "strict", "type")

    def __init__(
        self,
        type_: ValueType,
        strict: Evaluator,
        names: frozenset[str],
        optional: Evaluator | None = None,
        const: Value = _NOT_CONSTANT,
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
        return self.const is not _NOT_CONSTANT


def strict_source(code: _Code, e: Emitter) -> str:
    """A Python expression with the value of ``code.strict(bag)``."""
    if code.is_const:
        return e.literal(code.const)
    if code.emit is not None:
        return code.emit(e)
    return f"{e.value(code.strict)}(bag)"


def optional_source(code: _Code, e: Emitter) -> str:
    """A Python expression with the value of ``code.optional(bag)``."""
    if code.is_const:
        return e.literal(code.const)
    if code.emit_opt is not None:
        return code.emit_opt(e)
    if code.optional is code.strict:
        return strict_source(code, e)
    return f"{e.value(code.optional)}(bag)"


def _read_source(e: Emitter, name: str, key: str | None) -> str:
    if key is None:
        return f"get({e.value(name)})"
    return f"gmv({e.value(name)}, {e.value(key)})"


def _required_source(e: Emitter, name: str, key: str | None, pos: int) -> str:
    t = e.temp()
    k = "None" if key is None else e.value(key)
    read = _read_source(e, name, key)
    return f"({t} if ({t} := {read}) is not None else {e.value(absent)}({e.value(name)}, {k}, {pos!r}))"


def _absent_as_none(strict: Evaluator) -> Evaluator:
    def optional(bag: AttributeBag) -> Value:
        try:
            return strict(bag)
        except AbsentAttributeError:
            return None

    return optional


def _constant(type_: ValueType, value: Value) -> _Code:
    def const(bag: AttributeBag) -> Value:
        return value

    return _Code(type_, const, frozenset(), const, value)


def _union(codes: Iterator[_Code] | Sequence[_Code]) -> frozenset[str]:
    names: frozenset[str] = frozenset()
    for code in codes:
        names |= code.names
    return names


class CompiledExpression:
    """A type-checked expression, ready to evaluate against many bags (safe to share between threads).

    ``text`` is the source, ``type`` the result's :class:`ValueType`.
    """

    __slots__ = ("_code", "_fn", "_names", "text", "type")

    def __init__(
        self, text: str, type_: ValueType, fn_: Evaluator, names: frozenset[str], code: _Code | None = None
    ) -> None:
        self.text = text
        self.type = type_
        self._fn = fn_
        self._names = names
        self._code = code

    def source(self, e: Emitter) -> str:
        """The expression as generated Python reading ``get``/``gmv`` (bound methods of ``bag``).

        Raises what ``self._fn`` raises; callers wrap it like :meth:`evaluate` (see :meth:`generated`).
        """
        if self._code is None:
            return f"{e.value(self._fn)}(bag)"
        return strict_source(self._code, e)

    def generated(self) -> Evaluator:
        """A generated function equivalent to :meth:`evaluate` (same values, same errors)."""
        e = Emitter()
        expr = self.source(e)
        body = [
            "get = bag.get",
            "gmv = bag.get_map_value",
            "try:",
            f"    return {expr}",
            f"except {e.value(CAUGHT)} as exc:",
            f"    raise {e.value(evaluation_error)}({e.value(self.text)}, exc) from exc",
        ]
        return make_function(e, body, "evaluate", self.evaluate)

    def evaluate(self, bag: AttributeBag) -> AttributeValue:
        """The expression's value for ``bag``.

        Reads attributes only through ``bag.get`` and ``bag.get_map_value``, and only those the
        evaluation needs, so a :class:`~mixer.attributes.TrackingBag` records exactly what was used.

        :raises AbsentAttributeError: an attribute or map key it needs is absent (no ``|`` fallback).
        :raises EvaluationError: any other failure, such as a value of the wrong type in the bag.
        """
        try:
            result: AttributeValue = self._fn(bag)
        except (TypeError, AttributeError, ValueError, KeyError, OverflowError) as exc:
            # A bag value that does not match the manifest's type ends up here.
            raise evaluation_error(self.text, exc) from exc
        return result

    def __repr__(self) -> str:
        return f"CompiledExpression({self.text!r}, {self.type.name})"


def compile(
    text: str, manifest: Mapping[str, ValueType], expected: ValueType | None = None
) -> CompiledExpression:
    """Parse and type-check ``text`` against ``manifest`` and compile it.

    With ``expected``, the result must have that type; a string literal where the type requires
    it is converted at compile time (``"10ms"`` to DURATION). STRING accepts the string-like types.

    :raises ExpressionSyntaxError: malformed text, or over the length or nesting bounds.
    :raises ExpressionTypeError: unknown attribute or function, mismatched types, bad literal.
    """
    if not isinstance(text, str):
        raise ExpressionTypeError(f"expression must be a string, not {type(text).__name__}")
    root = parse(text)
    if expected is ValueType.VALUE_TYPE_UNSPECIFIED:
        expected = None
    code = _Checker(text, manifest).check(root, expected)
    result_type = code.type
    if expected is not None and result_type is not expected:
        if expected is _S and result_type.is_string_like:
            result_type = _S
        else:
            raise ExpressionTypeError(
                f"expression has type {result_type.name}, expected {expected.name}", root.pos, text
            )
    return CompiledExpression(text, result_type, code.strict, code.names, code)


def referenced_names(compiled: CompiledExpression) -> frozenset[str]:
    """The attribute names ``compiled`` may read (a superset of what any one evaluation reads)."""
    return compiled._names


class _InferredManifest(Mapping[str, ValueType]):
    """Types for :func:`evaluate` without a manifest: from the given values, else Istio's vocabulary."""

    __slots__ = ("_attributes",)

    def __init__(self, attributes: Mapping[str, object]) -> None:
        self._attributes = attributes

    def __getitem__(self, name: str) -> ValueType:
        if name in self._attributes:
            try:
                return infer_value_type(self._attributes[name])
            except TypeError as exc:
                raise ExpressionTypeError(f'attribute "{name}": {exc}') from None
        return ISTIO_MANIFEST[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._attributes
        yield from (name for name in ISTIO_MANIFEST if name not in self._attributes)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def evaluate(
    text: str, attributes: Mapping[str, object], manifest: Mapping[str, ValueType] | None = None
) -> AttributeValue:
    """Compile ``text`` and evaluate it once against ``attributes`` (a convenience, not the hot path).

    Without a manifest, an attribute's type comes from its Python value; a name missing from
    ``attributes`` takes its type from Istio's vocabulary (it is then absent), and any other name is
    an unknown attribute.

    :raises ExpressionError: compiling or evaluating failed.
    """
    types: Mapping[str, ValueType] = _InferredManifest(attributes) if manifest is None else manifest
    compiled = compile(text, types)
    if manifest is not None:
        for name in compiled._names:
            value = attributes.get(name)
            declared = manifest.get(name)
            if value is not None and declared is not None and not conforms(value, declared):
                raise EvaluationError(
                    f'attribute "{name}" is declared {declared.name} but holds {type(value).__name__}'
                )
    bag = AttributeBag(attributes)  # type: ignore[arg-type]  # checked against the types above
    return compiled.evaluate(bag)


def _lift(
    func: Callable[..., Value], args: Sequence[_Code], pos: int, fallible: bool
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
_VALIDATORS: Final = {
    "ip": ValueType.IP_ADDRESS,
    "timestamp": ValueType.TIMESTAMP,
    "duration": ValueType.DURATION,
    "email": ValueType.EMAIL_ADDRESS,
    "dnsName": ValueType.DNS_NAME,
    "uri": ValueType.URI,
}
_FUNCTIONS: Final = frozenset(
    {
        *_VALIDATORS,
        "match",
        "matches",
        "startsWith",
        "endsWith",
        "emptyStringMap",
        "conditional",
        "toLower",
        "size",
    }
)


class _Checker:
    __slots__ = ("_manifest", "_text")

    def __init__(self, text: str, manifest: Mapping[str, ValueType]) -> None:
        self._text = text
        self._manifest = manifest

    def _error(self, message: str, pos: int) -> ExpressionTypeError:
        return ExpressionTypeError(message, pos, self._text)

    def check(self, node: Node, hint: ValueType | None) -> _Code:
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

    def _expect(self, code: _Code, wanted: ValueType, what: str, pos: int) -> None:
        if code.type is not wanted:
            raise self._error(f"{what} must be {wanted.name}, got {code.type.name}", pos)

    # -- leaves

    def _literal(self, node: Literal, hint: ValueType | None) -> _Code:
        value = node.value
        if node.kind == "string":
            assert isinstance(value, str)
            convert = CONVERTERS.get(hint) if hint is not None else None
            if convert is None or hint is None:
                return _constant(_S, value)
            try:
                return _constant(hint, convert(value))
            except ConversionError as exc:
                raise self._error(f"cannot convert string to {hint.name}: {exc}", node.pos) from None
        if node.kind == "int":
            return _constant(_D, float(value)) if hint is _D else _constant(_I, value)
        if node.kind == "float":
            return _constant(_D, value)
        return _constant(_B, value)

    def _attribute(self, node: Attribute) -> _Code:
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

        return _Code(
            type_,
            strict,
            frozenset((name,)),
            optional,
            source=(name, None, pos),
            emit=lambda e: _required_source(e, name, None, pos),
            emit_opt=lambda e: _read_source(e, name, None),
        )

    def _index(self, node: Index) -> _Code:
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

        return _Code(_S, strict, names, optional)

    def _attribute_index(self, name: str, key: _Code, names: frozenset[str], pos: int) -> _Code:
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

            return _Code(
                _S,
                strict,
                names,
                optional,
                source=(name, k, pos),
                emit=lambda e: _required_source(e, name, k, pos),
                emit_opt=lambda e: _read_source(e, name, k),
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

        return _Code(_S, dynamic_strict, names, dynamic_optional, emit=emit, emit_opt=emit_opt)

    # -- operators

    def _unary(self, node: Unary) -> _Code:
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

    def _apply(
        self, func: Callable[..., Value], type_: ValueType, args: Sequence[_Code], pos: int, fallible: bool
    ) -> _Code:
        strict, folded, value = _lift(func, args, pos, fallible)
        if folded:
            return _constant(type_, value)
        if fallible:
            # The ValueError-to-EvaluationError translation needs a try: called through its closure.
            return _Code(type_, strict, _union(args))

        def emit(e: Emitter) -> str:
            return f"{e.value(func)}({', '.join(strict_source(a, e) for a in args)})"

        return _Code(type_, strict, _union(args), emit=emit)

    def _pair(self, left: Node, right: Node, hint: ValueType | None, strings: bool) -> tuple[_Code, _Code]:
        """Both operands, the literal one typed after the other (``strings``: also convert strings)."""
        if _convertible(left, strings) and not _convertible(right, strings):
            rc = self.check(right, hint)
            return self.check(left, rc.type), rc
        lc = self.check(left, hint)
        return lc, self.check(right, lc.type if _convertible(right, strings) else hint)

    def _binary(self, node: Binary, hint: ValueType | None) -> _Code:
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

    def _same_type(self, op: str, left: _Code, right: _Code, pos: int) -> None:
        if left.type is not right.type:
            raise self._error(
                f'operands of "{op}" must have the same type, got {left.type.name} and {right.type.name}', pos
            )

    def _equality(self, op: str, left: _Code, right: _Code, pos: int) -> _Code:
        negate = op == "!="
        if left.type is ValueType.IP_ADDRESS:
            func: Callable[[Value, Value], bool] = fn.ip_equal
        elif left.type is _M:
            func = fn.map_equal
        else:
            func = operator.eq
        if left.is_const and right.is_const:
            return _constant(_B, func(left.const, right.const) != negate)
        if left.is_const:
            left, right = right, left
        a = left.strict
        if right.is_const and func is operator.eq and left.source is not None and left.source[1] is None:
            name, _, attr_pos = left.source
            cmp = "!=" if negate else "=="
            const = right.const
            return _Code(
                _B,
                _compare_attribute(name, const, negate, attr_pos),
                left.names,
                emit=lambda e: f"({_required_source(e, name, None, attr_pos)} {cmp} {e.literal(const)})",
            )
        if right.is_const and func is operator.eq:
            c = right.const
            cmp = "!=" if negate else "=="
            lcode = left

            def emit_eq(e: Emitter) -> str:
                return f"({strict_source(lcode, e)} {cmp} {e.literal(c)})"

            if negate:
                return _Code(_B, lambda bag: a(bag) != c, left.names, emit=emit_eq)
            return _Code(_B, lambda bag: a(bag) == c, left.names, emit=emit_eq)
        if right.is_const and func is fn.ip_equal:
            key = fn.ip_key(right.const)
            if negate:
                return _Code(_B, lambda bag: fn.ip_key(a(bag)) != key, left.names)
            return _Code(_B, lambda bag: fn.ip_key(a(bag)) == key, left.names)
        b = right.strict
        names = left.names | right.names
        if negate:
            return _Code(_B, lambda bag: not func(a(bag), b(bag)), names)
        return _Code(_B, lambda bag: func(a(bag), b(bag)), names)

    def _chain(self, node: Chain, hint: ValueType | None) -> _Code:
        if node.op == "|":
            return self._fallback(node, hint)
        is_and = node.op == "&&"
        codes: list[_Code] = []
        for operand in node.operands:
            code = self.check(operand, None)
            self._expect(code, _B, f'an operand of "{node.op}"', operand.pos)
            codes.append(code)
        # Drop operands that cannot change the result and stop at one that decides it: both are
        # constants, so nothing observable (reads, errors) is lost.
        kept: list[_Code] = []
        for code in codes:
            if code.is_const:
                if code.const is is_and:
                    continue
                kept.append(code)
                break
            kept.append(code)
        if not kept:
            return _constant(_B, is_and)
        if len(kept) == 1:
            return kept[0]
        names = _union(kept)
        evaluators = tuple(c.strict for c in kept)
        joiner = " and " if is_and else " or "

        def emit(e: Emitter) -> str:
            # Operands are BOOL, so `and`/`or` give the same value as the closures' loops.
            return "(" + joiner.join(strict_source(c, e) for c in kept) + ")"

        if len(evaluators) == 2:
            e0, e1 = evaluators
            if is_and:
                return _Code(_B, lambda bag: e0(bag) and e1(bag), names, emit=emit)
            return _Code(_B, lambda bag: e0(bag) or e1(bag), names, emit=emit)

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

        return _Code(_B, all_of if is_and else any_of, names, emit=emit)

    def _fallback(self, node: Chain, hint: ValueType | None) -> _Code:
        operands = node.operands
        # Type the operands that are not literals first, so "0ms" in `response.duration | "0ms"`
        # is converted to the type of the attribute.
        order = sorted(range(len(operands)), key=lambda i: _convertible(operands[i], True))
        codes: dict[int, _Code] = {}
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
        chain: list[_Code] = []
        for i in range(len(operands)):
            chain.append(codes[i])
            if codes[i].is_const:
                break  # a constant is never absent: the rest is unreachable
        if len(chain) == 1:
            return chain[0]
        type_ = first.type
        names = _union(chain)
        heads = chain[:-1]

        def emit_chain(e: Emitter, last_source: Callable[[_Code, Emitter], str]) -> str:
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
            return _Code(type_, _read_or_default(heads, chain[-1].const), names, emit=emit)
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

            return _Code(type_, strict2, names, optional2, emit=emit, emit_opt=emit_opt)

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

        return _Code(type_, strict, names, optional, emit=emit, emit_opt=emit_opt)

    # -- functions

    def _call(self, node: Call, hint: ValueType | None) -> _Code:
        name = node.name
        # A method call is the function with the receiver as first argument: s.startsWith(p).
        args = [node.receiver, *node.args] if node.receiver is not None else list(node.args)
        if name not in _FUNCTIONS:
            kind = "method" if node.receiver is not None else "function"
            raise self._error(f'unknown {kind} "{name}"', node.name_pos)
        if name == "conditional":
            self._arity(node, args, 3)
            return self._conditional(node, args, hint)
        if name == "emptyStringMap":
            self._arity(node, args, 0)
            return _constant(_M, fn.EMPTY_STRING_MAP)
        if name in _VALIDATORS:
            self._arity(node, args, 1)
            arg = self._string_arg(node, args, 0)
            target = _VALIDATORS[name]
            convert = CONVERTERS[target]
            return self._apply(convert, target, [arg], args[0].pos, fallible=True)
        if name == "toLower":
            self._arity(node, args, 1)
            return self._apply(fn.to_lower, _S, [self._string_arg(node, args, 0)], node.pos, fallible=False)
        if name == "size":
            self._arity(node, args, 1)
            arg = self.check(args[0], None)
            if arg.type.is_string_like:
                return self._apply(fn.size_of_string, _I, [arg], node.pos, fallible=False)
            if arg.type in (_M, ValueType.BYTES):
                return self._apply(fn.size_of_container, _I, [arg], node.pos, fallible=False)
            raise self._error(
                f'argument 1 of "size" must be a string, STRING_MAP or BYTES, got {arg.type.name}',
                args[0].pos,
            )
        self._arity(node, args, 2)
        first = self._string_arg(node, args, 0)
        second = self._string_arg(node, args, 1)
        if name == "match":
            return self._glob(first, second, node.pos)
        if name == "matches":
            return self._regex(first, second, args[0].pos)
        func = fn.starts_with if name == "startsWith" else fn.ends_with
        if second.is_const and not first.is_const:
            a, c = first.strict, second.const
            method = str.startswith if name == "startsWith" else str.endswith
            fcode = first
            return _Code(
                _B,
                lambda bag: method(a(bag), c),
                first.names,
                emit=lambda e: f"{e.value(method)}({strict_source(fcode, e)}, {e.literal(c)})",
            )
        return self._apply(func, _B, [first, second], node.pos, fallible=False)

    def _arity(self, node: Call, args: list[Node], count: int) -> None:
        if len(args) != count:
            plural = "" if count == 1 else "s"
            raise self._error(f'"{node.name}" takes {count} argument{plural}, got {len(args)}', node.name_pos)

    def _string_arg(self, node: Call, args: list[Node], index: int) -> _Code:
        code = self.check(args[index], None)
        if not code.type.is_string_like:
            raise self._error(
                f'argument {index + 1} of "{node.name}" must be a string, got {code.type.name}',
                args[index].pos,
            )
        return code

    def _conditional(self, node: Call, args: list[Node], hint: ValueType | None) -> _Code:
        cond = self.check(args[0], None)
        self._expect(cond, _B, 'the condition of "conditional"', args[0].pos)
        yes, no = self._pair(args[1], args[2], hint, strings=True)
        if yes.type is not no.type:
            raise self._error(
                f'the branches of "conditional" must have the same type, got {yes.type.name} and '
                f"{no.type.name}",
                args[2].pos,
            )
        if cond.is_const:
            return yes if cond.const else no
        c, c_opt = cond.strict, cond.optional
        y, n, y_opt, n_opt = yes.strict, no.strict, yes.optional, no.optional

        def strict(bag: AttributeBag) -> Value:
            return y(bag) if c(bag) else n(bag)

        def optional(bag: AttributeBag) -> Value:
            chosen = c_opt(bag)
            if chosen is None:
                return None
            return y_opt(bag) if chosen else n_opt(bag)

        def emit(e: Emitter) -> str:
            return f"({strict_source(yes, e)} if {strict_source(cond, e)} else {strict_source(no, e)})"

        def emit_opt(e: Emitter) -> str:
            t = e.temp()
            return (
                f"(None if ({t} := {optional_source(cond, e)}) is None "
                f"else ({optional_source(yes, e)} if {t} else {optional_source(no, e)}))"
            )

        return _Code(
            yes.type, strict, cond.names | yes.names | no.names, optional, emit=emit, emit_opt=emit_opt
        )

    def _glob(self, subject: _Code, pattern: _Code, pos: int) -> _Code:
        if not pattern.is_const or subject.is_const:
            return self._apply(fn.glob_match, _B, [subject, pattern], pos, fallible=False)
        glob = pattern.const
        assert isinstance(glob, str)
        s = subject.strict
        if glob.endswith("*"):
            prefix = glob[:-1]
            return _Code(
                _B,
                lambda bag: s(bag).startswith(prefix),
                subject.names,
                emit=lambda e: f"{strict_source(subject, e)}.startswith({e.literal(prefix)})",
            )
        if glob.startswith("*"):
            suffix = glob[1:]
            return _Code(
                _B,
                lambda bag: s(bag).endswith(suffix),
                subject.names,
                emit=lambda e: f"{strict_source(subject, e)}.endswith({e.literal(suffix)})",
            )
        return _Code(
            _B,
            lambda bag: s(bag) == glob,
            subject.names,
            emit=lambda e: f"({strict_source(subject, e)} == {e.literal(glob)})",
        )

    def _regex(self, pattern: _Code, subject: _Code, pos: int) -> _Code:
        if not pattern.is_const:
            # A pattern from the request: RE2 bounds its cost; one RE2 refuses matches nothing and is
            # counted, so a caller cannot turn a rule's match into an error.
            return self._apply(REQUEST_PATTERNS.search, _B, [pattern, subject], pos, fallible=False)
        source = pattern.const
        assert isinstance(source, str)
        try:
            compiled = compile_re2(source)
        except RegexError as exc:
            raise self._error(f"invalid regular expression {source!r}: {exc}", pos) from None
        find = compiled.search
        if subject.is_const:
            assert isinstance(subject.const, str)
            return _constant(_B, find(subject.const))
        s = subject.strict
        return _Code(
            _B,
            lambda bag: find(s(bag)),
            subject.names,
            emit=lambda e: f"{e.value(find)}({strict_source(subject, e)})",
        )


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


def _read_or_default(heads: list[_Code], default: Value) -> Evaluator:
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


def _convertible(node: Node, strings: bool) -> bool:
    """Whether ``node`` is a literal whose type may follow the other operand's."""
    return isinstance(node, Literal) and (node.kind == "int" or (strings and node.kind == "string"))
