"""Instance types, one per template. Handlers receive these; fields mirror Mixer's templates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from mixer.values import AttributeBag, IPAddress


@dataclass(slots=True)
class Instance:
    """Base of every instance: ``name`` is the fully qualified instance name (``name.namespace``)."""

    template: ClassVar[str] = ""
    name: str


def mixer_instance_name(name: str, template: str) -> str:
    """The name Mixer gave an instance in what adapters see and write.

    Mixer named a 1.1+ ``kind: instance`` ``newlog.instance.istio-system`` and a legacy
    ``kind: logentry`` ``newlog.logentry.istio-system``; ours are ``newlog.istio-system`` and
    (already Mixer's) ``newlog.logentry.istio-system``. A name without a namespace stays as is.
    """
    base, dot, namespace = name.rpartition(".")
    if not dot or not base:
        return name
    if base.rpartition(".")[2] in (template, "instance") and "." in base:
        return name
    return f"{base}.instance.{namespace}"


class RequestContext(Protocol):
    """The fields the runtime sets on instances of ``request_context`` templates.

    ``produced``: the attributes that check handlers (a verified token's claims) produced in this
    Check; everything else in ``attributes`` is what the caller sent. ``sources``: for each
    configured value field, every attribute its expression read for this Check, present or
    absent. Together they tell whether a field's value can only have come from a verifying
    handler (see :func:`field_is_verified`).
    """

    attributes: AttributeBag | None
    deduplication_id: str
    produced: frozenset[str]
    sources: Mapping[str, frozenset[str]]


def field_is_verified(instance: RequestContext, name: str, trusted: frozenset[str] = frozenset()) -> bool:
    """Whether field ``name`` of ``instance`` was computed only from attributes a check handler
    produced in this Check or that the operator declares ``trusted`` (set by a proxy that verified
    them). A field whose sources are unknown (not built by the runtime) is not verified; a field
    made of literals alone is (the operator wrote it)."""
    sources = instance.sources.get(name)
    if sources is None:
        return False
    return all(source in instance.produced or source in trusted for source in sources)


@dataclass(slots=True)
class MetricInstance(Instance):
    template: ClassVar[str] = "metric"
    value: Any = None
    dimensions: dict[str, Any] = field(default_factory=dict)
    monitored_resource_type: str | None = None
    monitored_resource_dimensions: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class LogEntryInstance(Instance):
    template: ClassVar[str] = "logentry"
    variables: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None
    severity: str | None = None
    monitored_resource_type: str | None = None
    monitored_resource_dimensions: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TraceSpanInstance(Instance):
    template: ClassVar[str] = "tracespan"
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    span_name: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    span_tags: dict[str, Any] = field(default_factory=dict)
    http_status_code: int | None = None
    client_span: bool | None = None
    rewrite_client_span_id: bool | None = None
    source_name: str | None = None
    destination_name: str | None = None
    source_ip: IPAddress | None = None
    destination_ip: IPAddress | None = None
    request_size: int | None = None
    request_total_size: int | None = None
    response_size: int | None = None
    response_total_size: int | None = None
    api_protocol: str | None = None


@dataclass(slots=True)
class ReportNothingInstance(Instance):
    template: ClassVar[str] = "reportnothing"


@dataclass(slots=True)
class QuotaInstance(Instance):
    template: ClassVar[str] = "quota"
    dimensions: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ListEntryInstance(Instance):
    template: ClassVar[str] = "listentry"
    value: Any = None


@dataclass(slots=True)
class Subject:
    user: str | None = None
    groups: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Action:
    namespace: str | None = None
    service: str | None = None
    method: str | None = None
    path: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class AuthorizationInstance(Instance):
    template: ClassVar[str] = "authorization"
    subject: Subject = field(default_factory=Subject)
    action: Action = field(default_factory=Action)


@dataclass(slots=True)
class ApiKeyInstance(Instance):
    """Istio's apikey template; like :class:`PlanCheckInstance`, a request-context template, so a
    plan handler can enforce the key's plan with cost expressions and deduplication."""

    template: ClassVar[str] = "apikey"
    api: str | None = None
    api_version: str | None = None
    api_operation: str | None = None
    api_key: str | None = None
    timestamp: datetime | None = None
    attributes: AttributeBag | None = None
    deduplication_id: str = ""
    produced: frozenset[str] = frozenset()
    sources: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(slots=True)
class CheckNothingInstance(Instance):
    template: ClassVar[str] = "checknothing"


@dataclass(slots=True)
class PlanCheckInstance(Instance):
    """Who calls (an API key, a principal, a plan claim) and what for (api, operation).

    ``attributes``, ``deduplication_id``, ``produced`` and ``sources`` are not template fields:
    the runtime sets them on every instance of a ``request_context`` template before the handler
    sees it, so that cost and dimension expressions can read the request (its reads are recorded
    as referenced attributes), a retried Check is recognised, and a plan handler can tell a
    verified ``plan`` or ``principal`` from a self-asserted one (:class:`RequestContext`).
    """

    template: ClassVar[str] = "plancheck"
    api_key: str | None = None
    principal: str | None = None
    plan: str | None = None
    api: str | None = None
    operation: str | None = None
    attributes: AttributeBag | None = None
    deduplication_id: str = ""
    produced: frozenset[str] = frozenset()
    sources: Mapping[str, frozenset[str]] = field(default_factory=dict)
