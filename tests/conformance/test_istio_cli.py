"""``mixer serve`` on the rate-limiting task's config, driven by ``mixer check --quota`` (real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.support import istio_file
from tests.server.support import ServerProcess, launcher


@pytest.fixture(scope="module")
def ratelimit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = istio_file("policy/mixer-rule-productpage-ratelimit.yaml")
    with launcher(tmp_path_factory.mktemp("ratelimit")) as launch:
        yield launch.start("--config", str(config), "--reload-interval", "0")


def mixer_check(server: ServerProcess, *args: str) -> list[dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "mixer", "check", "--server", server.grpc_target, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def granted(answers: list[dict[str, object]]) -> list[object]:
    out = []
    for answer in answers:
        if "summary" in answer:
            continue
        quotas = answer["quotas"]
        assert isinstance(quotas, dict)
        out.append(quotas["requestcountquota"]["granted_amount"])
    return out


def test_repeated_checks_run_into_the_productpage_limit(ratelimit_server: ServerProcess) -> None:
    # Without --dedup each call is a new request: the third within 5 s is refused, as the task says.
    answers = mixer_check(
        ratelimit_server,
        "-m", "destination.labels=app:productpage",
        "--quota", "requestcountquota=1",
        "--repeat", "4",
    )  # fmt: skip
    assert granted(answers) == [1, 1, 0, 0]
