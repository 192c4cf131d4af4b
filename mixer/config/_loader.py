"""From documents to a :class:`ValidatedConfig`: kinds, names, params, expressions, references.

Every phase keeps going after a problem so one run reports them all. Objects whose own
content is invalid still take part in name resolution, so one typo is reported once, not again
by every rule that references the object.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from mixer.adapter import AdapterInfo
from mixer.attributes import AttributeInfo, AttributeManifest, ValueType
from mixer.config._bindings import AttributeBinding, compile_bindings
from mixer.config._documents import (
    AttributeManifestSpec,
    Envelope,
    HandlerSpec,
    HeaderOperationSpec,
    InstanceSpec,
    PlanSpec,
    RuleSpec,
    SamplingSpec,
)
from mixer.config._errors import IssueList, join_path, loc_path
from mixer.config._instances import CompiledInstanceBuilder, SharedMaps, compile_instance
from mixer.config._model import (
    DEFAULT_CONFIG_NAMESPACE,
    ActionConfig,
    HandlerConfig,
    HeaderOperationConfig,
    InstanceConfig,
    RuleConfig,
    SamplingConfig,
    SourceRef,
    ValidatedConfig,
)
from mixer.config._oop import OOP_PREFIX, OopDeclarations, value_types
from mixer.config._plans import compile_plan, valid_name
from mixer.config._source import RawDocument
from mixer.decision import HeaderOperationKind
from mixer.expr import CompiledExpression, ExpressionError
from mixer.expr import compile as compile_expression
from mixer.plans import PlanConfig
from mixer.registry import Registry
from mixer.templates import TemplateSpec, Variety

CORE_KINDS = ("attributemanifest", "handler", "instance", "rule", "plan")
#: Kinds Istio's proxies (through Pilot) consume, not Mixer; accepted in a config bundle and ignored.
PROXY_SIDE_KINDS = frozenset({"QuotaSpec", "QuotaSpecBinding", "HTTPAPISpec", "HTTPAPISpecBinding"})
#: API groups of objects other controllers consume (kubectl applies them from the same file as
#: Mixer's, as Istio's OOP adapter samples do); Mixer never received them. A misspelt Mixer group
#: is not among them and is still refused.
OTHER_API_GROUPS = frozenset(
    {
        "",  # core: v1 Service, ConfigMap, ...
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "rbac.authorization.k8s.io",
        "networking.k8s.io",
        "networking.istio.io",
        "security.istio.io",
        "authentication.istio.io",
    }
)
_OUT_OF_PROCESS_KINDS = ("adapter", "template")
_HANDLER, _INSTANCE, _RULE, _MANIFEST = "handler", "instance", "rule", "attributemanifest"
_PLAN = "plan"


@dataclass(slots=True)
class _Object:
    """One config object as declared, before its spec is validated."""

    role: str  # handler, instance, rule, attributemanifest or plan
    kind: str  # the document's kind as written (``handler``, ``prometheus``, ``metric``, ...)
    name: str
    namespace: str
    source: SourceRef
    spec: Any
    legacy_adapter: AdapterInfo | None = None
    legacy_template: TemplateSpec | None = None
    #: Set once known, even when the params are invalid, so references can still be checked.
    adapter: AdapterInfo | None = None
    template: TemplateSpec | None = None

    @property
    def fq_name(self) -> str:
        # Istio 1.0 keyed objects by name, kind and namespace, and its stock config relies on
        # it (``handler.prometheus`` beside ``handler.stdio``), so legacy objects keep the kind.
        if self.legacy:
            return f"{self.name}.{self.kind}.{self.namespace}"
        return f"{self.name}.{self.namespace}"

    @property
    def subject(self) -> str:
        return f"{self.kind} {self.name}.{self.namespace}"

    @property
    def legacy(self) -> bool:
        return self.kind not in CORE_KINDS

    @property
    def spec_path(self) -> str:
        return join_path(self.source.path, "spec")

    @property
    def params_path(self) -> str:
        # The legacy form has the params directly under spec.
        return self.spec_path if self.legacy else join_path(self.spec_path, "params")


class ConfigCompiler:
    """Compiles the documents of one load; problems collect in ``issues``."""

    def __init__(
        self,
        registry: Registry,
        base_manifest: AttributeManifest,
        issues: IssueList,
        default_namespace: str = DEFAULT_CONFIG_NAMESPACE,
    ) -> None:
        self.registry = registry
        self.base_manifest = base_manifest
        self.issues = issues
        self.default_namespace = default_namespace
        self.objects: dict[str, dict[str, _Object]] = {
            _MANIFEST: {},
            _HANDLER: {},
            _INSTANCE: {},
            _RULE: {},
            _PLAN: {},
        }
        self.oop = OopDeclarations()

    def compile(self, documents: Iterable[RawDocument]) -> ValidatedConfig | None:
        for document in documents:
            self._declare(document.source, document.body)
        manifest = self._manifest()
        handlers = self._handlers()
        instances = self._instances(manifest)
        rules = self._rules(manifest)
        plans = self._plans(manifest)
        self.oop.validate_all(self.default_namespace)
        if self.issues:
            return None
        handlers = self._oop_value_types(handlers, instances)
        return ValidatedConfig(
            manifest=manifest,
            handlers=handlers,
            instances=instances,
            rules=tuple(rules),
            default_namespace=self.default_namespace,
            plans=plans,
            oop_adapters=dict(self.oop.infos),
        )

    # -- problems ---------------------------------------------------------------------------

    def _error(self, obj: _Object, path: str, message: str) -> None:
        """``path`` is the whole field path within the document (it includes a List item's prefix)."""
        self.issues.add(SourceRef(obj.source.file, obj.source.document, path), message, subject=obj.subject)

    def _validation_errors(self, obj: _Object, path: str, exc: ValidationError) -> None:
        for error in exc.errors(include_url=False):
            self._error(obj, join_path(path, loc_path(error["loc"])), _pydantic_message(error))

    # -- phase 1: documents to declared objects ---------------------------------------------

    def _for_another_controller(self, body: dict[str, Any]) -> bool:
        """A Kubernetes object of another API group (not a Mixer kind under a wrong apiVersion)."""
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            return False
        group, _, version = api_version.rpartition("/")
        if group not in OTHER_API_GROUPS or (group == "" and version != "v1"):
            return False
        mixer_kind = (
            kind in CORE_KINDS
            or kind in _OUT_OF_PROCESS_KINDS
            or self.registry.template(kind) is not None
            or self.registry.adapter_for_kind(kind) is not None
        )
        return not mixer_kind

    def _declare(self, source: SourceRef, body: Any) -> None:
        if not isinstance(body, dict):
            self.issues.add(source, f"a document must be a mapping, got {_describe(body)}")
            return
        if body.get("kind") == "List":
            self._declare_list(source, body)
            return
        if self._for_another_controller(body):
            return
        try:
            envelope = Envelope.model_validate(body)
        except ValidationError as exc:
            subject = _subject_hint(body)
            for error in exc.errors(include_url=False):
                path = join_path(source.path, loc_path(error["loc"]))
                where = SourceRef(source.file, source.document, path)
                self.issues.add(where, _pydantic_message(error), subject=subject)
            return
        kind = envelope.kind
        namespace = envelope.metadata.namespace or self.default_namespace
        obj = _Object("", kind, envelope.metadata.name, namespace, source, envelope.spec)
        if kind in CORE_KINDS:
            obj.role = kind
        elif (template := self.registry.template(kind)) is not None:
            obj.role, obj.legacy_template = _INSTANCE, template
        elif (adapter := self.registry.adapter_for_kind(kind)) is not None:
            obj.role, obj.legacy_adapter = _HANDLER, adapter
        elif kind in PROXY_SIDE_KINDS:
            return
        elif kind in _OUT_OF_PROCESS_KINDS:
            declared = self.oop.adapters if kind == "adapter" else self.oop.templates

            def report(path: str, message: str, obj: _Object = obj) -> None:
                self._error(obj, join_path(obj.spec_path, path), message)

            declared[f"{obj.name}.{namespace}"] = (obj.name, envelope.spec, report)
            return
        else:
            self._error(obj, join_path(source.path, "kind"), self._unknown_kind(kind))
            return
        table = self.objects[obj.role]
        previous = table.get(obj.fq_name)
        if previous is not None:
            self._error(
                obj,
                join_path(source.path, "metadata.name"),
                f'duplicate {obj.role} "{obj.fq_name}", first defined in {previous.source}',
            )
            return
        table[obj.fq_name] = obj

    def _declare_list(self, source: SourceRef, body: dict[Any, Any]) -> None:
        for key in body:
            if key not in ("apiVersion", "kind", "items", "metadata"):
                self.issues.add(
                    source, f'unknown field "{key}" in a List', path=join_path(source.path, str(key))
                )
        items = body.get("items")
        if not isinstance(items, list):
            self.issues.add(source, "a List needs a list of items", path=join_path(source.path, "items"))
            return
        for index, item in enumerate(items):
            self._declare(
                SourceRef(source.file, source.document, join_path(source.path, f"items[{index}]")), item
            )

    def _unknown_kind(self, kind: str) -> str:
        handler_kinds = sorted(k for info in self.registry.adapters.values() for k in info.kinds())
        template_kinds = sorted(self.registry.templates)
        known = [*CORE_KINDS, *handler_kinds, *template_kinds]
        hint = _did_you_mean(kind, known)
        return (
            f'unknown kind "{kind}"{hint} (known kinds: {", ".join(CORE_KINDS)}; '
            f"legacy handler kinds: {', '.join(handler_kinds) or 'none'}; "
            f"legacy instance kinds: {', '.join(template_kinds) or 'none'})"
        )

    def _spec(self, obj: _Object, model: type[BaseModel]) -> Any:
        spec = obj.spec if obj.spec is not None else {}
        try:
            return model.model_validate(spec)
        except ValidationError as exc:
            self._validation_errors(obj, obj.spec_path, exc)
            return None

    # -- phase 2: attribute manifests -------------------------------------------------------

    def _manifest(self) -> AttributeManifest:
        declared: dict[str, tuple[AttributeInfo, _Object | None]] = {
            name: (self.base_manifest.info(name), None) for name in self.base_manifest
        }
        for obj in self.objects[_MANIFEST].values():
            spec = self._spec(obj, AttributeManifestSpec)
            if spec is None:
                continue
            for name, decl in spec.attributes.items():
                previous = declared.get(name)
                if previous is not None and previous[0].value_type is not decl.valueType:
                    where = (
                        "the base attribute vocabulary" if previous[1] is None else str(previous[1].source)
                    )
                    self._error(
                        obj,
                        join_path(obj.spec_path, f"attributes.{name}.valueType"),
                        f'attribute "{name}" is declared as {decl.valueType.name} here '
                        f"and as {previous[0].value_type.name} in {where}",
                    )
                    continue
                if previous is None or (decl.description and not previous[0].description):
                    declared[name] = (AttributeInfo(name, decl.valueType, decl.description), obj)
        return AttributeManifest(info for info, _ in declared.values())

    # -- phase 3: handlers ------------------------------------------------------------------

    def _handlers(self) -> dict[str, HandlerConfig]:
        handlers: dict[str, HandlerConfig] = {}
        for obj in self.objects[_HANDLER].values():
            if obj.legacy_adapter is not None:
                obj.adapter = obj.legacy_adapter
                params = obj.spec
            else:
                spec: HandlerSpec | None = self._spec(obj, HandlerSpec)
                if spec is None:
                    continue
                if spec.connection is not None:
                    self._oop_handler(obj, spec, handlers)
                    continue
                obj.adapter = self._handler_adapter(obj, spec)
                params = spec.params
            if obj.adapter is None:
                continue
            model = self._params(obj, obj.adapter, params)
            if model is not None:
                handlers[obj.fq_name] = HandlerConfig(
                    obj.fq_name, obj.namespace, obj.adapter.name, model, obj.source
                )
        return handlers

    def _oop_handler(self, obj: _Object, spec: HandlerSpec, handlers: dict[str, HandlerConfig]) -> None:
        def report(path: str, message: str) -> None:
            self._error(obj, join_path(obj.spec_path, path), message)

        assert spec.connection is not None
        info, params = self.oop.handler(
            obj.name,
            obj.namespace,
            self.default_namespace,
            spec.adapter or spec.compiledAdapter,
            spec.connection,
            spec.params,
            report,
        )
        if info is None:
            return
        obj.adapter = info
        handlers[obj.fq_name] = HandlerConfig(obj.fq_name, obj.namespace, info.name, params, obj.source)

    def _oop_value_types(
        self, handlers: dict[str, HandlerConfig], instances: dict[str, InstanceConfig]
    ) -> dict[str, HandlerConfig]:
        """Out-of-process handlers learn the static type of each field of the instances they may
        receive: a DNS name and a string are both ``str`` at run time but differ on the wire."""
        types = {
            name: value_types(instance.builder)
            for name, instance in instances.items()
            if isinstance(instance.builder, CompiledInstanceBuilder)
        }
        result = dict(handlers)
        for name, handler in handlers.items():
            if handler.adapter.startswith(OOP_PREFIX):
                templates = getattr(handler.params, "templates", {})
                relevant = {k: v for k, v in types.items() if instances[k].template in templates}
                wire = {k: _wire_name(instances[k]) for k in relevant}
                params = handler.params.model_copy(update={"value_types": relevant, "wire_names": wire})
                result[name] = dataclasses.replace(handler, params=params)
        return result

    def _handler_adapter(self, obj: _Object, spec: HandlerSpec) -> AdapterInfo | None:
        path = obj.spec_path
        if spec.adapter and not spec.compiledAdapter:
            self._error(
                obj,
                join_path(path, "adapter"),
                "out-of-process adapters need a connection (adapter + connection); "
                "use compiledAdapter with an installed adapter",
            )
            return None
        if not spec.compiledAdapter:
            self._error(obj, join_path(path, "compiledAdapter"), "required field is missing")
            return None
        # Istio's 1.1+ configs name compiled adapters by their Mixer names, which are the legacy
        # kinds (``compiledAdapter: listchecker`` for the list adapter).
        adapter = self.registry.adapter(spec.compiledAdapter) or self.registry.adapter_for_kind(
            spec.compiledAdapter
        )
        if adapter is None:
            names = sorted(self.registry.adapters)
            self._error(
                obj,
                join_path(path, "compiledAdapter"),
                f'unknown adapter "{spec.compiledAdapter}"{_did_you_mean(spec.compiledAdapter, names)} '
                f"(installed: {', '.join(names) or 'none'})",
            )
        return adapter

    def _params(self, obj: _Object, adapter: AdapterInfo, params: Any) -> BaseModel | None:
        path = obj.params_path
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            self._error(obj, path, f"expected a mapping of adapter params, got {_describe(params)}")
            return None
        try:
            return adapter.config_model.model_validate(params)
        except ValidationError as exc:
            self._validation_errors(obj, path, exc)
            return None

    # -- phase 4: instances -----------------------------------------------------------------

    def _instances(self, manifest: AttributeManifest) -> dict[str, InstanceConfig]:
        instances: dict[str, InstanceConfig] = {}
        shared_maps: SharedMaps = {}
        for obj in self.objects[_INSTANCE].values():
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
                self._error(obj, path, f"expected a mapping of template fields, got {_describe(params)}")
                continue

            def report(field_path: str, message: str, obj: _Object = obj, path: str = path) -> None:
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
        obj: _Object,
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

    def _instance_template(self, obj: _Object, spec: InstanceSpec) -> TemplateSpec | None:
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
                    f"{_did_you_mean(spec.compiledTemplate, names)} (known: {', '.join(names)})",
                )
        return template

    # -- phase 5: rules ---------------------------------------------------------------------

    def _rules(self, manifest: AttributeManifest) -> list[RuleConfig]:
        rules: list[RuleConfig] = []
        for obj in self.objects[_RULE].values():
            spec: RuleSpec | None = self._spec(obj, RuleSpec)
            if spec is None:
                continue
            rule = _RuleCompiler(self, obj, manifest).compile(spec)
            if rule is not None:
                rules.append(rule)
        return rules

    # -- phase 6: plans ---------------------------------------------------------------------

    def _plans(self, manifest: AttributeManifest) -> dict[str, PlanConfig]:
        plans: dict[str, PlanConfig] = {}
        for obj in self.objects[_PLAN].values():
            if obj.namespace != self.default_namespace:
                # Key stores and claims name plans alone, so plan names are global.
                self._error(
                    obj,
                    join_path(obj.source.path, "metadata.namespace"),
                    f"plans are global: leave the namespace out or use {self.default_namespace}",
                )
                continue
            if not valid_name(obj.name):
                self._error(
                    obj,
                    join_path(obj.source.path, "metadata.name"),
                    f"{obj.name!r} is not a valid plan name (letters, digits, '_', '-', '.')",
                )
            spec: PlanSpec | None = self._spec(obj, PlanSpec)
            if spec is None:
                continue

            def report(path: str, message: str, obj: _Object = obj) -> None:
                self._error(obj, join_path(obj.spec_path, path), message)

            plan = compile_plan(obj.name, spec, manifest, report, str(obj.source))
            if plan is not None and valid_name(obj.name):
                plans[obj.name] = plan
        return plans

    def resolve(self, role: str, ref: str, namespace: str) -> tuple[_Object | None, str]:
        """The object ``ref`` names, or None and why not.

        ``ref`` may be ``name`` (in the rule's namespace, then the default config namespace),
        ``name.namespace``, or the legacy ``name.kind`` / ``name.kind.namespace``.
        """
        table = self.objects[role]
        namespaces = tuple(dict.fromkeys((namespace, self.default_namespace)))
        for candidate in (*(f"{ref}.{ns}" for ns in namespaces), ref):
            if (obj := table.get(candidate)) is not None:
                return obj, ""
        # ``name.handler`` / ``name.instance[.namespace]``: the 1.1+ kinds written the legacy way.
        parts = ref.split(".")
        qualified: list[tuple[str, str]] = []
        if len(parts) >= 2:
            qualified += [(f"{'.'.join(parts[:-1])}.{ns}", parts[-1]) for ns in namespaces]
        if len(parts) >= 3:
            qualified.append((f"{'.'.join(parts[:-2])}.{parts[-1]}", parts[-2]))
        for candidate, kind in qualified:
            obj = table.get(candidate)
            if obj is not None and obj.kind == kind:
                return obj, ""
        # A bare name also finds a legacy object (named ``name.kind.namespace``) when only one fits.
        for ns in namespaces:
            found = [obj for obj in table.values() if obj.name == ref and obj.namespace == ns]
            if len(found) == 1:
                return found[0], ""
            if len(found) > 1:
                names = ", ".join(sorted(f"{obj.name}.{obj.kind}" for obj in found))
                return None, f'"{ref}" is ambiguous in namespace {ns} (write one of {names})'
        tried = " and ".join(f"{ref}.{ns}" for ns in namespaces)
        elsewhere = sorted(obj.fq_name for obj in table.values() if obj.name == ref)
        if elsewhere:
            hint = f" (other namespaces have {', '.join(elsewhere)})"
        else:
            hint = _did_you_mean(parts[0], sorted({obj.name for obj in table.values()}))
        return None, f'unknown {role} "{ref}"{hint} (looked for {tried})'


class _RuleCompiler:
    def __init__(self, owner: ConfigCompiler, obj: _Object, manifest: AttributeManifest) -> None:
        self.owner = owner
        self.obj = obj
        self.manifest = manifest
        self.failed = False
        #: ``<action name>.output.<field>`` of named actions whose template has outputs.
        self.outputs: list[AttributeInfo] = []

    def error(self, path: str, message: str) -> None:
        self.failed = True
        self.owner._error(self.obj, join_path(self.obj.spec_path, path), message)

    def expression(self, text: str, path: str, expected: ValueType) -> CompiledExpression | None:
        try:
            return compile_expression(text, self.manifest, expected=expected)
        except ExpressionError as exc:
            self.error(path, str(exc))
            return None

    def compile(self, spec: RuleSpec) -> RuleConfig | None:
        match = None
        if spec.match and spec.match.strip():
            match = self.expression(spec.match, "match", ValueType.BOOL)
        actions = tuple(self.action(i, action) for i, action in enumerate(spec.actions))
        named: set[str] = set()
        for i, action in enumerate(spec.actions):
            if action.name in named:
                self.error(f"actions[{i}].name", f'action name "{action.name}" is used twice in this rule')
            elif action.name:
                named.add(action.name)
        if self.outputs:
            # Header operations may read what the rule's named actions answered; a declared
            # attribute of the same name keeps its declaration.
            base = self.manifest
            extra = [info for info in self.outputs if info.name not in base]
            self.manifest = AttributeManifest([*(base.info(name) for name in base), *extra])
        request_ops = self.header_operations("requestHeaderOperations", spec.requestHeaderOperations)
        response_ops = self.header_operations("responseHeaderOperations", spec.responseHeaderOperations)
        sampling = self.sampling(spec.sampling)
        if self.failed:
            return None
        obj = self.obj
        return RuleConfig(
            name=obj.fq_name,
            namespace=obj.namespace,
            match=match,
            actions=tuple(a for a in actions if a is not None),
            source=obj.source,
            request_header_operations=request_ops,
            response_header_operations=response_ops,
            sampling=sampling,
        )

    def action(self, index: int, action: Any) -> ActionConfig | None:
        path = f"actions[{index}]"
        namespace = self.obj.namespace
        handler, why = self.owner.resolve(_HANDLER, action.handler, namespace)
        if handler is None:
            self.error(f"{path}.handler", why)
        if not action.instances:
            self.error(f"{path}.instances", "an action needs at least one instance")
        instances: list[str] = []
        for i, ref in enumerate(action.instances):
            ipath = f"{path}.instances[{i}]"
            instance, why = self.owner.resolve(_INSTANCE, ref, namespace)
            if instance is None:
                self.error(ipath, why)
                continue
            if instance.fq_name in instances:
                self.error(ipath, f'instance "{instance.fq_name}" is listed twice')
                continue
            instances.append(instance.fq_name)
            adapter, template = handler.adapter if handler else None, instance.template
            if template is not None and template.outputs and action.name:
                self.outputs += [
                    AttributeInfo(f"{action.name}.output.{out.name}", out.value_type or ValueType.STRING)
                    for out in template.outputs
                ]
            if handler and adapter and template and template.name not in adapter.templates:
                supported = ", ".join(sorted(adapter.templates)) or "none"
                self.error(
                    ipath,
                    f'handler "{handler.fq_name}" (adapter {adapter.name}) does not support '
                    f'template "{template.name}" of instance "{instance.fq_name}" (supports: {supported})',
                )
        if handler is None:
            return None
        return ActionConfig(handler.fq_name, tuple(instances), action.name)

    def header_operations(
        self, field: str, operations: list[HeaderOperationSpec]
    ) -> tuple[HeaderOperationConfig, ...]:
        result: list[HeaderOperationConfig] = []
        for i, op in enumerate(operations):
            values: list[CompiledExpression] = []
            for j, text in enumerate(op.values):
                compiled = self.expression(text, f"{field}[{i}].values[{j}]", ValueType.STRING)
                if compiled is not None:
                    values.append(compiled)
            result.append(
                HeaderOperationConfig(op.name, tuple(values), HeaderOperationKind[op.operation.value])
            )
        return tuple(result)

    def sampling(self, spec: SamplingSpec | None) -> SamplingConfig | None:
        if spec is None or (spec.random is None and spec.rateLimit is None):
            return None
        random_percent: float | None = None
        independent = False
        if spec.random is not None:
            fraction = spec.random.percentSampled
            random_percent = fraction.numerator * 100 / fraction.denominator.scale
            independent = spec.random.useIndependentRandomness
            if random_percent > 100:
                self.error(
                    "sampling.random.percentSampled.numerator",
                    f"{fraction.numerator}/{fraction.denominator.scale} is more than 100 percent",
                )
        rate: int | None = None
        duration = None
        unsampled = 0
        if spec.rateLimit is not None:
            limit = spec.rateLimit
            if limit.samplingRate < 1:
                self.error("sampling.rateLimit.samplingRate", "must be at least 1")
            if limit.samplingDuration.total_seconds() <= 0:
                self.error("sampling.rateLimit.samplingDuration", "must be more than 0")
            rate, duration, unsampled = limit.samplingRate, limit.samplingDuration, limit.maxUnsampledEntries
        return SamplingConfig(
            random_percent=random_percent,
            rate_sampling_rate=rate,
            random_use_independent_randomness=independent,
            rate_sampling_duration=duration,
            rate_max_unsampled_entries=unsampled,
        )


def _wire_name(instance: InstanceConfig) -> str:
    """Mixer 1.1+ named an instance ``name.instance.namespace`` (the legacy form kept its kind)."""
    legacy_suffix = f".{instance.template}.{instance.namespace}"
    suffix = f".{instance.namespace}"
    if instance.name.endswith(legacy_suffix) or not instance.name.endswith(suffix):
        return instance.name
    return f"{instance.name[: -len(suffix)]}.instance.{instance.namespace}"


_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
}


def _pydantic_message(error: Any) -> str:
    message = _MESSAGES.get(error["type"])
    if message is not None:
        return message
    text = str(error["msg"])
    # Custom validators raise ValueError; pydantic prefixes their message.
    return text.removeprefix("Value error, ")


def _subject_hint(body: Mapping[Any, Any]) -> str:
    kind = body.get("kind")
    metadata = body.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if isinstance(kind, str) and isinstance(name, str):
        namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
        return f"{kind} {name}.{namespace or DEFAULT_CONFIG_NAMESPACE}"
    return ""


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"
