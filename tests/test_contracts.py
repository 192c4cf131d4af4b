"""The shared contracts: status codes, templates and the registry."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from mixer import AdapterInfo, Code, Handler, HandlerEnv
from mixer.registry import Registry, RegistryError
from mixer.status import OK, Status, http_status
from mixer.templates import BUILTIN_TEMPLATES, FieldKind, Variety


class _Params(BaseModel):
    pass


def _factory(params: BaseModel, env: HandlerEnv) -> Handler:
    return Handler()


def _adapter(name: str, kinds: tuple[str, ...] = ()) -> AdapterInfo:
    return AdapterInfo(
        name, "test", frozenset({"metric"}), _Params, _factory, legacy_kinds=kinds, origin=name
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (Code.OK, 200),
        (Code.PERMISSION_DENIED, 403),
        (Code.UNAUTHENTICATED, 401),
        (Code.RESOURCE_EXHAUSTED, 429),
        (Code.UNAVAILABLE, 503),
        (Code.DEADLINE_EXCEEDED, 504),
        (Code.INVALID_ARGUMENT, 400),
        (Code.NOT_FOUND, 404),
        (Code.INTERNAL, 500),
        (Code.ABORTED, 500),
    ],
)
def test_http_status_mapping(code: Code, status: int) -> None:
    assert http_status(code) == status


def test_status_ok() -> None:
    assert OK.ok
    assert not Status(Code.NOT_FOUND, "x").ok


def test_builtin_templates_cover_mixer_set() -> None:
    by_name = {t.name: t for t in BUILTIN_TEMPLATES}
    assert set(by_name) == {
        "metric", "logentry", "tracespan", "quota", "listentry",
        "authorization", "apikey", "checknothing", "reportnothing",
    }  # fmt: skip
    assert by_name["quota"].variety is Variety.QUOTA
    assert by_name["listentry"].variety is Variety.CHECK
    assert by_name["metric"].variety is Variety.REPORT
    subject = by_name["authorization"].field("subject")
    assert subject is not None
    assert subject.kind is FieldKind.STRUCT
    assert [f.name for f in subject.fields] == ["user", "groups", "properties"]
    assert by_name["metric"].field("nope") is None
    for spec in BUILTIN_TEMPLATES:
        assert spec.instance_type.template == spec.name
        instance = spec.instance_type(name=f"x.{spec.name}")
        for field in spec.fields:
            assert hasattr(instance, field.name), (spec.name, field.name)


def test_registry_lookup_by_name_kind_and_template() -> None:
    registry = Registry.build([_adapter("list", ("listchecker",)), _adapter("stdio")])
    assert registry.adapter("list") is registry.adapter_for_kind("listchecker")
    assert registry.adapter_for_kind("list") is None
    assert registry.adapter_for_kind("stdio") is registry.adapter("stdio")
    template = registry.template("metric")
    assert template is not None
    assert template.name == "metric"
    assert registry.template("nope") is None


def test_registry_rejects_duplicates() -> None:
    with pytest.raises(RegistryError, match="adapter 'a' registered twice"):
        Registry.build([_adapter("a"), _adapter("a")])
    with pytest.raises(RegistryError, match="legacy kind 'k'"):
        Registry.build([_adapter("a", ("k",)), _adapter("b", ("k",))])
    with pytest.raises(RegistryError, match="template 'metric' registered twice"):
        Registry.build([], [*BUILTIN_TEMPLATES, BUILTIN_TEMPLATES[0]])
