"""Every shell example of README.md and docs/ runs against the server its marker names (see
tests/cli/doc_commands.py) and does what the doc says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import doc_commands
from tests.cli.doc_commands import DOCS, Addresses, Block, all_blocks, blocks, marker_problems, run
from tests.server.support import MIXER_SCRIPT, ServerProcess, launcher

BLOCKS = all_blocks()


@pytest.fixture(scope="module")
def embedded_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Addresses]]:
    """One embedded-default server per doc, started on first use: a doc's examples share quota."""
    started: dict[str, Addresses] = {}
    with launcher(tmp_path_factory.mktemp("docs")) as launch:

        class Servers(dict[str, Addresses]):
            def __missing__(self, doc: str) -> Addresses:
                server: ServerProcess = launch.start(command=[str(MIXER_SCRIPT)])
                addresses = Addresses(
                    grpc=server.grpc_target,
                    http=f"127.0.0.1:{server.http_port}",
                    prometheus=server.extra["env"]["MIXER_PROMETHEUS_LISTEN"],
                )
                self[doc] = addresses
                return addresses

        yield Servers(started)


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


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_example(block: Block, embedded_servers: dict[str, Addresses]) -> None:
    addresses = embedded_servers[block.doc] if block.server == "embedded" else Addresses()
    for command in block.commands:
        run(block, command, addresses, retry_for=15.0)
