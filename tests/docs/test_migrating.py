"""docs/migrating.md keeps its word: its YAML loads, and Istio's files load or fail as its table says.

Istio's files are read from ``../shared/istio-1.4/`` next to the repository (never copied into it).
"""

from __future__ import annotations

import re

import pytest

from mixer.config import ConfigError, load_config
from mixer.registry import Registry
from plugins.manager import create_plugin_manager
from tests.config.doc_examples import DOCS, Example, check_example, examples
from tests.shared_data import SHARED, shared_path

DOC = DOCS / "migrating.md"
ISTIO = SHARED / "istio-1.4"
_ROW = re.compile(
    r"^\| `(?P<path>[^`]+)`[^|]* \| (?P<result>loads|refused: `(?P<fragment>[^`]+)`) \|$", re.MULTILINE
)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return create_plugin_manager(load_entry_points=False, blocked=()).registry()


def _table() -> list[tuple[str, str | None]]:
    return [(m.group("path"), m.group("fragment")) for m in _ROW.finditer(DOC.read_text(encoding="utf-8"))]


def test_the_table_lists_files_both_ways() -> None:
    rows = _table()
    assert len(rows) >= 10
    assert any(fragment is None for _, fragment in rows)
    assert any(fragment is not None for _, fragment in rows)


@pytest.mark.parametrize(("path", "fragment"), _table(), ids=[path for path, _ in _table()])
def test_istio_files_load_as_the_table_says(registry: Registry, path: str, fragment: str | None) -> None:
    source = shared_path("istio-1.4") / path
    assert source.is_file(), f"docs/migrating.md names {path}, which is not in {ISTIO}"
    if fragment is None:
        config = load_config([source], registry, environ={})
        assert config.handlers or config.rules
        return
    with pytest.raises(ConfigError) as info:
        load_config([source], registry, environ={})
    assert any(fragment in str(issue) for issue in info.value.issues), str(info.value)


@pytest.mark.parametrize("example", examples(DOC), ids=lambda example: f"line {example.line}")
def test_yaml_examples(registry: Registry, example: Example) -> None:
    check_example(example, registry, build=True)
