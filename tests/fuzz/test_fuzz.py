"""The short form of `make fuzz`: the seed corpus replayed in-process, then a short atheris run per target.

The full form (100,000 inputs per target) is ``make fuzz``; docs/fuzzing.md has the figures.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fuzz.make_corpus import SEEDS
from tests.fuzz.run import CORPUS, run_in_subprocess, target_names
from tests.fuzz.targets import TARGETS

#: Inputs per target in the short form (the seeds count among them).
SHORT_RUNS = 2_000


def test_every_target_has_a_seed_corpus_and_a_seed_source() -> None:
    assert target_names() == sorted(TARGETS)
    assert sorted(SEEDS) == sorted(TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_seed_corpus_replays_without_an_undocumented_error(name: str) -> None:
    target = TARGETS[name]
    seeds = sorted((CORPUS / name).iterdir())
    assert seeds, f"no seeds in {CORPUS / name}"
    for seed in seeds:
        # Anything but the documented refusals fails the test, naming the seed.
        try:
            target.run(seed.read_bytes())
        except target.errors as exc:  # pragma: no cover - the targets catch these themselves
            pytest.fail(f"{name} let a documented error escape on {seed.name}: {exc!r}")


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_short_atheris_run_finds_nothing(name: str, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    result = run_in_subprocess(
        name, SHORT_RUNS, timeout=1, max_total_time=240, artifacts=artifacts, keep=None, wall_limit=280
    )
    log = result.output.decode("utf-8", "replace")
    found = sorted(p.name for p in (artifacts / name).iterdir()) if (artifacts / name).exists() else []
    assert result.ok, f"{name}: exit {result.returncode}, artifacts {found}\n{log[-4000:]}"
    assert result.runs is not None
    assert result.runs >= SHORT_RUNS
    assert not found
    shutil.rmtree(artifacts, ignore_errors=True)


def test_an_input_over_the_cpu_limit_fails_the_run(tmp_path: Path) -> None:
    # A limit of 0 s makes every input too slow: the run must stop, say why, and keep the input.
    artifacts = tmp_path / "artifacts"
    result = run_in_subprocess(
        "http_check", 50, timeout=0, max_total_time=240, artifacts=artifacts, keep=None, wall_limit=280
    )
    assert not result.ok
    assert b"SlowInput: one input took" in result.output
    assert [p.name.startswith("crash-") for p in (artifacts / "http_check").iterdir()] == [True]
