"""One contract suite, mixer.testing's, run over every registered adapter (built-in or installed)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from mixer import AdapterInfo
from mixer.testing import AdapterContract
from plugins.manager import ADAPTER_ATTRIBUTE, BUILTIN_ADAPTERS, create_plugin_manager

# Built once at collection to generate the suites; each test still builds its own handler.
_REGISTRY = create_plugin_manager(blocked=()).registry()
_ADAPTERS = sorted(_REGISTRY.adapters.values(), key=lambda info: info.name)
_TEMPLATES = tuple(_REGISTRY.templates.values())

#: Params layered over an adapter's defaults so that starting it binds no fixed port: tests
#: never take a port that something else on the machine may hold.
EPHEMERAL_PARAMS: dict[str, dict[str, object]] = {"prometheus": {"listen": "127.0.0.1:0"}}


def _suite(info: AdapterInfo) -> type[AdapterContract]:
    attributes = {"adapter": info, "params": EPHEMERAL_PARAMS.get(info.name, {}), "templates": _TEMPLATES}
    return type(f"TestContract_{info.name}", (AdapterContract,), attributes)


# One test class per adapter, named for it: TestContract_stdio::test_start_and_idempotent_shutdown.
globals().update((suite.__name__, suite) for suite in map(_suite, _ADAPTERS))


def test_every_registered_adapter_has_a_suite() -> None:
    suites = {
        name for name, value in globals().items() if isinstance(value, type) and name.startswith("Test")
    }
    assert suites == {f"TestContract_{info.name}" for info in _ADAPTERS}
    assert {"stdio", "memquota", "prometheus"} <= {info.name for info in _ADAPTERS}


@pytest.mark.parametrize("info", _ADAPTERS, ids=lambda info: info.name)
def test_the_manager_sets_the_origin(info: AdapterInfo) -> None:
    assert info.origin


@pytest.mark.parametrize("module_name", BUILTIN_ADAPTERS)
def test_builtin_adapter_is_a_declaration(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert isinstance(getattr(module, ADAPTER_ATTRIBUTE), AdapterInfo)
    # Declared, not registered through the hook: the manager reads the attribute.
    assert not hasattr(module, "mixer_register_adapters")
    assert not hasattr(module, "ADAPTER_INFO")


@pytest.mark.parametrize("module_name", BUILTIN_ADAPTERS)
def test_builtin_adapter_readme_documents_every_param(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__file__ is not None
    readme = Path(module.__file__).parent / "README.md"
    assert readme.is_file(), f"{module_name} has no README.md"
    text = readme.read_text()
    info: AdapterInfo = getattr(module, ADAPTER_ATTRIBUTE)
    assert f"`{info.name}`" in text
    for name in info.config_model.model_fields:
        assert f"`{name}`" in text, f"{readme}: param {name} is not documented"
