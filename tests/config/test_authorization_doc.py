"""The YAML examples in docs/authorization.md load and build a runtime, or fail with the message the doc says."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixer.config import ConfigError, load_config_text
from mixer.registry import Registry
from mixer.runtime import build_runtime
from plugins.manager import create_plugin_manager

DOC = Path(__file__).resolve().parents[2] / "docs" / "authorization.md"
_BLOCK = re.compile(
    r"(?:^<!-- config: (?P<marker>[^\n]*) -->\n)?^```yaml\n(?P<body>.*?)^```", re.DOTALL | re.MULTILINE
)
_MARKER = re.compile(r'valid|invalid "(?P<fragment>(?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Example:
    line: int
    text: str
    fragment: str | None  # None: must load


def examples() -> list[Example]:
    source = DOC.read_text()
    found = []
    for match in _BLOCK.finditer(source):
        line = source.count("\n", 0, match.start("body"))
        marker = match.group("marker")
        assert marker is not None, (
            f"docs/authorization.md:{line}: a yaml block needs a <!-- config: ... --> marker"
        )
        parsed = _MARKER.fullmatch(marker.strip())
        assert parsed is not None, f"docs/authorization.md:{line}: bad marker {marker!r}"
        fragment = parsed.group("fragment")
        found.append(Example(line, match.group("body"), fragment.replace('\\"', '"') if fragment else None))
    return found


EXAMPLES = examples()


@pytest.fixture(scope="module")
def real_registry() -> Registry:
    return create_plugin_manager(load_entry_points=False, blocked=()).registry()


def test_the_doc_has_examples_of_both_kinds() -> None:
    assert sum(e.fragment is None for e in EXAMPLES) >= 6
    assert sum(e.fragment is not None for e in EXAMPLES) >= 4


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"line{e.line}" for e in EXAMPLES])
def test_example(example: Example, real_registry: Registry) -> None:
    if example.fragment is None:
        config = load_config_text(example.text, real_registry, source_name="example.yaml", environ={})
        # Handlers are built too: a plan the params name must exist.
        build_runtime(config, real_registry)
        return
    with pytest.raises(ConfigError) as info:
        load_config_text(example.text, real_registry, source_name="example.yaml", environ={})
    assert any(example.fragment in str(issue) for issue in info.value.issues), str(info.value)


def test_the_doc_shows_both_adapters_and_the_plan_claim() -> None:
    text = DOC.read_text()
    assert "compiledAdapter: jwt" in text
    assert "compiledAdapter: rbac" in text
    assert "compiledTemplate: requestauth" in text
    assert "trust_plan_claim: true" in text
