"""The documentation site builds with ``mkdocs build --strict``, offline, with its generated pages.

The build runs as ``make docs`` does, into a temporary folder, with every HTTP proxy pointed at a
closed port, so a build that tried to fetch anything (fonts, a social card, a remote include) would
fail or warn rather than quietly depend on the network.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from plugins.manager import BUILTIN_ADAPTERS

REPO = Path(__file__).resolve().parents[2]
MKDOCS_YML = REPO / "mkdocs.yml"
BUILTIN = sorted(module.rpartition(".")[2] for module in BUILTIN_ADAPTERS)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    dead = f"http://127.0.0.1:{_closed_port()}"
    env = {
        **os.environ,
        "NO_MKDOCS_2_WARNING": "1",
        "http_proxy": dead,
        "https_proxy": dead,
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "no_proxy": "",
        "NO_PROXY": "",
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(config),
            "--site-dir",
            str(site),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = _build(MKDOCS_YML, out)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    warnings = [line for line in result.stderr.splitlines() if re.match(r"^(WARNING|ERROR)\b", line)]
    assert warnings == []
    return out


def _page(site: Path, path: str) -> str:
    return (site / path / "index.html").read_text(encoding="utf-8")


def test_every_builtin_adapter_has_a_page_and_a_nav_entry(site: Path) -> None:
    nav = yaml.safe_load(MKDOCS_YML.read_text(encoding="utf-8"))["nav"]
    adapters = next(
        section["Adapters"] for section in nav if isinstance(section, dict) and "Adapters" in section
    )
    in_nav = {entry for item in adapters if isinstance(item, dict) for entry in item.values()}
    assert in_nav == {f"adapters/{name}.md" for name in BUILTIN}
    for name in BUILTIN:
        html = _page(site, f"adapters/{name}")
        assert 'id="params-reference"' in html, name
        readme_title = (REPO / "adapters" / name / "README.md").read_text(encoding="utf-8").splitlines()[0]
        assert name in readme_title
        assert f"<code>{name}</code>" in html


def test_the_params_reference_comes_from_the_config_models(site: Path) -> None:
    from adapters.stdio._config import StdioConfig

    description = StdioConfig.model_fields["output_as_json"].description
    assert description
    html = _page(site, "adapters/stdio")
    assert "<code>output_as_json</code>" in html
    assert description.split(";")[0] in html
    templates = _page(site, "reference/templates")
    for name in ("metric", "logentry", "tracespan", "quota", "listentry", "authorization"):
        assert f'id="{name}"' in templates


def test_the_quickstart_includes_the_readme_walkthrough(site: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "demo-free-key" in readme
    html = _page(site, "quickstart")
    assert "demo-free-key" in html
    assert "include:" not in html


def test_links_out_of_docs_are_rewritten(site: Path) -> None:
    # docs/authorization.md links ../adapters/rbac/README.md: the site has the adapter's page.
    html = _page(site, "authorization")
    assert 'href="../adapters/rbac/"' in html
    assert not re.findall(r'href="[^"]*README\.md', html)
    # docs/quotas.md links ../deploy/nginx/nginx.conf, which the site does not carry: shown as a path.
    quotas = _page(site, "quotas")
    assert "<code>deploy/nginx/nginx.conf</code>" in quotas
    assert "nginx.conf</a>" not in quotas


def test_nothing_is_fetched_from_other_sites(site: Path) -> None:
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in html, page
        assert "fonts.gstatic.com" not in html, page


def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs, ignore=shutil.ignore_patterns("__pycache__"))
    with (docs / "concepts.md").open("a", encoding="utf-8") as page:
        page.write("\nSee [the missing page](no-such-page.md).\n")
    config = yaml.safe_load(MKDOCS_YML.read_text(encoding="utf-8"))
    config["docs_dir"] = str(docs)
    config["hooks"] = [str(REPO / "docs" / "hooks" / "reference.py")]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-page.md" in result.stderr
