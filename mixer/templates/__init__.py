"""Templates: the shapes of the instances that rules send to handlers.

A template names its fields and their types (:class:`TemplateSpec`); config validation checks
instance expressions against the spec, and the runtime builds one instance object per matching
rule action. Built-in templates are registered through the plugin hooks like third-party ones.
"""

from mixer.templates._instances import (
    Action,
    ApiKeyInstance,
    AuthorizationInstance,
    CheckNothingInstance,
    Instance,
    ListEntryInstance,
    LogEntryInstance,
    MetricInstance,
    PlanCheckInstance,
    QuotaInstance,
    ReportNothingInstance,
    RequestContext,
    Subject,
    TraceSpanInstance,
    field_is_verified,
    mixer_instance_name,
)
from mixer.templates._spec import (
    BUILTIN_TEMPLATES,
    PLAN_TEMPLATES,
    FieldKind,
    FieldSpec,
    TemplateSpec,
    Variety,
)

__all__ = [
    "BUILTIN_TEMPLATES",
    "PLAN_TEMPLATES",
    "Action",
    "ApiKeyInstance",
    "AuthorizationInstance",
    "CheckNothingInstance",
    "FieldKind",
    "FieldSpec",
    "Instance",
    "ListEntryInstance",
    "LogEntryInstance",
    "MetricInstance",
    "PlanCheckInstance",
    "QuotaInstance",
    "ReportNothingInstance",
    "RequestContext",
    "Subject",
    "TemplateSpec",
    "TraceSpanInstance",
    "Variety",
    "field_is_verified",
    "mixer_instance_name",
]
