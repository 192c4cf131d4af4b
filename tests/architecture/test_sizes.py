"""Size limits of the product code: no module over 500 lines, no class over 300.

A module past the limit has more than one job and a class past it more than one concern; both are
split along their seams instead (see docs/architecture.md). Generated code (mixer/proto) is left
out; tests, benches and fakes are not product code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300
PRODUCT_PACKAGES = ("mixer", "adapters", "plugins")
SOURCE_SUFFIXES = (".py", ".pyx", ".pxi")


def _is_product(path: Path) -> bool:
    parts = path.relative_to(ROOT).parts
    return "proto" not in parts and "tests" not in parts and "__pycache__" not in parts


def product_sources() -> list[Path]:
    found = [
        path
        for package in PRODUCT_PACKAGES
        for path in sorted((ROOT / package).rglob("*"))
        if path.suffix in SOURCE_SUFFIXES and _is_product(path)
    ]
    return found


def class_lengths(source: str) -> dict[str, int]:
    """Lines of every class in ``source`` by qualified name, docstring and blank lines included."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, ast.ClassDef):
                name = f"{prefix}{child.name}"
                assert child.end_lineno is not None
                lengths[name] = child.end_lineno - child.lineno + 1
                name += "."
            visit(child, name)

    visit(ast.parse(source), "")
    return lengths


def test_the_walk_finds_the_product_code() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in product_sources()}
    assert "mixer/delivery/_delivery.py" in names
    assert "mixer/wire/_cdecode.pyx" in names
    assert "plugins/manager.py" in names
    assert not any("/proto/" in name or "/tests/" in name for name in names)


def test_class_lengths_count_nested_classes_apart() -> None:
    source = "class A:\n    x = 1\n\n    class B:\n        y = 2\n        z = 3\n"
    assert class_lengths(source) == {"A": 6, "A.B": 3}


@pytest.mark.parametrize("path", product_sources(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_module_and_class_sizes(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    lines = len(source.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{lines} lines: split the module along its seams"
    if path.suffix == ".py":
        over = {name: n for name, n in class_lengths(source).items() if n > MAX_CLASS_LINES}
        assert not over, f"classes over {MAX_CLASS_LINES} lines: {over}"
