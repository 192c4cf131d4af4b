"""Runs the case table in cases.py through compile/evaluate and the TrackingBag."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest

from mixer.attributes import (
    ISTIO_MANIFEST,
    AttributeBag,
    AttributeMatch,
    TrackingBag,
    ValueType,
    infer_value_type,
)
from mixer.expr import AbsentAttributeError, ExpressionError, compile, evaluate
from tests.expr.cases import CASES, Case


def _manifest(case: Case) -> dict[str, ValueType]:
    types = dict(ISTIO_MANIFEST)
    types.update({name: infer_value_type(value) for name, value in case.attrs.items()})
    types.update(case.types)
    return types


def _same(actual: object, expected: object) -> bool:
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(actual, float) and math.isnan(actual)
    if isinstance(expected, dict):
        return isinstance(actual, Mapping) and dict(actual) == expected
    # bool is an int in Python: compare the kinds too, so True never passes for 1.
    return type(actual) is type(expected) and actual == expected


def _compile_and_evaluate(case: Case) -> object:
    compiled = compile(case.text, _manifest(case), case.expected)
    return compiled.evaluate(TrackingBag(case.attrs))  # type: ignore[arg-type]


def test_table_has_enough_cases() -> None:
    assert len(CASES) >= 200


def test_every_case_asserts_something() -> None:
    for case in CASES:
        assert case.has_result != (case.error is not None), case.text
        if case.error is not None:
            assert case.fragment, case.text


@pytest.mark.parametrize("case", CASES, ids=[f"{i}:{c.text[:40]}" for i, c in enumerate(CASES)])
def test_case(case: Case) -> None:
    manifest = _manifest(case)
    if case.error is not None:
        with pytest.raises(case.error) as info:
            _compile_and_evaluate(case)
        assert case.fragment in str(info.value)
        if case.position is not None:
            assert info.value.position == case.position
            if not isinstance(info.value, AbsentAttributeError):
                assert f" at {case.position}" in str(info.value)
        return
    compiled = compile(case.text, manifest, case.expected)
    if case.type is not None:
        assert compiled.type is case.type
    bag = TrackingBag(case.attrs)  # type: ignore[arg-type]
    result = compiled.evaluate(bag)
    assert _same(result, case.result), f"{result!r} != {case.result!r}"
    if case.reads is not None:
        expected_reads = sorted(
            (AttributeMatch(name, cond, key) for name, key, cond in case.reads),
            key=lambda m: (m.name, m.map_key is not None, m.map_key or ""),
        )
        assert bag.referenced() == expected_reads
    # The one-shot API must agree with compile + evaluate where it applies.
    if case.expected is None and not case.types:
        assert _same(evaluate(case.text, case.attrs), case.result)
    # A plain bag reads the same values as the tracking one.
    assert _same(compiled.evaluate(AttributeBag(case.attrs)), case.result)  # type: ignore[arg-type]


def test_errors_are_expression_errors() -> None:
    for case in CASES:
        if case.error is not None:
            assert issubclass(case.error, ExpressionError)
