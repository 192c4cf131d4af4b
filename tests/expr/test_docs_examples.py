"""Runs every example in docs/expressions.md (the ```expr blocks) through mixer.expr.evaluate."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixer.expr import ExpressionError, evaluate

DOC = Path(__file__).resolve().parents[2] / "docs" / "expressions.md"
_BLOCK = re.compile(r"^```expr\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LET = re.compile(r'let\s+(?P<name>[A-Za-z_][\w.]*)(?:\["(?P<key>[^"]*)"\])?\s+=\s+(?P<value>.+)')


@dataclass(frozen=True)
class Example:
    line: int
    text: str
    attributes: dict[str, object]
    result: str


def _examples() -> list[Example]:
    doc = DOC.read_text(encoding="utf-8")
    examples: list[Example] = []
    for block in _BLOCK.finditer(doc):
        first_line = doc.count("\n", 0, block.start(1)) + 1
        attributes: dict[str, object] = {}
        for offset, raw in enumerate(block.group(1).splitlines()):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            let = _LET.fullmatch(line)
            if let is not None:
                value = evaluate(let["value"], {})
                if let["key"] is None:
                    attributes[let["name"]] = value
                else:
                    current = attributes.setdefault(let["name"], {})
                    assert isinstance(current, dict)
                    current[let["key"]] = value
                continue
            text, arrow, result = line.rpartition("  =>  ")
            assert arrow, f"line {first_line + offset}: neither 'let' nor 'EXPR  =>  RESULT': {line!r}"
            examples.append(Example(first_line + offset, text.strip(), _copy(attributes), result.strip()))
    return examples


def _copy(attributes: dict[str, object]) -> dict[str, object]:
    return {k: dict(v) if isinstance(v, dict) else v for k, v in attributes.items()}


EXAMPLES = _examples()


def test_doc_has_enough_examples() -> None:
    assert len(EXAMPLES) >= 15


def test_doc_explains_the_example_format() -> None:
    head = DOC.read_text(encoding="utf-8").split("```expr", 1)[0]
    assert "`let NAME = VALUE`" in head
    assert "`EXPRESSION  =>  RESULT`" in head
    assert "`error: TEXT`" in head


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"line{e.line}" for e in EXAMPLES])
def test_example(example: Example) -> None:
    if example.result.startswith("error: "):
        fragment = example.result.removeprefix("error: ")
        with pytest.raises(ExpressionError) as info:
            evaluate(example.text, example.attributes)
        assert fragment in str(info.value)
        return
    expected = evaluate(example.result, {})
    actual = evaluate(example.text, example.attributes)
    assert type(actual) is type(expected)
    assert actual == expected
