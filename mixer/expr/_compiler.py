"""Compiling an expression: parse, type-check (:mod:`mixer.expr._checker`), wrap the result."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from mixer.attributes import (
    ISTIO_MANIFEST,
    AttributeBag,
    AttributeValue,
    ValueType,
    conforms,
    infer_value_type,
)
from mixer.expr._checker import Checker
from mixer.expr._code import Code, Evaluator, strict_source
from mixer.expr._errors import EvaluationError, ExpressionTypeError
from mixer.expr._parser import parse
from mixer.expr.codegen import CAUGHT, Emitter, evaluation_error, make_function

_S = ValueType.STRING


class CompiledExpression:
    """A type-checked expression, ready to evaluate against many bags (safe to share between threads).

    ``text`` is the source, ``type`` the result's :class:`ValueType`.
    """

    __slots__ = ("_code", "_fn", "_names", "text", "type")

    def __init__(
        self, text: str, type_: ValueType, fn_: Evaluator, names: frozenset[str], code: Code | None = None
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
    code = Checker(text, manifest).check(root, expected)
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
