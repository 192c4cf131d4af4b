"""The YAML examples in docs/oop-adapters.md load (and build), or fail with the message the doc says."""

from __future__ import annotations

import pytest

from mixer.registry import Registry
from plugins.manager import create_plugin_manager
from tests.config.doc_examples import DOCS, Example, check_example, examples

EXAMPLES = examples(DOCS / "oop-adapters.md")


@pytest.fixture(scope="module")
def real_registry() -> Registry:
    return create_plugin_manager(load_entry_points=False, blocked=()).registry()


def test_the_doc_has_examples_of_both_kinds() -> None:
    assert sum(e.fragment is None for e in EXAMPLES) >= 2
    assert sum(e.fragment is not None for e in EXAMPLES) >= 3


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"line{e.line}" for e in EXAMPLES])
def test_example(example: Example, real_registry: Registry) -> None:
    check_example(example, real_registry, build=True)
