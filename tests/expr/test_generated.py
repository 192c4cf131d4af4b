"""Generated expression functions equal the compiled closures (the reference) on the case table."""

from __future__ import annotations

import pytest

from mixer.attributes import AttributeBag, TrackingBag, ValueType
from mixer.expr import ExpressionSyntaxError, ExpressionTypeError, compile
from tests.expr.cases import CASES, Case
from tests.expr.test_cases import _manifest, _same

COMPILABLE = [c for c in CASES if c.error not in (ExpressionSyntaxError, ExpressionTypeError)]


def _outcome(evaluate: object, bag: AttributeBag) -> tuple[str, object]:
    try:
        return "value", evaluate(bag)  # type: ignore[operator]
    except Exception as exc:
        return "error", (type(exc), str(exc), getattr(exc, "position", None))


def test_most_cases_compile() -> None:
    assert len(COMPILABLE) >= 150


@pytest.mark.parametrize("case", COMPILABLE, ids=[f"{i}:{c.text[:40]}" for i, c in enumerate(COMPILABLE)])
def test_generated_equals_closures(case: Case) -> None:
    compiled = compile(case.text, _manifest(case), case.expected)
    generated = compiled.generated()
    for make_bag in (AttributeBag, TrackingBag):
        reference_bag, generated_bag = make_bag(case.attrs), make_bag(case.attrs)  # type: ignore[arg-type]
        kind, expected = _outcome(compiled.evaluate, reference_bag)
        got_kind, got = _outcome(generated, generated_bag)
        assert got_kind == kind, (got, expected)
        if kind == "value":
            assert _same(got, expected), f"{got!r} != {expected!r}"
        else:
            assert got == expected
        if isinstance(reference_bag, TrackingBag):
            assert isinstance(generated_bag, TrackingBag)
            # The generated code reads exactly what the closures read.
            assert generated_bag.referenced() == reference_bag.referenced()


def test_code_too_deep_for_python_falls_back_to_the_closures() -> None:
    manifest = {"a": ValueType.STRING}
    # 900 fallbacks nest deeper than Python's parser allows in one generated expression.
    compiled = compile(" | ".join(["a"] * 900) + ' | "x"', manifest)
    generated = compiled.generated()
    assert generated == compiled.evaluate
    assert generated(AttributeBag({})) == "x"
    assert generated(AttributeBag({"a": "q"})) == "q"
