"""Phase 4 of a config load: instances compiled from their templates' fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mixer.attributes import AttributeManifest
from mixer.config._bindings import AttributeBinding, compile_bindings
from mixer.config._compiler import (
    ROLE_INSTANCE,
    CompilerBase,
    DeclaredObject,
    describe_value,
    did_you_mean,
)
from mixer.config._documents import (
    InstanceSpec,
)
from mixer.config._errors import join_path
from mixer.config._instances import SharedMaps, compile_instance
from mixer.config._model import (
    InstanceConfig,
)
from mixer.templates import TemplateSpec, Variety


class InstancePhase(CompilerBase):
    """Compiles each instance's template fields and attribute bindings."""

    # -- phase 4: instances -----------------------------------------------------------------

    def _instances(self, manifest: AttributeManifest) -> dict[str, InstanceConfig]:
        instances: dict[str, InstanceConfig] = {}
        shared_maps: SharedMaps = {}
        for obj in self.objects[ROLE_INSTANCE].values():
            bindings_spec: Mapping[str, Any] = {}
            if obj.legacy_template is not None:
                obj.template = obj.legacy_template
                params = obj.spec
                if isinstance(params, Mapping) and obj.template.variety is Variety.ATTRIBUTE_GENERATOR:
                    # Istio 1.0 wrote the bindings inside the legacy spec, beside the fields.
                    params = dict(params)
                    keys = ("attribute_bindings", "attributeBindings")
                    found = [params.pop(k) for k in keys if k in params]
                    bindings_spec = found[0] if found and isinstance(found[0], Mapping) else {}
            else:
                spec: InstanceSpec | None = self._spec(obj, InstanceSpec)
                if spec is None:
                    continue
                obj.template = self._instance_template(obj, spec)
                params = spec.params
                bindings_spec = spec.attributeBindings
            if obj.template is None:
                continue
            path = obj.params_path
            if params is not None and not isinstance(params, Mapping):
                self._error(obj, path, f"expected a mapping of template fields, got {describe_value(params)}")
                continue

            def report(field_path: str, message: str, obj: DeclaredObject = obj, path: str = path) -> None:
                self._error(obj, join_path(path, field_path), message)

            builder = compile_instance(obj.fq_name, obj.template, params, manifest, report, shared_maps)
            bindings = self._bindings(obj, obj.template, bindings_spec, manifest)
            if builder is not None and bindings is not None:
                instances[obj.fq_name] = InstanceConfig(
                    obj.fq_name,
                    obj.namespace,
                    obj.template.name,
                    builder,
                    obj.source,
                    tuple((b.attribute, b.expression) for b in bindings),
                )
        return instances

    def _bindings(
        self,
        obj: DeclaredObject,
        template: TemplateSpec,
        bindings: Mapping[str, Any],
        manifest: AttributeManifest,
    ) -> tuple[AttributeBinding, ...] | None:
        path = join_path(obj.spec_path, "attributeBindings")
        if template.variety is not Variety.ATTRIBUTE_GENERATOR:
            if bindings:
                self._error(
                    obj,
                    path,
                    f'template "{template.name}" produces no attributes: attributeBindings apply only '
                    "to attribute-producing templates (such as kubernetes)",
                )
                return None
            return ()

        def report(field_path: str, message: str) -> None:
            self._error(obj, field_path, message)

        return compile_bindings(template, bindings, manifest, path, report)

    def _instance_template(self, obj: DeclaredObject, spec: InstanceSpec) -> TemplateSpec | None:
        path = obj.spec_path
        template: TemplateSpec | None = None
        if spec.template and not spec.compiledTemplate:
            model = self.oop.template(spec.template, obj.namespace, self.default_namespace)
            template = model.spec if model is not None else self.registry.template(spec.template)
            if template is None:
                self._error(
                    obj,
                    join_path(path, "template"),
                    f'unknown template "{spec.template}": declare it with a `kind: template` document '
                    "or use compiledTemplate with a built-in template",
                )
        elif not spec.compiledTemplate:
            self._error(obj, join_path(path, "compiledTemplate"), "required field is missing")
        else:
            template = self.registry.template(spec.compiledTemplate)
            if template is None:
                names = sorted(self.registry.templates)
                self._error(
                    obj,
                    join_path(path, "compiledTemplate"),
                    f'unknown template "{spec.compiledTemplate}"'
                    f"{did_you_mean(spec.compiledTemplate, names)} (known: {', '.join(names)})",
                )
        return template
