"""JSON Schemas of what config may write: each adapter's handler params, each template's instance params.

Adapters declare their params as pydantic models, so their schema is the model's; templates declare
fields whose values are expressions, so an instance's params are strings (maps of strings for map
fields), annotated with the type the expression must have. ``mixer schema`` prints these, and the
documentation site renders its configuration reference from them.
"""

from __future__ import annotations

from typing import Any

from mixer.adapter import AdapterInfo
from mixer.registry import Registry
from mixer.templates import FieldKind, FieldSpec, TemplateSpec

__all__ = [
    "JSON_SCHEMA_DIALECT",
    "adapter_schema",
    "registry_schema",
    "template_schema",
    "undescribed_fields",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def adapter_schema(info: AdapterInfo) -> dict[str, Any]:
    """The JSON Schema of a handler's ``params`` for adapter ``info``.

    Field names are the snake_case ones, which every built-in adapter accepts (most also take
    camelCase). ``x-mixer-*`` keys carry what the schema has no word for.
    """
    schema = info.config_model.model_json_schema(by_alias=False, mode="validation")
    schema["title"] = f"{info.name} handler params"
    schema.setdefault("description", info.description)
    schema["x-mixer-adapter"] = info.name
    schema["x-mixer-templates"] = sorted(info.templates)
    schema["x-mixer-stability"] = info.stability.value
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def template_schema(spec: TemplateSpec) -> dict[str, Any]:
    """The JSON Schema of an instance's ``params`` for template ``spec``: expressions by field."""
    schema = _fields_schema(spec.fields)
    schema["title"] = f"{spec.name} instance params"
    schema["description"] = spec.description or f"Instance params of the {spec.name} template."
    schema["x-mixer-template"] = spec.name
    schema["x-mixer-variety"] = spec.variety.value
    if spec.outputs:
        schema["x-mixer-outputs"] = {
            out.name: _type_name(out) for out in sorted(spec.outputs, key=lambda out: out.name)
        }
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def registry_schema(registry: Registry) -> dict[str, Any]:
    """Every adapter's and every template's schema, by name, sorted."""
    return {
        "adapters": {name: adapter_schema(registry.adapters[name]) for name in sorted(registry.adapters)},
        "templates": {name: template_schema(registry.templates[name]) for name in sorted(registry.templates)},
    }


def undescribed_fields(schema: dict[str, Any]) -> list[str]:
    """Paths (``Model.field``) of the properties in ``schema`` and its ``$defs`` with no description."""
    missing: list[str] = []
    models = {schema.get("title", "params"): schema, **schema.get("$defs", {})}
    for model_name, model in models.items():
        for field_name, prop in model.get("properties", {}).items():
            if not str(prop.get("description", "")).strip():
                missing.append(f"{model_name}.{field_name}")
    return missing


def _fields_schema(fields: tuple[FieldSpec, ...]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for spec in fields:
        if spec.kind is FieldKind.STRUCT:
            prop = _fields_schema(spec.fields)
            prop["description"] = f"The {spec.name} fields, each an expression."
        elif spec.kind is FieldKind.MAP:
            prop = {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": f"A map of expressions, each of type {_type_name(spec)}.",
            }
        else:
            prop = {"type": "string", "description": f"An expression of type {_type_name(spec)}."}
        prop["x-mixer-value-type"] = _type_name(spec)
        properties[spec.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    required = [spec.name for spec in fields if spec.required]
    if required:
        schema["required"] = required
    return schema


def _type_name(spec: FieldSpec) -> str:
    if spec.kind is FieldKind.STRUCT:
        return "struct"
    # No declared type: Mixer's "Value", whatever the expression yields.
    return spec.value_type.name if spec.value_type is not None else "any"
