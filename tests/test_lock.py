"""The lock files are the installed set: generated from pyproject's ranges, exact and hashed."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
DEV_LOCK = ROOT / "requirements" / "dev.txt"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def locked(path: Path) -> dict[str, str]:
    """Name -> exact version of every requirement in a pip-compile lock; each must carry hashes."""
    pins: dict[str, str] = {}
    text = path.read_text("utf-8")
    # One requirement spans its line and the `--hash` continuation lines after it.
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = _PIN.match(block)
        if match is None:
            continue
        name = canonicalize_name(match.group(1))
        assert "--hash=sha256:" in block, f"{path.name}: {name} has no hash"
        pins[name] = match.group(2)
    return pins


RUNTIME = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
DEV = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]]


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [(RUNTIME_LOCK, RUNTIME), (DEV_LOCK, RUNTIME + DEV)],
    ids=["runtime", "dev"],
)
def test_every_declared_requirement_is_pinned_inside_its_range(
    lock: Path, requirements: list[Requirement]
) -> None:
    pins = locked(lock)
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock.name} lacks {name}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock.name} pins {name}=={pins[name]} outside pyproject's {requirement.specifier}: run `make lock`"
        )


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=["runtime", "dev"])
def test_the_build_requirements_are_locked_too(lock: Path) -> None:
    # Our own package is built without build isolation, with the backend and Cython from the lock.
    pins = locked(lock)
    for text in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, (
            f"{lock.name} lacks the build requirement {name}: add it to requirements/bootstrap.in"
        )
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock.name} pins {name}=={pins[name]} outside pyproject's {requirement.specifier}: run `make lock`"
        )


def test_runtime_and_dev_locks_agree() -> None:
    runtime, dev = locked(RUNTIME_LOCK), locked(DEV_LOCK)
    assert {name: dev.get(name) for name in runtime} == runtime


def test_runtime_dependencies_have_upper_bounds() -> None:
    # A new major release reaches us only through a deliberate change of range and lock.
    unbounded = [
        str(r) for r in RUNTIME if not any(s.operator in {"<", "<=", "==", "~="} for s in r.specifier)
    ]
    assert unbounded == []


def test_the_running_environment_is_the_locked_one() -> None:
    # `make test` installs exactly requirements/dev.txt; a drifted venv would test something else.
    drift = {
        name: (version, metadata.version(name))
        for name, version in locked(DEV_LOCK).items()
        if metadata.version(name) != version
    }
    assert drift == {}, "installed versions differ from requirements/dev.txt: run `make install`"
