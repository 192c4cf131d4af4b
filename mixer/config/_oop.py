"""Out-of-process adapters in config: ``kind: adapter`` and ``kind: template`` documents, handlers
with a ``connection`` and instances of the templates those documents declare."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from mixer.adapter import AdapterInfo, Stability
from mixer.attributes import ValueType
from mixer.config._instances import CompiledInstanceBuilder
from mixer.expr import CompiledExpression
from mixer.oop import (
    AdapterDescriptor,
    Connection,
    DescriptorError,
    TemplateModel,
    adapter_descriptor,
    build_handler,
    builtin_template_model,
    decode_descriptor_set,
    encode_params,
    template_model_from_set,
)
from mixer.templates import FieldSpec

#: Prefix of the adapter name a handler of an out-of-process adapter records, so that an
#: out-of-process adapter never shadows an installed one of the same name.
OOP_PREFIX = "oop:"

Report = Callable[[str, str], None]  # (path below the document's spec, message)


@dataclass(slots=True)
class OopDeclarations:
    """The adapter and template documents of one load, by ``name.namespace``."""

    adapters: dict[str, tuple[str, Any, Report]] = field(default_factory=dict)
    templates: dict[str, tuple[str, Any, Report]] = field(default_factory=dict)
    _adapter_cache: dict[str, AdapterDescriptor | None] = field(default_factory=dict)
    _template_cache: dict[str, TemplateModel | None] = field(default_factory=dict)
    #: Built for the handlers of this load, by the name their HandlerConfig records.
    infos: dict[str, AdapterInfo] = field(default_factory=dict)

    def validate_all(self, default: str) -> None:
        """Check every declared document, used or not, so a broken one is reported at once."""
        for key in list(self.adapters):
            name, namespace = key.rsplit(".", 1)
            self.adapter(name, namespace, default)
        for key in list(self.templates):
            name, namespace = key.rsplit(".", 1)
            self.template(name, namespace, default)

    def _find(self, table: Mapping[str, Any], name: str, namespace: str, default: str) -> str | None:
        for key in (f"{name}.{namespace}", f"{name}.{default}", name):
            if key in table:
                return key
        found = [key for key in table if key.rsplit(".", 1)[0] == name]
        return found[0] if len(found) == 1 else None

    def adapter(self, name: str, namespace: str, default: str) -> tuple[AdapterDescriptor | None, str]:
        key = self._find(self.adapters, name, namespace, default)
        if key is None:
            declared = ", ".join(sorted(self.adapters)) or "none"
            return None, (
                f'out-of-process adapter "{name}" is not declared: add its `kind: adapter` document '
                f"(declared: {declared})"
            )
        if key not in self._adapter_cache:
            adapter_name, spec, report = self.adapters[key]
            try:
                if not isinstance(spec, Mapping):
                    raise DescriptorError("an adapter spec must be a mapping")
                self._adapter_cache[key] = adapter_descriptor(adapter_name, spec)
            except DescriptorError as exc:
                report("", str(exc))
                self._adapter_cache[key] = None
        descriptor = self._adapter_cache[key]
        return descriptor, "" if descriptor is not None else f'adapter document "{key}" is invalid'

    def template(self, name: str, namespace: str, default: str) -> TemplateModel | None:
        """A declared template document's model, else Mixer's own template of that name, else None."""
        key = self._find(self.templates, name, namespace, default)
        if key is None:
            return builtin_template_model(name)
        if key not in self._template_cache:
            template_name, spec, report = self.templates[key]
            model: TemplateModel | None = None
            try:
                text = spec.get("descriptor") if isinstance(spec, Mapping) else None
                if not isinstance(text, str):
                    raise DescriptorError("a template needs `descriptor`: a base64 FileDescriptorSet")
                unknown = sorted(str(k) for k in spec if k not in ("descriptor",))
                if unknown:
                    raise DescriptorError(f"unknown field {unknown[0]!r} (fields: descriptor)")
                model = template_model_from_set(template_name, decode_descriptor_set(text))
            except DescriptorError as exc:
                report("descriptor", str(exc))
            self._template_cache[key] = model
        return self._template_cache[key]

    def handler(
        self,
        name: str,
        namespace: str,
        default: str,
        adapter: str,
        connection: Mapping[str, Any],
        params: Mapping[str, Any] | None,
        report: Report,
    ) -> tuple[AdapterInfo | None, Any]:
        """The adapter info and params of a handler with a ``connection``; None after reporting why."""
        from mixer.oop import OopHandlerParams

        if not adapter:
            report("adapter", "a handler with a connection names its out-of-process adapter in `adapter`")
            return None, None
        descriptor, why = self.adapter(adapter, namespace, default)
        if descriptor is None:
            report("adapter", why)
            return None, None
        try:
            parsed = Connection.model_validate(dict(connection))
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                where = ".".join(str(part) for part in error["loc"])
                report(
                    f"connection.{where}" if where else "connection",
                    str(error["msg"]).removeprefix("Value error, "),
                )
            return None, None
        templates: dict[str, TemplateModel] = {}
        for template_name in descriptor.templates:
            model = self.template(template_name, namespace, default)
            if model is None:
                report(
                    "adapter", f'adapter "{adapter}" takes template "{template_name}", which is not declared'
                )
                return None, None
            templates[template_name] = model
        try:
            config = encode_params(descriptor.params_class, params)
        except DescriptorError as exc:
            report("params", str(exc))
            return None, None
        key = OOP_PREFIX + descriptor.name
        info = self.infos.get(key)
        if info is None:
            info = self.infos[key] = AdapterInfo(
                name=key,
                description=descriptor.description or f"out-of-process adapter {descriptor.name}",
                templates=frozenset(descriptor.templates),
                config_model=OopHandlerParams,
                factory=build_handler,
                stability=Stability.BETA,
                origin="config",
            )
        handler_params = OopHandlerParams(
            adapter=descriptor.name,
            connection=parsed,
            adapter_config=config,
            session_based=descriptor.session_based,
            templates=templates,
        )
        return info, handler_params


def value_types(builder: CompiledInstanceBuilder) -> dict[str, ValueType]:
    """The static type of every configured field, keyed as :mod:`mixer.oop._encode` looks them up."""
    types: dict[str, ValueType] = {}

    def walk(tree: Mapping[str, Any], prefix: str, in_map: bool) -> None:
        for key, node in tree.items():
            if isinstance(node, CompiledExpression):
                types[f"{prefix}/{key}" if in_map else prefix + key] = node.type
            else:
                spec = _field(builder, prefix + key)
                is_map = spec is not None and spec.kind.value == "map"
                walk(node, prefix + key if is_map else prefix + key + ".", is_map)

    walk(builder.expressions, "", False)
    return types


def _field(builder: CompiledInstanceBuilder, path: str) -> FieldSpec | None:
    specs = builder.template.fields
    spec: FieldSpec | None = None
    for part in path.split("."):
        spec = next((s for s in specs if s.name == part), None)
        if spec is None:
            return None
        specs = spec.fields
    return spec
