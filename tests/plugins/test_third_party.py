"""The example distribution, pip-installed into the running venv: discovered, blockable, removed.

The fixture installs from a copy of plugins/example-adapter (so no build files land in the
checkout), offline and without build isolation, and uninstalls afterwards unless the
distribution was already installed; it checks site-packages is left as it found it.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest

from mixer import HandlerEnv, ReportBatch, Stability
from mixer.templates import LogEntryInstance, MetricInstance
from mixer.testing import check_adapter
from plugins.manager import BLOCK_ENV_VAR, create_plugin_manager, list_adapters

DIST = "mixer-example-adapter"
MODULE = "mixer_example_adapter"
SOURCE = Path(__file__).resolve().parents[2] / "plugins" / "example-adapter"


def _installed() -> bool:
    try:
        distribution(DIST)
    except PackageNotFoundError:
        return False
    return True


def _site_packages() -> set[str]:
    purelib = Path(sysconfig.get_paths()["purelib"])
    return {entry.name for entry in purelib.iterdir() if entry.name != "__pycache__"}


def _pip(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


def _forget_module() -> None:
    for name in [name for name in sys.modules if name == MODULE or name.startswith(f"{MODULE}.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if _installed():
        yield
        return
    before = _site_packages()
    source = tmp_path_factory.mktemp("example") / "example-adapter"
    shutil.copytree(SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    _pip("install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", str(source))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        _pip("uninstall", "--quiet", "--yes", DIST)
        _forget_module()
        assert _site_packages() == before, "the venv's site-packages changed"


@pytest.fixture(autouse=True)
def _no_block_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BLOCK_ENV_VAR, raising=False)


@pytest.mark.usefixtures("example_installed")
def test_example_is_discovered_with_its_distribution_as_origin() -> None:
    pm = create_plugin_manager()
    assert pm.has_plugin("example")
    info = pm.registry().adapters["counting"]
    assert info.origin == f"{DIST} 0.1.0"
    assert info.stability is Stability.ALPHA
    assert info.config_model.__module__ == MODULE
    listing = {item.name: item for item in list_adapters(pm)}["counting"]
    assert listing.origin == f"{DIST} 0.1.0"
    assert listing.templates == ("logentry", "metric", "reportnothing", "tracespan")


@pytest.mark.usefixtures("example_installed")
@pytest.mark.parametrize("blocked", ["example", MODULE])
def test_example_is_blocked_from_the_environment(monkeypatch: pytest.MonkeyPatch, blocked: str) -> None:
    monkeypatch.setenv(BLOCK_ENV_VAR, blocked)
    pm = create_plugin_manager()
    assert not pm.has_plugin("example")
    adapters = pm.registry().adapters
    assert "counting" not in adapters
    assert "stdio" in adapters


@pytest.mark.usefixtures("example_installed")
async def test_example_passes_the_adapter_contract(tmp_path: Path) -> None:
    registry = create_plugin_manager().registry()
    await check_adapter(registry.adapters["counting"], tmp_path, templates=registry.templates.values())


@pytest.mark.usefixtures("example_installed")
def test_example_counts_per_template(tmp_path: Path) -> None:
    info = create_plugin_manager().registry().adapters["counting"]
    counting: Any = info.build(
        info.config_model.model_validate({"by_instance": True}),
        HandlerEnv("counter.istio-system", logging.getLogger("test"), tmp_path),
    )
    counting.handle_report(
        ReportBatch(
            "counter.istio-system",
            [MetricInstance("requestcount"), MetricInstance("requestcount"), LogEntryInstance("accesslog")],
        )
    )
    assert dict(counting.by_template) == {"metric": 2, "logentry": 1}
    assert dict(counting.by_name) == {"requestcount": 2, "accesslog": 1}


def test_example_distribution_is_not_packaged_with_mesh_mixer() -> None:
    # The main distribution finds packages with namespaces=false: only folders reached through
    # __init__.py files are packages, so the example (no __init__.py above it, and a name no
    # import statement can spell) stays out of Mesh Mixer's wheel.
    root = SOURCE.parents[1]
    find = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert find["namespaces"] is False
    packages = set()
    for init in (root / "plugins").rglob("__init__.py"):
        parts = init.parent.relative_to(root).parts
        if all((root.joinpath(*parts[: i + 1]) / "__init__.py").is_file() for i in range(len(parts))):
            packages.add(".".join(parts))
    assert "plugins" in packages
    assert not [name for name in packages if "example" in name or MODULE in name]
    assert not SOURCE.name.isidentifier()
