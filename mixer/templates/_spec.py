"""Template specifications: field names and types, checked when config loads."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from mixer.templates import _instances as inst
from mixer.values import ValueType


class Variety(enum.Enum):
    """When a template's instances are dispatched (Mixer's TEMPLATE_VARIETY_*)."""

    CHECK = "check"
    REPORT = "report"
    QUOTA = "quota"
    #: Attribute producing: dispatched before every other rule of a Check or a Report; the
    #: handler answers output fields that the instance's ``attributeBindings`` map to attributes.
    ATTRIBUTE_GENERATOR = "attributegenerator"


class FieldKind(enum.Enum):
    VALUE = "value"  # one expression
    MAP = "map"  # map<string, expression>
    STRUCT = "struct"  # nested fields (authorization's subject and action)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One template field.

    ``value_type`` None means "Value": any type, inferred from the expression. For MAP fields it is
    the type of every map value; for STRUCT fields it is unused and ``fields`` holds the members.
    """

    name: str
    kind: FieldKind = FieldKind.VALUE
    value_type: ValueType | None = None
    required: bool = False
    fields: tuple[FieldSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """A template: its name, variety, fields and the instance class the runtime builds.

    ``request_context``: the runtime sets ``attributes`` (the request's bag, which records what is
    read from it) and ``deduplication_id`` (the Check's) on each instance before dispatch, for
    handlers that evaluate expressions of their own per request; the instance type must have both.
    """

    name: str
    variety: Variety
    fields: tuple[FieldSpec, ...]
    instance_type: type[inst.Instance]
    description: str = ""
    request_context: bool = False
    #: Fields the adapter answers with: for ATTRIBUTE_GENERATOR templates the ``$out.<name>`` of
    #: attributeBindings; for check-with-output templates (an out-of-process adapter's keyval) the
    #: ``<action name>.output.<field>`` that rules read.
    outputs: tuple[FieldSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.request_context:
            names = {f.name for f in dataclasses.fields(self.instance_type)}
            missing = {"attributes", "deduplication_id", "produced", "sources"} - names
            if missing:
                raise TypeError(
                    f"template {self.name}: a request_context instance type needs {sorted(missing)}"
                )

    def field(self, name: str) -> FieldSpec | None:
        for spec in self.fields:
            if spec.name == name:
                return spec
        return None

    def output(self, name: str) -> FieldSpec | None:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        return None


def _v(name: str, value_type: ValueType | None = None, *, required: bool = False) -> FieldSpec:
    return FieldSpec(name, FieldKind.VALUE, value_type, required)


def _m(name: str, value_type: ValueType | None = None) -> FieldSpec:
    return FieldSpec(name, FieldKind.MAP, value_type)


_S, _I, _B = ValueType.STRING, ValueType.INT64, ValueType.BOOL
_T, _IP = ValueType.TIMESTAMP, ValueType.IP_ADDRESS

_MONITORED = (_v("monitored_resource_type", _S), _m("monitored_resource_dimensions"))

BUILTIN_TEMPLATES: tuple[TemplateSpec, ...] = (
    TemplateSpec(
        "metric",
        Variety.REPORT,
        (_v("value", required=True), _m("dimensions"), *_MONITORED),
        inst.MetricInstance,
        "A measured value with dimensions (Prometheus, ...).",
    ),
    TemplateSpec(
        "logentry",
        Variety.REPORT,
        (_m("variables"), _v("timestamp", _T), _v("severity", _S), *_MONITORED),
        inst.LogEntryInstance,
        "A structured log entry (access logs).",
    ),
    TemplateSpec(
        "tracespan",
        Variety.REPORT,
        (
            _v("trace_id", _S),
            _v("span_id", _S),
            _v("parent_span_id", _S),
            _v("span_name", _S),
            _v("start_time", _T),
            _v("end_time", _T),
            _m("span_tags"),
            _v("http_status_code", _I),
            _v("client_span", _B),
            _v("rewrite_client_span_id", _B),
            _v("source_name", _S),
            _v("destination_name", _S),
            _v("source_ip", _IP),
            _v("destination_ip", _IP),
            _v("request_size", _I),
            _v("request_total_size", _I),
            _v("response_size", _I),
            _v("response_total_size", _I),
            _v("api_protocol", _S),
        ),
        inst.TraceSpanInstance,
        "One span of a distributed trace.",
    ),
    TemplateSpec("reportnothing", Variety.REPORT, (), inst.ReportNothingInstance, "An empty report."),
    TemplateSpec("quota", Variety.QUOTA, (_m("dimensions"),), inst.QuotaInstance, "A quota to allocate."),
    TemplateSpec(
        "listentry",
        Variety.CHECK,
        (_v("value", required=True),),
        inst.ListEntryInstance,
        "A value to look up in a list.",
    ),
    TemplateSpec(
        "authorization",
        Variety.CHECK,
        (
            FieldSpec(
                "subject",
                FieldKind.STRUCT,
                fields=(_v("user", _S), _v("groups", _S), _m("properties")),
            ),
            FieldSpec(
                "action",
                FieldKind.STRUCT,
                fields=(
                    _v("namespace", _S),
                    _v("service", _S),
                    _v("method", _S),
                    _v("path", _S),
                    _m("properties"),
                ),
            ),
        ),
        inst.AuthorizationInstance,
        "Who wants to do what, for access control.",
    ),
    TemplateSpec(
        "apikey",
        Variety.CHECK,
        (
            _v("api", _S),
            _v("api_version", _S),
            _v("api_operation", _S),
            _v("api_key", _S),
            _v("timestamp", _T),
        ),
        inst.ApiKeyInstance,
        "An API key to validate.",
        request_context=True,
    ),
    TemplateSpec("checknothing", Variety.CHECK, (), inst.CheckNothingInstance, "An empty check."),
)

#: Templates beyond Mixer's own, registered next to them.
PLAN_TEMPLATES: tuple[TemplateSpec, ...] = (
    TemplateSpec(
        "plancheck",
        Variety.CHECK,
        (_v("api_key", _S), _v("principal", _S), _v("plan", _S), _v("api", _S), _v("operation", _S)),
        inst.PlanCheckInstance,
        "A caller to put on its plan tier and the request to count against the plan's limits.",
        request_context=True,
    ),
)
