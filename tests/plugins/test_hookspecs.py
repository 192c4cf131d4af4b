"""The hook contract: every hook prefixed, typed, documented, and called by the manager."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mixer import AdapterInfo
from plugins import hookspecs, manager

_ROOT = Path(__file__).resolve().parents[2]


def _hookspecs() -> list[Callable[..., Any]]:
    return [
        obj
        for _, obj in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(obj, f"{hookspecs.hookspec.project_name}_spec")
    ]


HOOKS = _hookspecs()


def test_there_are_hooks() -> None:
    names = {hook.__name__ for hook in HOOKS}
    assert {"mixer_register_adapters", "mixer_register_templates", "mixer_startup", "mixer_shutdown"} <= names


def test_module_states_the_calling_convention() -> None:
    doc = hookspecs.__doc__ or ""
    assert "Calling convention" in doc
    assert "firstresult" in doc


@pytest.mark.parametrize("hook", HOOKS, ids=lambda hook: hook.__name__)
def test_hook_is_prefixed_typed_and_documented(hook: Callable[..., Any]) -> None:
    assert hook.__name__.startswith("mixer_")
    signature = inspect.signature(hook)
    assert signature.return_annotation is not inspect.Signature.empty
    doc = inspect.getdoc(hook) or ""
    assert doc, f"{hook.__name__} has no docstring"
    for name, parameter in signature.parameters.items():
        assert parameter.annotation is not inspect.Parameter.empty, f"{hook.__name__}({name}) is untyped"
        assert f":param {name}:" in doc, f"{hook.__name__} does not document {name}"
    assert ":returns:" in doc


@pytest.mark.parametrize("hook", HOOKS, ids=lambda hook: hook.__name__)
def test_hook_is_called_by_the_manager(hook: Callable[..., Any]) -> None:
    source = inspect.getsource(manager)
    assert re.search(rf'"{hook.__name__}"', source), f"{hook.__name__} is never called"


@pytest.mark.parametrize("hook", HOOKS, ids=lambda hook: hook.__name__)
def test_docs_cover_every_hook(hook: Callable[..., Any]) -> None:
    assert f"`{hook.__name__}" in (_ROOT / "docs" / "plugins.md").read_text()


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(AdapterInfo)])
def test_docs_cover_every_adapter_info_field(field: str) -> None:
    assert f"`{field}`" in (_ROOT / "docs" / "plugins.md").read_text()
