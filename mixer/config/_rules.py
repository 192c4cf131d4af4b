"""Phase 5 of a config load: rules (actions, header operations, sampling)."""

from __future__ import annotations

from typing import Any

from mixer.attributes import AttributeInfo, AttributeManifest, ValueType
from mixer.config._compiler import (
    ROLE_HANDLER,
    ROLE_INSTANCE,
    ROLE_RULE,
    CompilerBase,
    DeclaredObject,
)
from mixer.config._documents import (
    HeaderOperationSpec,
    RuleSpec,
    SamplingSpec,
)
from mixer.config._errors import join_path
from mixer.config._model import (
    ActionConfig,
    HeaderOperationConfig,
    RuleConfig,
    SamplingConfig,
)
from mixer.decision import HeaderOperationKind
from mixer.expr import CompiledExpression, ExpressionError
from mixer.expr import compile as compile_expression


class RulePhase(CompilerBase):
    """Compiles rules: actions, header operations and sampling."""

    # -- phase 5: rules ---------------------------------------------------------------------

    def _rules(self, manifest: AttributeManifest) -> list[RuleConfig]:
        rules: list[RuleConfig] = []
        for obj in self.objects[ROLE_RULE].values():
            spec: RuleSpec | None = self._spec(obj, RuleSpec)
            if spec is None:
                continue
            rule = _RuleCompiler(self, obj, manifest).compile(spec)
            if rule is not None:
                rules.append(rule)
        return rules


class _RuleCompiler:
    def __init__(self, owner: CompilerBase, obj: DeclaredObject, manifest: AttributeManifest) -> None:
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
        handler, why = self.owner.resolve(ROLE_HANDLER, action.handler, namespace)
        if handler is None:
            self.error(f"{path}.handler", why)
        if not action.instances:
            self.error(f"{path}.instances", "an action needs at least one instance")
        instances: list[str] = []
        for i, ref in enumerate(action.instances):
            ipath = f"{path}.instances[{i}]"
            instance, why = self.owner.resolve(ROLE_INSTANCE, ref, namespace)
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
