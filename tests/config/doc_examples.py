"""The YAML examples of a doc page, each marked to load or to fail with a given message.

Every ```yaml block of the page follows a marker line: ``<!-- config: valid -->`` or
``<!-- config: invalid "FRAGMENT" -->`` (``\\"`` for a quote inside), either optionally followed
by ``env NAME=VALUE ...`` (shell-quoted) for the environment the example loads with.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mixer.config import ConfigError, load_config_text
from mixer.registry import Registry
from mixer.runtime import build_runtime

DOCS = Path(__file__).resolve().parents[2] / "docs"
_BLOCK = re.compile(
    r"(?:^<!-- config: (?P<marker>[^\n]*) -->\n)?^```yaml\n(?P<body>.*?)^```", re.DOTALL | re.MULTILINE
)
_MARKER = re.compile(r'(?P<verdict>valid|invalid "(?P<fragment>(?:[^"\\]|\\.)*)")(?: env (?P<env>.*))?')


@dataclass(frozen=True)
class Example:
    line: int
    text: str
    fragment: str | None  # None: must load
    environ: dict[str, str] = field(default_factory=dict)


def examples(doc: Path) -> list[Example]:
    """The examples of ``doc``; a block without a well-formed marker fails the assertion."""
    source = doc.read_text()
    where = f"docs/{doc.name}"
    found = []
    for match in _BLOCK.finditer(source):
        line = source.count("\n", 0, match.start("body"))
        marker = match.group("marker")
        assert marker is not None, f"{where}:{line}: a yaml block needs a <!-- config: ... --> marker"
        parsed = _MARKER.fullmatch(marker.strip())
        assert parsed is not None, f"{where}:{line}: bad marker {marker!r}"
        fragment = parsed.group("fragment")
        if fragment is not None:
            fragment = fragment.replace('\\"', '"')
        environ = dict(item.split("=", 1) for item in shlex.split(parsed.group("env") or ""))
        found.append(Example(line, match.group("body"), fragment, environ))
    return found


def check_example(example: Example, registry: Registry, *, build: bool = False) -> None:
    """Load ``example`` (and with ``build``, build its runtime); or, when it is marked invalid,
    check that loading fails with an issue that contains its fragment."""

    def load() -> None:
        config = load_config_text(example.text, registry, source_name="example.yaml", environ=example.environ)
        if build:
            build_runtime(config, registry)

    if example.fragment is None:
        load()
        return
    with pytest.raises(ConfigError) as info:
        load()
    assert any(example.fragment in str(issue) for issue in info.value.issues), str(info.value)
