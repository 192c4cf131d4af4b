"""The validated, compiled form of a configuration: what the runtime is built from.

Loading (YAML, substitution, pydantic validation, name resolution, cross-reference and type
checks) ends here; every expression is already compiled. Nothing in these objects touches the
network or the disk, so building one is safe to repeat on every reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from pydantic import BaseModel

from mixer.adapter import AdapterInfo
from mixer.attributes import AttributeBag, AttributeManifest
from mixer.decision import HeaderOperationKind
from mixer.expr import CompiledExpression
from mixer.plans import PlanConfig
from mixer.templates import Instance, TemplateSpec

DEFAULT_CONFIG_NAMESPACE = "istio-system"


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a config object came from, for error messages: ``file``, 1-based ``document``, ``path``."""

    file: str
    document: int
    path: str = ""

    def __str__(self) -> str:
        where = f"{self.file}: document {self.document}"
        return f"{where}: {self.path}" if self.path else where


class InstanceBuilder(Protocol):
    """Builds one instance of a template from a bag with compiled expressions."""

    name: str
    template: TemplateSpec

    def build(self, bag: AttributeBag) -> Instance:
        """:raises mixer.expr.ExpressionError: an expression failed (e.g. an absent attribute)."""
        ...


@dataclass(frozen=True, slots=True)
class HandlerConfig:
    name: str  # fully qualified: ``name.namespace`` (legacy-form objects: ``name.kind.namespace``)
    namespace: str
    adapter: str
    params: BaseModel  # an instance of the adapter's config model
    source: SourceRef


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    name: str  # fully qualified: ``name.namespace`` (legacy-form objects: ``name.kind.namespace``)
    namespace: str
    template: str
    builder: InstanceBuilder
    source: SourceRef
    #: ``attributeBindings`` of an attribute-producing instance: (attribute, expression over
    #: ``mixer.config.OUTPUT_PREFIX + output field``), in config order.
    bindings: tuple[tuple[str, CompiledExpression], ...] = ()


@dataclass(frozen=True, slots=True)
class HeaderOperationConfig:
    name: str
    values: tuple[CompiledExpression, ...]
    operation: HeaderOperationKind = HeaderOperationKind.REPLACE


@dataclass(frozen=True, slots=True)
class ActionConfig:
    handler: str  # fully qualified handler name
    instances: tuple[str, ...]  # fully qualified instance names
    name: str = ""


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    """Rule sampling: ``random_percent`` of requests, or 1 in ``rate_sampling_rate``.

    When both are set an entry must be selected by both (Istio's rule semantics). Rate-limit
    sampling lets ``rate_max_unsampled_entries`` through in each ``rate_sampling_duration``
    window before 1 in ``rate_sampling_rate`` applies. Random sampling is keyed on the request
    id unless ``random_use_independent_randomness`` is set.
    """

    random_percent: float | None = None
    rate_sampling_rate: int | None = None
    random_use_independent_randomness: bool = False
    rate_sampling_duration: timedelta | None = None
    rate_max_unsampled_entries: int = 0


@dataclass(frozen=True, slots=True)
class RuleConfig:
    name: str  # fully qualified
    namespace: str
    match: CompiledExpression | None  # None: always true
    actions: tuple[ActionConfig, ...]
    source: SourceRef
    request_header_operations: tuple[HeaderOperationConfig, ...] = ()
    response_header_operations: tuple[HeaderOperationConfig, ...] = ()
    sampling: SamplingConfig | None = None


@dataclass(frozen=True)
class ValidatedConfig:
    manifest: AttributeManifest
    handlers: Mapping[str, HandlerConfig] = field(default_factory=dict)
    instances: Mapping[str, InstanceConfig] = field(default_factory=dict)
    rules: tuple[RuleConfig, ...] = ()
    default_namespace: str = DEFAULT_CONFIG_NAMESPACE
    #: Plan tiers (``kind: plan`` documents) by plan name; plans are global.
    plans: Mapping[str, PlanConfig] = field(default_factory=dict)
    #: Adapters declared by ``kind: adapter`` documents that handlers use, by the name each
    #: handler's ``adapter`` records (``oop:<name>``); the runtime builds their handlers like
    #: those of installed adapters.
    oop_adapters: Mapping[str, AdapterInfo] = field(default_factory=dict)
