"""`mixer schema`: the JSON Schemas of adapters' handler params and templates' instance params."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from mixer import AdapterInfo
from mixer.cli import main
from mixer.registry import Registry
from mixer.schema import adapter_schema, template_schema, undescribed_fields
from plugins.manager import BLOCK_ENV_VAR, BUILTIN_ADAPTERS, create_plugin_manager
from tests.plugins._sample_plugin import build


@pytest.fixture(autouse=True)
def _no_block_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BLOCK_ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return create_plugin_manager(load_entry_points=False, blocked=()).registry()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(["schema", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else out), err


def test_every_builtin_adapter_field_has_a_description(registry: Registry) -> None:
    builtin = {module.rpartition(".")[2] for module in BUILTIN_ADAPTERS}
    missing = {
        name: undescribed_fields(adapter_schema(info))
        for name, info in registry.adapters.items()
        if name in builtin
    }
    assert set(missing) == builtin
    assert {name: fields for name, fields in missing.items() if fields} == {}


def test_undescribed_fields_finds_nested_fields_without_a_description() -> None:
    class Inner(BaseModel):
        described: int = Field(default=1, description="has one")
        bare: int = 2

    class Outer(BaseModel):
        model_config = ConfigDict(extra="forbid")
        inner: Inner = Field(default_factory=Inner, description="nested")
        plain: str = ""

    info = AdapterInfo("probe", "probe", frozenset({"metric"}), Outer, build)
    assert undescribed_fields(adapter_schema(info)) == ["probe handler params.plain", "Inner.bare"]


def test_all_schemas(capsys: pytest.CaptureFixture[str], registry: Registry) -> None:
    code, document, _ = _run(capsys)
    assert code == 0
    assert set(document["adapters"]) == set(registry.adapters)
    assert set(document["templates"]) == set(registry.templates)
    stdio = document["adapters"]["stdio"]
    assert stdio["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert stdio["x-mixer-templates"] == sorted(registry.adapters["stdio"].templates)
    assert "output_as_json" in stdio["properties"]
    assert stdio["properties"]["output_as_json"]["default"] is True


def test_one_adapter_is_its_config_model(capsys: pytest.CaptureFixture[str], registry: Registry) -> None:
    code, document, _ = _run(capsys, "--adapter", "prometheus")
    assert code == 0
    model = registry.adapters["prometheus"].config_model.model_json_schema(by_alias=False)
    assert document["properties"] == json.loads(json.dumps(model["properties"]))
    assert document["$defs"].keys() == model["$defs"].keys()
    assert document["title"] == "prometheus handler params"


def test_one_template_lists_its_fields_as_expressions(capsys: pytest.CaptureFixture[str]) -> None:
    code, document, _ = _run(capsys, "--template", "metric")
    assert code == 0
    assert document["required"] == ["value"]
    assert document["x-mixer-variety"] == "report"
    assert document["properties"]["value"]["type"] == "string"
    dimensions = document["properties"]["dimensions"]
    assert dimensions["type"] == "object"
    assert dimensions["additionalProperties"] == {"type": "string"}
    assert document["additionalProperties"] is False


def test_struct_fields_nest(registry: Registry) -> None:
    schema = template_schema(registry.templates["authorization"])
    subject = schema["properties"]["subject"]
    assert subject["type"] == "object"
    assert subject["properties"]["user"]["x-mixer-value-type"] == "STRING"


@pytest.mark.parametrize(("flag", "kind"), [("--adapter", "adapter"), ("--template", "template")])
def test_unknown_names_exit_2_listing_the_known_ones(
    capsys: pytest.CaptureFixture[str], flag: str, kind: str
) -> None:
    code, out, err = _run(capsys, flag, "nosuch")
    assert code == 2
    assert out == ""
    assert f"no {kind} 'nosuch'" in err
    assert ("stdio" if kind == "adapter" else "metric") in err


def test_adapter_and_template_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["schema", "--adapter", "stdio", "--template", "metric"])
    assert exc.value.code == 2
    assert "not allowed with" in capsys.readouterr().err
