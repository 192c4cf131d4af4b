"""The private-modules contract type, on small import graphs, and the project's contracts config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp

from tests.architecture.contracts import (
    AcyclicModulesContract,
    PrivateImport,
    PrivateModulesContract,
    import_cycles,
    is_private,
    owner,
)

ROOT = Path(__file__).resolve().parents[2]


def graph(*imports: tuple[str, str]) -> grimp.ImportGraph:
    built = grimp.ImportGraph()
    for importer, imported in imports:
        # As in a graph built from source: every package above a module is a module too.
        for module in (importer, imported):
            parts = module.split(".")
            for end in range(1, len(parts) + 1):
                built.add_module(".".join(parts[:end]))
        built.add_import(importer=importer, imported=imported, line_number=3, line_contents="import x")
    return built


def contract(**options: object) -> PrivateModulesContract:
    defaults: dict[str, object] = {
        "importers": ["mixer", "adapters"],
        "components": ["mixer.*", "adapters.*"],
    }
    return PrivateModulesContract("private", {}, {**defaults, **options})


def test_private_names() -> None:
    assert is_private("mixer.quota._redis")
    assert is_private("adapters.kafka._config")
    assert is_private("mixer._lazy")
    assert not is_private("mixer.quota.redis_store")
    assert not is_private("mixer.__main__")
    # The root package itself is never private: only parts below it are.
    assert not is_private("_root.module")


def test_owner_is_the_nearest_component() -> None:
    components = frozenset({"mixer.quota", "adapters.kafka"})
    assert owner("mixer.quota._redis", components) == "mixer.quota"
    assert owner("mixer.quota", components) == "mixer.quota"
    assert owner("adapters.kafka._encoding", components) == "adapters.kafka"
    assert owner("mixer.status", components) == "mixer.status"


def test_a_component_may_import_its_own_private_modules() -> None:
    g = graph(
        ("mixer.quota.redis_store", "mixer.quota._redis"),
        ("adapters.kafka._handler", "adapters.kafka._config"),
        ("adapters.kafka", "mixer.quota.redis_store"),
    )
    check = contract().check(g, verbose=False)
    assert check.kept
    assert check.metadata["private_imports"] == []


def test_another_components_private_modules_are_reported_with_their_lines() -> None:
    g = graph(
        ("adapters.redisquota._handler", "mixer.quota._redis"),
        ("adapters.kafka._encoding", "adapters.otlp._encode"),
        ("mixer.plans.redis_keys", "mixer.quota._redis"),
        ("adapters.otlp", "mixer._lazy"),
        ("mixer.quota._redis", "mixer.quota._store"),
    )
    check = contract().check(g, verbose=False)
    assert not check.kept
    assert check.metadata["private_imports"] == [
        PrivateImport("adapters.kafka._encoding", "adapters.otlp._encode", (3,)),
        PrivateImport("adapters.otlp", "mixer._lazy", (3,)),
        PrivateImport("adapters.redisquota._handler", "mixer.quota._redis", (3,)),
        PrivateImport("mixer.plans.redis_keys", "mixer.quota._redis", (3,)),
    ]


def test_only_the_named_importers_are_checked() -> None:
    g = graph(("adapters.kafka._encoding", "adapters.otlp._encode"), ("mixer.plans", "mixer.quota._redis"))
    check = contract(importers=["adapters"]).check(g, verbose=False)
    assert [found.importer for found in check.metadata["private_imports"]] == ["adapters.kafka._encoding"]


def test_cycles_between_a_package_and_its_modules_are_found() -> None:
    g = graph(
        ("mixer.cli", "mixer.cli._completion"),
        ("mixer.cli._completion", "mixer.cli"),
        ("mixer.a", "mixer.b"),
        ("mixer.b", "mixer.c"),
        ("mixer.c", "mixer.a"),
        ("mixer.c", "mixer.d"),
        ("mixer.d", "mixer.status"),
    )
    assert import_cycles(g, set(g.modules)) == [
        ["mixer.a", "mixer.b", "mixer.c"],
        ["mixer.cli", "mixer.cli._completion"],
    ]
    check = AcyclicModulesContract("acyclic", {}, {"packages": ["mixer"]}).check(g, verbose=False)
    assert not check.kept
    assert len(check.metadata["cycles"]) == 2


def test_an_acyclic_graph_keeps_the_contract() -> None:
    # A diamond, and a deep chain (longer than Python's default recursion limit).
    chain = [(f"mixer.m{i}", f"mixer.m{i + 1}") for i in range(1500)]
    g = graph(
        ("mixer.a", "mixer.b"), ("mixer.a", "mixer.c"), ("mixer.b", "mixer.d"), ("mixer.c", "mixer.d"), *chain
    )
    assert import_cycles(g, set(g.modules)) == []
    assert AcyclicModulesContract("acyclic", {}, {"packages": ["mixer"]}).check(g, verbose=False).kept


def test_the_contracts_count_type_checking_imports_and_cover_every_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["importlinter"]
    assert config["exclude_type_checking_imports"] is False
    layered = {
        name.strip()
        for contract_config in config["contracts"]
        if contract_config["type"] == "layers"
        for layer in contract_config["layers"]
        for name in layer.replace(":", "|").split("|")
    }
    kernel = {
        name
        for contract_config in config["contracts"]
        if contract_config["id"] == "kernel"
        for name in contract_config["source_modules"]
    }
    # Every package and module of mixer is either in a layer or in the kernel (or is the root's
    # own entry point, or the test fakes that only tests import).
    outside = {"mixer.__main__", "mixer.defaults", "mixer.testing"}
    modules = {
        f"mixer.{path.stem}" if path.is_file() else f"mixer.{path.name}"
        for path in (ROOT / "mixer").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    assert modules - outside == (layered | kernel) - {"plugins"}
