"""Every shell example of README.md and docs/ runs against the server its marker names (see
tests/cli/doc_commands.py) and does what the doc says."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import doc_commands
from tests.cli.doc_commands import DOCS, ROOT, Addresses, Block, all_blocks, blocks, marker_problems, run
from tests.server.support import MIXER_SCRIPT, ServerProcess, launcher

BLOCKS = all_blocks()
DEMO_JWT = ROOT / "deploy" / "config" / "demo-jwt"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Addresses]]:
    """One server per doc and marker, started on first use: a doc's examples share its quota."""
    with launcher(tmp_path_factory.mktemp("docs")) as launch:

        class Servers(dict[tuple[str, str], Addresses]):
            def __missing__(self, key: tuple[str, str]) -> Addresses:
                _, server = key
                args = ["--config", str(ROOT / server.split()[1])] if server.startswith("config ") else []
                process: ServerProcess = launch.start(
                    *args, command=[str(MIXER_SCRIPT)], env={"MIXER_DEMO_JWT_DIR": str(DEMO_JWT)}
                )
                addresses = Addresses(
                    grpc=process.grpc_target,
                    http=f"127.0.0.1:{process.http_port}",
                    admin=f"127.0.0.1:{process.admin_port}",
                    prometheus=process.extra["env"]["MIXER_PROMETHEUS_LISTEN"],
                )
                self[key] = addresses
                return addresses

        yield Servers()


def test_the_examples_are_found() -> None:
    docs = {block.doc for block in BLOCKS}
    assert {"README.md", "docs/cli.md", "docs/troubleshooting.md"} <= docs
    assert sum(len(block.commands) for block in BLOCKS) >= 20


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_every_shell_example_names_its_server(doc: Path) -> None:
    assert marker_problems(doc) == []


def test_a_block_without_a_marker_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# page\n\n```sh\nmixer check -s a=b\n```\n\n<!-- run: skip -->\n```sh\ncurl x\n```\n")
    monkeypatch.setattr(doc_commands, "ROOT", tmp_path)
    assert marker_problems(page) == [
        "page.md:3: a shell example needs a <!-- run: ... --> marker",
        "page.md:8: say why the example is skipped",
    ]
    assert blocks(page) == []


def _clear_of_the_minute_boundary() -> None:
    # The demo plans count per calendar minute: a block that spends a limit and then expects the
    # refusal must not straddle the minute's end, where the count starts again.
    second = time.time() % 60
    if second > 45:
        time.sleep(61 - second)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_example(block: Block, servers: dict[tuple[str, str], Addresses]) -> None:
    addresses = servers[block.doc, block.server] if block.server != "local" else Addresses()
    if any("--repeat" in command.text for command in block.commands):
        _clear_of_the_minute_boundary()
    for command in block.commands:
        run(block, command, addresses, retry_for=15.0)
