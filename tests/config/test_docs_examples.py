"""The YAML examples in docs/config.md load, or fail with the message the doc says."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixer.config import ConfigError, load_config_text
from mixer.registry import Registry
from plugins.manager import create_plugin_manager

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"
_BLOCK = re.compile(
    r"(?:^<!-- config: (?P<marker>[^\n]*) -->\n)?^```yaml\n(?P<body>.*?)^```", re.DOTALL | re.MULTILINE
)
_MARKER = re.compile(r'(?P<verdict>valid|invalid "(?P<fragment>(?:[^"\\]|\\.)*)")(?: env (?P<env>.*))?')


@dataclass(frozen=True)
class Example:
    line: int
    text: str
    fragment: str | None  # None: must load
    environ: dict[str, str]


def examples() -> list[Example]:
    source = DOC.read_text()
    found = []
    for match in _BLOCK.finditer(source):
        line = source.count("\n", 0, match.start("body"))
        marker = match.group("marker")
        assert marker is not None, f"docs/config.md:{line}: a yaml block needs a <!-- config: ... --> marker"
        parsed = _MARKER.fullmatch(marker.strip())
        assert parsed is not None, f"docs/config.md:{line}: bad marker {marker!r}"
        fragment = parsed.group("fragment")
        if fragment is not None:
            fragment = fragment.replace('\\"', '"')
        environ = dict(item.split("=", 1) for item in shlex.split(parsed.group("env") or ""))
        found.append(Example(line, match.group("body"), fragment, environ))
    return found


EXAMPLES = examples()


@pytest.fixture(scope="module")
def real_registry() -> Registry:
    return create_plugin_manager(load_entry_points=False, blocked=()).registry()


def test_the_doc_has_examples_of_both_kinds() -> None:
    assert sum(e.fragment is None for e in EXAMPLES) >= 5
    assert sum(e.fragment is not None for e in EXAMPLES) >= 3


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"line{e.line}" for e in EXAMPLES])
def test_example(example: Example, real_registry: Registry) -> None:
    def load() -> None:
        load_config_text(example.text, real_registry, source_name="example.yaml", environ=example.environ)

    if example.fragment is None:
        load()
        return
    with pytest.raises(ConfigError) as info:
        load()
    assert any(example.fragment in str(issue) for issue in info.value.issues), str(info.value)
