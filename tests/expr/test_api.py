"""The public API around the language: errors, evaluate(), referenced_names, bag access discipline."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta

import pytest

import mixer.expr
from mixer.attributes import (
    ISTIO_MANIFEST,
    AttributeBag,
    AttributeValue,
    Condition,
    TrackingBag,
    ValueType,
)
from mixer.expr import (
    AbsentAttributeError,
    CompiledExpression,
    EvaluationError,
    ExpressionError,
    ExpressionSyntaxError,
    ExpressionTypeError,
    compile,
    evaluate,
    referenced_names,
)

M = ISTIO_MANIFEST


def test_public_names() -> None:
    assert sorted(mixer.expr.__all__) == sorted(
        [
            "AbsentAttributeError",
            "CompiledExpression",
            "EvaluationError",
            "ExpressionError",
            "ExpressionSyntaxError",
            "ExpressionTypeError",
            "PatternCacheStats",
            "Regex",
            "RegexError",
            "compile",
            "compile_re2",
            "evaluate",
            "referenced_names",
            "request_pattern_stats",
        ]
    )


def test_error_hierarchy() -> None:
    for cls in (ExpressionSyntaxError, ExpressionTypeError, EvaluationError):
        assert issubclass(cls, ExpressionError)
    assert issubclass(AbsentAttributeError, EvaluationError)


def test_error_message_shows_position() -> None:
    with pytest.raises(ExpressionTypeError) as info:
        compile("1 == foo.bar", M)
    assert info.value.position == 5
    assert str(info.value) == 'unknown attribute "foo.bar" at 5: 1 == >>>foo.bar'


def test_long_text_is_excerpted_around_the_position() -> None:
    text = "request.size == 1 && " * 10 + "nope.x"
    with pytest.raises(ExpressionTypeError) as info:
        compile(text, M)
    message = str(info.value)
    assert message.startswith(f'unknown attribute "nope.x" at {len(text) - 6}: ...')
    assert message.endswith(">>>nope.x")


def test_absent_attribute_error_names_it() -> None:
    compiled = compile('request.headers["x-user"] == "a"', M)
    with pytest.raises(AbsentAttributeError) as info:
        compiled.evaluate(AttributeBag({}))
    assert info.value.name == "request.headers"
    assert info.value.key == "x-user"
    assert "request.headers" in str(info.value)


def test_spec_examples() -> None:
    assert evaluate('source.labels["app"] | "unknown"', {"source.labels": {"app": "web"}}) == "web"
    assert evaluate('source.labels["app"] | "unknown"', {}) == "unknown"


def test_evaluate_without_manifest_rejects_unknown_names() -> None:
    with pytest.raises(ExpressionTypeError, match=r'unknown attribute "my\.attr"'):
        evaluate('my.attr | "x"', {})
    assert evaluate('my.attr | "x"', {"my.attr": "y"}) == "y"


def test_evaluate_types_from_values_over_the_vocabulary() -> None:
    # source.ip is IP_ADDRESS in Istio's vocabulary; a str value makes it STRING here.
    assert evaluate('source.ip == "10.0.0.1"', {"source.ip": "10.0.0.1"}) is True


def test_evaluate_with_manifest() -> None:
    manifest = {"a": ValueType.INT64, "d": ValueType.DURATION}
    assert evaluate("a + 1", {"a": 1}, manifest) == 2
    assert evaluate('d | "1s"', {}, manifest) == timedelta(seconds=1)
    with pytest.raises(ExpressionTypeError, match='unknown attribute "b"'):
        evaluate("b", {"b": 1}, manifest)
    with pytest.raises(EvaluationError, match='attribute "a" is declared INT64 but holds str'):
        evaluate("a + 1", {"a": "1"}, manifest)


def test_evaluate_rejects_values_of_no_attribute_type() -> None:
    with pytest.raises(ExpressionTypeError, match="list is not an attribute value type"):
        evaluate("x", {"x": [1]})
    with pytest.raises(ExpressionTypeError, match="timezone-aware"):
        evaluate("x", {"x": datetime(2020, 1, 1)})


def test_compile_rejects_non_text() -> None:
    with pytest.raises(ExpressionTypeError, match="must be a string"):
        compile(42, M)  # type: ignore[arg-type]


def test_unspecified_expected_type_means_any() -> None:
    assert compile("1", M, ValueType.VALUE_TYPE_UNSPECIFIED).type is ValueType.INT64


def test_wrong_typed_bag_value_is_an_evaluation_error() -> None:
    compiled = compile("request.size + 1", M)
    with pytest.raises(EvaluationError, match=r"cannot evaluate 'request\.size \+ 1'"):
        compiled.evaluate(AttributeBag({"request.size": "x"}))
    with pytest.raises(EvaluationError, match="not a string map"):
        compile('request.headers["a"]', M).evaluate(TrackingBag({"request.headers": "x"}))


def test_referenced_names() -> None:
    assert referenced_names(compile('api.protocol | context.protocol | "unknown"', M)) == {
        "api.protocol",
        "context.protocol",
    }
    assert referenced_names(compile('request.headers["x"] == source.name', M)) == {
        "request.headers",
        "source.name",
    }
    assert referenced_names(compile("false && request.size > 0", M)) == frozenset()
    assert referenced_names(compile('"a" | request.path', M)) == frozenset()


def test_compiled_expression_attributes() -> None:
    compiled = compile('response.duration | "0ms"', M)
    assert isinstance(compiled, CompiledExpression)
    assert compiled.text == 'response.duration | "0ms"'
    assert compiled.type is ValueType.DURATION
    assert not hasattr(compiled, "__dict__")
    assert repr(compiled) == "CompiledExpression('response.duration | \"0ms\"', DURATION)"


class _StrictBag(AttributeBag):
    """Fails on any access but get/get_map_value, and logs those."""

    __slots__ = ("log",)

    def __init__(self, values: Mapping[str, AttributeValue]) -> None:
        super().__init__(values)
        self.log: list[tuple[str, ...]] = []

    def get(self, name: str) -> AttributeValue | None:
        self.log.append(("get", name))
        return super().get(name)

    def get_map_value(self, name: str, key: str) -> str | None:
        self.log.append(("get_map_value", name, key))
        return super().get_map_value(name, key)

    def __contains__(self, name: object) -> bool:
        raise AssertionError("contains")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("iter")

    def to_dict(self) -> dict[str, AttributeValue]:
        raise AssertionError("to_dict")


def test_reads_go_only_through_get_and_get_map_value() -> None:
    bag = _StrictBag({"request.headers": {"x-user": "a"}, "source.labels": {}, "context.protocol": "http"})
    compiled = compile(
        'request.headers["x-user"] == "a" && (source.labels["app"] | "u") == "u" && context.protocol == "http"',
        M,
    )
    assert compiled.evaluate(bag) is True
    assert bag.log == [
        ("get_map_value", "request.headers", "x-user"),
        ("get_map_value", "source.labels", "app"),
        ("get", "context.protocol"),
    ]


def test_constants_are_folded() -> None:
    bag = _StrictBag({})
    for text in (
        "1 + 2 * 3 == 7",
        'ip("10.0.0.1") == "10.0.0.1"',
        'size(toLower("AB")) == 2',
        '"a.c".matches("abc")',
    ):
        assert compile(text, M).evaluate(bag) is True
    assert bag.log == []


def test_literal_patterns_are_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compile('"^/api/v[0-9]+".matches(request.path) && match(request.path, "/api*")', M)

    def refuse(*args: object) -> None:
        raise AssertionError("pattern compiled at evaluation")

    monkeypatch.setattr("mixer.expr._check_calls.compile_re2", refuse)
    monkeypatch.setattr("mixer.expr._functions.glob_match", refuse)
    assert compiled.evaluate(AttributeBag({"request.path": "/api/v2/x"})) is True


class _LazyMap(Mapping[str, str]):
    """A string map that only answers lookups (like the wire codec's lazy maps)."""

    def __init__(self, data: dict[str, str]) -> None:
        self._data = data
        self.lookups: list[str] = []

    def __getitem__(self, key: str) -> str:
        self.lookups.append(key)
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("iterated")

    def __len__(self) -> int:
        return len(self._data)


def test_lazy_string_maps() -> None:
    lazy = _LazyMap({"app": "web"})
    compiled = compile('source.labels["app"] | "none"', M)
    assert compiled.evaluate(AttributeBag({"source.labels": lazy})) == "web"
    assert compiled.evaluate(TrackingBag({"source.labels": lazy})) == "web"
    assert lazy.lookups == ["app", "app"]
    assert compile("size(source.labels)", M).evaluate(AttributeBag({"source.labels": lazy})) == 1


def test_compiled_expression_is_reusable() -> None:
    compiled = compile('context.protocol == "http" || context.protocol == "grpc"', M)
    results = [compiled.evaluate(AttributeBag({"context.protocol": p})) for p in ("http", "tcp", "grpc")]
    assert results == [True, False, True]


def test_tracking_absence_conditions() -> None:
    bag = TrackingBag({"request.headers": {}})
    assert compile('request.headers["a"] | source.name | "x"', M).evaluate(bag) == "x"
    assert [(m.name, m.map_key, m.condition) for m in bag.referenced()] == [
        ("request.headers", "a", Condition.ABSENCE),
        ("source.name", None, Condition.ABSENCE),
    ]
