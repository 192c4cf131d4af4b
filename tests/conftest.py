"""Suite-wide collection rules.

Tests that start a real backend process (Redis, Tansu, Prometheus, promtool, nginx) get the
``backends`` marker, so ``make test-unit`` can leave them out on a machine without those programs.
The marker is derived from the code, not written by hand: a test needs backends when its module, or
the module of any fixture it uses, imports one of the backend modules of ``tests.backends``.
"""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

import pytest

#: tests.backends modules that start or call a backend program (``_process`` only manages processes).
BACKEND_MODULES = frozenset(
    {
        "tests.backends.chromium",
        "tests.backends.kafka",
        "tests.backends.nginx",
        "tests.backends.prometheus",
        "tests.backends.redis",
        "tests.backends.redis_cluster",
    }
)


@functools.cache
def _imports_a_backend(module_name: str) -> bool:
    if module_name in BACKEND_MODULES:
        return True
    module = sys.modules.get(module_name)
    source = getattr(module, "__file__", None)
    if not source or not source.endswith(".py"):
        return False
    tree = ast.parse(Path(source).read_text("utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            names = {alias.name for alias in node.names}
        else:
            continue
        if names & BACKEND_MODULES:
            return True
    return False


def _needs_backends(item: pytest.Item) -> bool:
    module = getattr(item, "module", None)
    if module is not None and _imports_a_backend(module.__name__):
        return True
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for definitions in info.name2fixturedefs.values():
        for definition in definitions:
            func = getattr(definition, "func", None)
            if func is not None and _imports_a_backend(getattr(func, "__module__", "")):
                return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _needs_backends(item):
            item.add_marker(pytest.mark.backends)
