"""Property tests: the front end fails only with ExpressionError, and literals round-trip."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from mixer.attributes import ISTIO_MANIFEST, AttributeBag
from mixer.expr import ExpressionError, compile, evaluate

_TOKENS = [
    "request.size",
    "source.labels",
    "request.headers",
    "context.protocol",
    "response.duration",
    "source.ip",
    "connection.mtls",
    '"x"',
    '"0ms"',
    '"10.0.0.1"',
    "1",
    "0",
    "2.5",
    "true",
    "false",
    "(",
    ")",
    "[",
    "]",
    ",",
    ".",
    "==",
    "!=",
    "<",
    ">=",
    "&&",
    "||",
    "|",
    "+",
    "-",
    "*",
    "/",
    "!",
    "match",
    "matches",
    "startsWith",
    "conditional",
    "size",
    "ip",
    "duration",
    "toLower",
    "emptyStringMap",
    '"\\',
    "`",
]

_BAG = AttributeBag(
    {
        "request.size": 5,
        "source.labels": {"x": "y"},
        "context.protocol": "http",
        "response.duration": timedelta(seconds=1),
        "connection.mtls": False,
    }
)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_fails_only_with_expression_errors(text: str) -> None:
    try:
        compile(text, ISTIO_MANIFEST)
    except ExpressionError as exc:
        position = exc.position
    else:
        return
    assert position is None or 0 <= position <= len(text)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=14).map(" ".join))
def test_token_soup_fails_only_with_expression_errors(text: str) -> None:
    try:
        compiled = compile(text, ISTIO_MANIFEST)
    except ExpressionError as exc:
        position = exc.position
        assert position is None or 0 <= position <= len(text)
        return
    with contextlib.suppress(ExpressionError):
        compiled.evaluate(_BAG)


def _go_quote(value: str, escape_all: bool) -> str:
    out = []
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif escape_all or code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@settings(max_examples=300)
@given(st.text(), st.booleans())
def test_string_literals_round_trip(value: str, escape_all: bool) -> None:
    assert evaluate(_go_quote(value, escape_all), {}) == value


@settings(max_examples=200)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int_literals_round_trip(value: int) -> None:
    assert evaluate(str(value), {}) == value
    assert evaluate(hex(value) if value >= 0 else f"-{hex(-value)}", {}) == value


@settings(max_examples=200)
@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_duration_microseconds_round_trip(micros: int) -> None:
    assert evaluate(f'duration("{micros}us")', {}) == timedelta(microseconds=micros)


@settings(max_examples=200)
@given(st.text(max_size=8), st.text(st.characters(exclude_characters="*"), max_size=4))
def test_glob_prefix_and_suffix(subject: str, part: str) -> None:
    attrs = {"s": subject, "p": part}
    assert evaluate('match(s, p + "*")', attrs) is subject.startswith(part)
    assert evaluate('match(s, "*" + p)', attrs) is subject.endswith(part)
    # Literal patterns take the precompiled path and must agree with the dynamic one.
    literal = _go_quote(part + "*", escape_all=False)
    assert evaluate(f"match(s, {literal})", attrs) is subject.startswith(part)


_SMALL = st.integers(min_value=-1000, max_value=1000)


@given(_SMALL, _SMALL, _SMALL)
def test_arithmetic_follows_go_precedence(a: int, b: int, c: int) -> None:
    assert evaluate(f"{a} + {b} * {c}", {}) == a + b * c
    assert evaluate(f"{a} - {b} - {c}", {}) == a - b - c
    assert evaluate("x * y + z", {"x": a, "y": b, "z": c}) == a * b + c


@given(st.lists(st.one_of(st.none(), st.integers(0, 9)), min_size=1, max_size=6))
def test_fallback_takes_the_first_present(values: list[int | None]) -> None:
    names = [f"a{i}" for i in range(len(values))]
    attrs = {name: v for name, v in zip(names, values, strict=True) if v is not None}
    manifest = {name: ISTIO_MANIFEST["request.size"] for name in names}
    expected = next((v for v in values if v is not None), -1)
    assert evaluate(" | ".join([*names, "-1"]), attrs, manifest) == expected


@given(st.booleans(), st.booleans(), st.booleans())
def test_boolean_operators_follow_go_precedence(a: bool, b: bool, c: bool) -> None:
    attrs = {"a": a, "b": b, "c": c}
    assert evaluate("a || b && c", attrs) is (a or (b and c))
    assert evaluate("!a && b || c", attrs) is (((not a) and b) or c)
    assert evaluate("a == b == c", attrs) is ((a == b) == c)


_REGEX_PIECES = st.sampled_from(
    ["a", "b", ".", "*", "+", "?", "|", "(", ")", "(?:", "(?i)", "[", "]", "^", "$", "-", "&", "~", "\\", "{", "}",
     "2", ",", ":", "=", "!", "<", ">", "P", "d", "w", "z", "Q", "E", "x", "[:alpha:]"]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(_REGEX_PIECES, max_size=10).map("".join), st.text(alphabet="ab-&[]\n", max_size=6))
def test_regex_patterns_fail_only_with_expression_errors(pattern: str, subject: str) -> None:
    # Warnings are errors in this suite, so a pattern that makes `re` warn fails here too.
    literal = _go_quote(pattern, escape_all=False)
    try:
        result = evaluate(f"{literal}.matches(s)", {"s": subject})
    except ExpressionError:
        return
    assert isinstance(result, bool)
