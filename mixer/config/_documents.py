"""Strict models of the config documents: the envelope and the spec of each core kind.

Field names follow Istio's YAML spelling (camelCase); unknown keys are rejected everywhere.
Adapter params and instance params are validated elsewhere, against the adapter's config model
and the template's fields, so they are left as plain mappings here.
"""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from mixer.attributes import ValueType
from mixer.params import Duration

API_VERSIONS = ("config.istio.io/v1alpha2", "policy.istio.io/v1beta1", "mixer.mesh/v1alpha1")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metadata(_Strict):
    name: str = Field(min_length=1)
    namespace: str = Field(default="", description="empty: the default config namespace")
    # Kubernetes object metadata, present in configs exported with kubectl; not used.
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    uid: str | None = None
    resourceVersion: str | None = None
    generation: int | None = None
    creationTimestamp: Any = None
    selfLink: str | None = None
    generateName: str | None = None
    finalizers: list[str] = []
    managedFields: list[Any] = []


class Envelope(_Strict):
    # mixer.mesh/v1alpha1 is this project's own group, for kinds Istio never had (plan).
    apiVersion: Literal["config.istio.io/v1alpha2", "policy.istio.io/v1beta1", "mixer.mesh/v1alpha1"]
    kind: str
    metadata: Metadata
    spec: Any = None
    # Written by Kubernetes on stored objects; carries no configuration.
    status: Any = None


def _value_type(value: Any) -> Any:
    if isinstance(value, ValueType):
        return value
    if isinstance(value, str):
        member = ValueType.__members__.get(value)
        if member is not None and member is not ValueType.VALUE_TYPE_UNSPECIFIED:
            return member
    names = ", ".join(t.name for t in ValueType if t is not ValueType.VALUE_TYPE_UNSPECIFIED)
    raise ValueError(f"unknown value type {value!r} (expected one of {names})")


class AttributeDeclaration(_Strict):
    valueType: Annotated[ValueType, BeforeValidator(_value_type)]
    description: str = ""


class AttributeManifestSpec(_Strict):
    attributes: dict[str, AttributeDeclaration] = {}
    revision: str = ""
    name: str = ""


class HandlerSpec(_Strict):
    compiledAdapter: str = ""
    adapter: str = ""
    params: dict[str, Any] | None = None
    connection: dict[str, Any] | None = None
    name: str = ""


class InstanceSpec(_Strict):
    compiledTemplate: str = ""
    template: str = ""
    params: dict[str, Any] | None = None
    attributeBindings: dict[str, str] = {}
    name: str = ""


class ActionSpec(_Strict):
    handler: str = Field(min_length=1)
    instances: list[str] = []
    name: str = ""


class HeaderOperation(enum.Enum):
    REPLACE = "REPLACE"
    REMOVE = "REMOVE"
    APPEND = "APPEND"


class HeaderOperationSpec(_Strict):
    name: str = Field(min_length=1)
    values: list[str] = []
    operation: HeaderOperation = HeaderOperation.REPLACE


class Denominator(enum.Enum):
    HUNDRED = "HUNDRED"
    TEN_THOUSAND = "TEN_THOUSAND"
    MILLION = "MILLION"

    @property
    def scale(self) -> int:
        return {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}[self.value]


class FractionalPercent(_Strict):
    numerator: int = Field(default=0, ge=0)
    denominator: Denominator = Denominator.HUNDRED


class RandomSamplingSpec(_Strict):
    percentSampled: FractionalPercent = FractionalPercent()
    useIndependentRandomness: bool = False


class RateLimitSamplingSpec(_Strict):
    samplingDuration: Duration = timedelta(0)
    maxUnsampledEntries: int = Field(default=0, ge=0)
    samplingRate: int = Field(default=0, ge=0)


class SamplingSpec(_Strict):
    random: RandomSamplingSpec | None = None
    rateLimit: RateLimitSamplingSpec | None = None


class RuleSpec(_Strict):
    match: str | None = ""
    actions: list[ActionSpec] = []
    requestHeaderOperations: list[HeaderOperationSpec] = []
    responseHeaderOperations: list[HeaderOperationSpec] = []
    sampling: SamplingSpec | None = None


class LimitSpec(_Strict):
    """One limit of a plan, as written; meaning and cross-field rules are checked when compiled."""

    name: str = Field(min_length=1)
    max: int = Field(ge=1)
    per: Any = None
    algorithm: Literal["fixed_window", "rolling_window", "gcra"] = "fixed_window"
    burst: int | None = Field(default=None, ge=1)
    buckets: int | None = Field(default=None, ge=1, le=1000)
    time_zone: str | None = None
    cost: str | int | None = None
    dimensions: list[str | dict[str, Any]] | None = None
    overage: Literal["reject", "shadow"] = "reject"


class PlanSpec(_Strict):
    description: str = ""
    limits: list[LimitSpec] = []
