"""docs/plugin-tutorial.md works as written: its files make a plugin that registers and handles a Report.

The code blocks titled with a path are written into a temporary folder. The distribution is made
visible to ``importlib.metadata`` the way an installed one is (a ``.dist-info`` folder with the
entry points its pyproject.toml declares, on ``sys.path``), so the plugin manager finds it through
the real entry-point group, without pip touching the venv.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mixer import AttributeBag, Stability
from mixer.cli import main
from mixer.config import load_config_text
from mixer.registry import Registry
from mixer.runtime import build_runtime
from mixer.schema import adapter_schema, undescribed_fields
from mixer.testing import check_adapter
from plugins.manager import BLOCK_ENV_VAR, ENTRY_POINT_GROUP, create_plugin_manager

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugin-tutorial.md"
_TITLED_BLOCK = re.compile(
    r'^```(?P<lang>\w+) title="(?P<path>[^"]+)"\n(?P<body>.*?)^```$', re.DOTALL | re.MULTILINE
)


def tutorial_files() -> dict[str, str]:
    return {m.group("path"): m.group("body") for m in _TITLED_BLOCK.finditer(DOC.read_text(encoding="utf-8"))}


@pytest.fixture(autouse=True)
def _no_block_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BLOCK_ENV_VAR, raising=False)


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    files = tutorial_files()
    source = tmp_path / "mixer-recent"
    for path, body in files.items():
        target = source / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
    project = tomllib.loads(files["pyproject.toml"])["project"]
    site = tmp_path / "site-packages"
    for package in tomllib.loads(files["pyproject.toml"])["tool"]["setuptools"]["packages"]:
        shutil.copytree(source / package, site / package)
    dist_info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n", encoding="utf-8"
    )
    groups = project["entry-points"]
    lines = [
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in groups.items()
    ]
    (dist_info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield {**project, "source": source}
    for name in [name for name in sys.modules if name == "mixer_recent" or name.startswith("mixer_recent.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def test_the_tutorial_has_the_files_it_describes() -> None:
    files = tutorial_files()
    assert set(files) == {"pyproject.toml", "mixer_recent/__init__.py", "tests/test_recent.py", "config.yaml"}
    groups = tomllib.loads(files["pyproject.toml"])["project"]["entry-points"]
    assert groups == {ENTRY_POINT_GROUP: {"recent": "mixer_recent"}}


def test_the_plugin_registers_through_its_entry_point(
    installed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    manager = create_plugin_manager()
    assert manager.has_plugin("recent")
    info = manager.registry().adapters["recent"]
    assert info.origin == f"{installed['name']} {installed['version']}"
    assert info.stability is Stability.ALPHA
    assert undescribed_fields(adapter_schema(info)) == []
    assert main(["adapters", "--all"]) == 0
    assert re.search(
        r"^recent\s+0\.1\.0\s+alpha\s+logentry\s+mixer-recent 0\.1\.0$", capsys.readouterr().out, re.M
    )
    assert main(["schema", "--adapter", "recent"]) == 0
    assert '"max_entries"' in capsys.readouterr().out


@pytest.mark.usefixtures("installed")
def test_the_plugin_is_blocked_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BLOCK_ENV_VAR, "recent")
    assert "recent" not in create_plugin_manager().registry().adapters


@pytest.mark.usefixtures("installed")
async def test_the_plugin_passes_the_adapter_contract(tmp_path: Path) -> None:
    registry = create_plugin_manager().registry()
    workdir = tmp_path / "work"
    workdir.mkdir()
    await check_adapter(registry.adapters["recent"], workdir, templates=registry.templates.values())


def test_the_plugins_own_tests_pass(installed: dict[str, Any]) -> None:
    # Run as its author runs them, from the distribution's folder; no asyncio plugin is needed.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:asyncio", "-W", "error"],
        cwd=installed["source"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^6 passed", result.stdout, re.M), result.stdout


def _bag(path: str, code: int, protocol: str = "http") -> AttributeBag:
    return AttributeBag({"context.protocol": protocol, "request.path": path, "response.code": code})


@pytest.mark.usefixtures("installed")
async def test_a_report_reaches_the_handler_as_the_tutorial_says() -> None:
    registry: Registry = create_plugin_manager().registry()
    config = load_config_text(tutorial_files()["config.yaml"], registry, source_name="config.yaml")
    runtime = build_runtime(config, registry)
    await runtime.start()
    try:
        outcome = runtime.report([_bag("/a", 200), _bag("/b", 404), _bag("/tcp", 0, protocol="tcp")])
        runtime.report([_bag("/c", 500)])
        handler: Any = runtime.handlers["recent.istio-system"]
        # max_entries 2: the last two HTTP entries; /a was let go, the tcp one never matched.
        assert list(handler.entries) == [{"path": "/b", "code": 404}, {"path": "/c", "code": 500}]
        assert handler.let_go == 1
        assert not outcome.errors
    finally:
        await runtime.shutdown(5.0)
