"""One contract suite, run over every registered adapter (built-in or installed)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from mixer import AdapterInfo
from plugins.manager import BUILTIN_ADAPTERS, create_plugin_manager
from tests.plugins import _contract

# Built once at collection to parametrize; each test still uses its own manager where it matters.
_REGISTRY = create_plugin_manager(blocked=()).registry()
_ADAPTERS = sorted(_REGISTRY.adapters.values(), key=lambda info: info.name)


def _ids(info: AdapterInfo) -> str:
    return info.name


@pytest.fixture(params=_ADAPTERS, ids=_ids)
def info(request: pytest.FixtureRequest) -> AdapterInfo:
    adapter: AdapterInfo = request.param
    return adapter


def test_describes_itself(info: AdapterInfo) -> None:
    assert info.name
    assert info.name == info.name.strip()
    assert info.description
    assert info.version
    assert info.origin
    assert info.templates
    assert info.kinds()


def test_config_model_forbids_unknown_keys(info: AdapterInfo) -> None:
    _contract.check_config_model(info)


def test_defaults_build_a_handler_without_side_effects(
    info: AdapterInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _contract.build_default_handler(info, tmp_path)


def test_handler_implements_its_templates(info: AdapterInfo, tmp_path: Path) -> None:
    handler = _contract.build_default_handler(info, tmp_path)
    _contract.check_handler_classes(info, handler, _REGISTRY)


async def test_start_and_idempotent_shutdown(
    info: AdapterInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    await _contract.check_lifecycle(_contract.build_default_handler(info, tmp_path))


@pytest.mark.parametrize("module_name", BUILTIN_ADAPTERS)
def test_builtin_adapter_readme_documents_every_param(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__file__ is not None
    readme = Path(module.__file__).parent / "README.md"
    assert readme.is_file(), f"{module_name} has no README.md"
    text = readme.read_text()
    for info in module.mixer_register_adapters():
        assert f"`{info.name}`" in text
        for name in info.config_model.model_fields:
            assert f"`{name}`" in text, f"{readme}: param {name} is not documented"
