"""Shared fixtures: a registry of small test adapters, and helpers that load YAML text."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping

import pytest
from pydantic import BaseModel, ConfigDict, SecretStr

from mixer.adapter import AdapterInfo, Handler, HandlerEnv
from mixer.config import ConfigError, ValidatedConfig, load_config_text
from mixer.registry import Registry


class RecorderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str = "localhost:9000"
    batch_size: int = 10
    password: SecretStr | None = None
    auth_token: str = ""
    labels: list[str] = []


class GateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow: list[str] = []
    blacklist: bool = False


def _factory(config: BaseModel, env: HandlerEnv) -> Handler:
    return Handler()


RECORDER = AdapterInfo(
    name="recorder",
    description="test report adapter",
    templates=frozenset({"metric", "logentry", "tracespan"}),
    config_model=RecorderParams,
    factory=_factory,
)
GATE = AdapterInfo(
    name="gate",
    description="test check adapter",
    templates=frozenset({"listentry", "checknothing", "authorization", "quota", "apikey"}),
    config_model=GateParams,
    factory=_factory,
    legacy_kinds=("gatekeeper",),
)


@pytest.fixture
def registry() -> Registry:
    return Registry.build([RECORDER, GATE])


Loader = Callable[..., ValidatedConfig]
ErrorsOf = Callable[..., list[str]]


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


@pytest.fixture
def load(registry: Registry) -> Loader:
    """Loads dedented YAML text named ``test.yaml``; an empty environment unless given."""

    def load(text: str, environ: Mapping[str, str] | None = None) -> ValidatedConfig:
        return load_config_text(dedent(text), registry, source_name="test.yaml", environ=environ or {})

    return load


@pytest.fixture
def errors_of(registry: Registry) -> ErrorsOf:
    """The issue strings a text produces (the load must fail)."""

    def errors_of(text: str, environ: Mapping[str, str] | None = None) -> list[str]:
        with pytest.raises(ConfigError) as info:
            load_config_text(dedent(text), registry, source_name="test.yaml", environ=environ or {})
        return [str(issue) for issue in info.value.issues]

    return errors_of


HEADER = "apiVersion: config.istio.io/v1alpha2\n"


def doc(kind: str, name: str, spec: str, namespace: str | None = None) -> str:
    """One document; ``spec`` is YAML indented by two spaces or less (dedented here)."""
    meta = f"metadata:\n  name: {name}\n" + (f"  namespace: {namespace}\n" if namespace else "")
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return f"{HEADER}kind: {kind}\n{meta}spec:\n{body}\n"


def docs(*parts: str) -> str:
    return "---\n".join(parts)
