from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from tests.server.support import MIXER_SCRIPT, Launcher, ServerProcess, launcher, policy_config


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Launcher]:
    """Start servers with ``servers.start(...)``; all are killed by pid when the test ends."""
    with launcher(tmp_path) as launch:
        yield launch


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """What `make run` starts: the console script, no --config (the embedded default)."""
    with launcher(tmp_path_factory.mktemp("default")) as launch:
        yield launch.start(command=[str(MIXER_SCRIPT)])


@pytest.fixture(scope="module")
def policy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A denier for destination.service.host "blocked.svc", Reports logged to a file, 64 KiB messages."""
    directory = tmp_path_factory.mktemp("policy")
    output = directory / "reports.jsonl"
    config = directory / "config.yaml"
    config.write_text(policy_config(output), "utf-8")
    with launcher(directory) as launch:
        server = launch.start(
            "--config", str(config), "--max-message-size", "64KiB", "--reload-interval", "0"
        )
        server.extra["output"] = output
        yield server


@pytest.fixture
async def default_channel(default_server: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(default_server.grpc_target) as channel:
        yield channel


@pytest.fixture
async def policy_channel(policy_server: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(policy_server.grpc_target) as channel:
        yield channel


def output_of(server: ServerProcess) -> Path:
    path = server.extra["output"]
    assert isinstance(path, Path)
    return path
