"""Instance params: expression types per template field, and building instances from bags."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from mixer.attributes import AttributeBag, ValueType
from mixer.config import CompiledInstanceBuilder, ValidatedConfig
from mixer.expr import EvaluationError
from mixer.templates import (
    Action,
    AuthorizationInstance,
    CheckNothingInstance,
    LogEntryInstance,
    MetricInstance,
    Subject,
    TraceSpanInstance,
)
from tests.config.conftest import ErrorsOf, Loader, doc, docs


def instance(load: Loader, template: str, params: str) -> CompiledInstanceBuilder:
    config: ValidatedConfig = load(doc("instance", "i", f"compiledTemplate: {template}\nparams:\n{params}"))
    builder = config.instances["i.istio-system"].builder
    assert isinstance(builder, CompiledInstanceBuilder)
    return builder


def test_metric_instance(load: Loader) -> None:
    builder = instance(
        load,
        "metric",
        """
          value: response.duration | "0ms"
          dimensions:
            source_app: source.labels["app"] | "unknown"
            response_code: response.code | 200
            mtls: connection.mtls | false
            reporter: conditional((context.reporter.kind | "inbound") == "outbound", "source", "destination")
        """,
    )
    bag = AttributeBag(
        {
            "source.labels": {"app": "web"},
            "response.duration": timedelta(milliseconds=5),
            "connection.mtls": True,
        }
    )
    assert builder.build(bag) == MetricInstance(
        "i.istio-system",
        timedelta(milliseconds=5),
        {"source_app": "web", "response_code": 200, "mtls": True, "reporter": "destination"},
    )
    empty = builder.build(AttributeBag({"context.reporter.kind": "outbound"}))
    assert isinstance(empty, MetricInstance)
    assert empty.value == timedelta(0)
    assert empty.dimensions == {
        "source_app": "unknown",
        "response_code": 200,
        "mtls": False,
        "reporter": "source",
    }
    # Each build makes fresh containers.
    assert empty.dimensions is not builder.build(AttributeBag({})).dimensions  # type: ignore[attr-defined]
    assert builder.expression_texts()["value"] == 'response.duration | "0ms"'


def test_yaml_scalars_become_expression_text(load: Loader) -> None:
    builder = instance(
        load, "metric", "  value: 1\n  dimensions:\n    flag: true\n    disabled: false\n    ratio: 0.5"
    )
    assert builder.expression_texts() == {
        "value": "1",
        "dimensions": {"flag": "true", "disabled": "false", "ratio": "0.5"},
    }
    assert builder.build(AttributeBag({})) == MetricInstance(
        "i.istio-system", 1, {"flag": True, "disabled": False, "ratio": 0.5}
    )


def test_typed_fields_and_defaults(load: Loader) -> None:
    builder = instance(
        load,
        "tracespan",
        """
          trace_id: request.headers["x-b3-traceid"] | ""
          spanName: request.path | "/"
          http_status_code: response.code | 0
          source_ip: source.ip | ip("0.0.0.0")
          request_size: request.size | 0
          start_time: request.time
          clientSpan: (context.reporter.kind | "inbound") == "outbound"
          spanTags:
            method: request.method | "GET"
        """,
    )
    start = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    built = builder.build(AttributeBag({"request.time": start, "response.code": 404}))
    assert built == TraceSpanInstance(
        "i.istio-system",
        trace_id="",
        span_name="/",
        start_time=start,
        span_tags={"method": "GET"},
        http_status_code=404,
        client_span=False,
        source_ip=ipaddress.ip_address("0.0.0.0"),
        request_size=0,
    )
    assert builder.expressions["http_status_code"].type is ValueType.INT64  # type: ignore[union-attr]


def test_struct_template(load: Loader) -> None:
    builder = instance(
        load,
        "authorization",
        """
          subject:
            user: source.principal | ""
            properties:
              app: source.labels["app"] | ""
          action:
            method: request.method | ""
            path: request.path
        """,
    )
    built = builder.build(AttributeBag({"request.path": "/a", "source.principal": "p"}))
    assert built == AuthorizationInstance(
        "i.istio-system", Subject(user="p", properties={"app": ""}), Action(method="", path="/a")
    )


def test_templates_without_fields(load: Loader) -> None:
    builder = instance(load, "checknothing", "  {}")
    assert builder.build(AttributeBag({})) == CheckNothingInstance("i.istio-system")
    builder = instance(load, "logentry", "  severity: '\"warning\"'")
    assert builder.build(AttributeBag({})) == LogEntryInstance("i.istio-system", severity="warning")


def test_evaluation_errors_propagate(load: Loader) -> None:
    builder = instance(load, "logentry", "  variables:\n    path: request.path")
    with pytest.raises(EvaluationError):
        builder.build(AttributeBag({}))


@pytest.mark.parametrize(
    ("template", "field", "expression", "fragment"),
    [
        ("tracespan", "http_status_code", "request.path", "expression has type STRING, expected INT64"),
        ("tracespan", "start_time", "response.duration", "expected TIMESTAMP"),
        ("tracespan", "client_span", '"yes"', "expected BOOL"),
        ("tracespan", "source_ip", "response.code", "expected IP_ADDRESS"),
        ("logentry", "severity", "response.code", "expected STRING"),
        ("metric", "value", "nosuch.attribute", 'unknown attribute "nosuch.attribute"'),
        ("metric", "value", "response.code ==", ""),
    ],
)
def test_type_errors(errors_of: ErrorsOf, template: str, field: str, expression: str, fragment: str) -> None:
    text = doc("instance", "i", f"compiledTemplate: {template}\nparams:\n  {field}: '{expression}'")
    (message,) = errors_of(text)
    assert message.startswith(f"test.yaml: document 1 (instance i.istio-system): spec.params.{field}: ")
    assert fragment in message


def test_all_field_errors_of_an_instance_are_reported(errors_of: ErrorsOf) -> None:
    errors = errors_of(
        doc(
            "instance",
            "i",
            "compiledTemplate: tracespan\nparams:\n  http_status_code: request.path\n  spanTags:\n"
            "    a: nosuch\n    b: request.path\n    c: also.nosuch",
        )
    )
    assert [e.split(": ")[2] for e in errors] == [
        "spec.params.spanTags.a",
        "spec.params.spanTags.c",
        "spec.params.http_status_code",
    ] or [e.split(": ")[2] for e in errors] == [
        "spec.params.http_status_code",
        "spec.params.spanTags.a",
        "spec.params.spanTags.c",
    ]


class _CountingBag(AttributeBag):
    __slots__ = ("reads",)

    def __init__(self, values: dict[str, object]) -> None:
        super().__init__(values)  # type: ignore[arg-type]
        self.reads = 0

    def get(self, name: str) -> object:  # type: ignore[override]
        self.reads += 1
        return super().get(name)


def test_identical_dimension_maps_are_evaluated_once_per_bag(load: Loader) -> None:
    params = """
      value: "1"
      dimensions:
        code: response.code | 200
        app: source.workload.name | "unknown"
    """
    config: ValidatedConfig = load(
        docs(
            doc("instance", "a", f"compiledTemplate: metric\nparams:\n{params}"),
            doc("instance", "b", f"compiledTemplate: metric\nparams:\n{params}"),
            doc("instance", "c", f"compiledTemplate: metric\nparams:\n{params.replace('200', '201')}"),
        )
    )
    a, b, c = (config.instances[f"{n}.istio-system"].builder for n in "abc")
    bag = _CountingBag({"response.code": 404})
    first, second = a.build(bag), b.build(bag)
    assert isinstance(first, MetricInstance)
    assert isinstance(second, MetricInstance)
    assert first.dimensions == {"code": 404, "app": "unknown"}
    assert second.dimensions is first.dimensions
    assert bag.reads == 2
    third = c.build(bag)
    assert isinstance(third, MetricInstance)
    assert third.dimensions == first.dimensions
    assert third.dimensions is not first.dimensions
    assert bag.reads == 4
    # A new bag is evaluated afresh.
    other = _CountingBag({"response.code": 500, "source.workload.name": "web"})
    assert b.build(other).dimensions == {"code": 500, "app": "web"}  # type: ignore[attr-defined]
    assert other.reads == 2


def test_a_failed_shared_map_is_not_cached(load: Loader) -> None:
    params = """
      value: "1"
      dimensions:
        code: response.code
    """
    config: ValidatedConfig = load(
        docs(
            doc("instance", "a", f"compiledTemplate: metric\nparams:\n{params}"),
            doc("instance", "b", f"compiledTemplate: metric\nparams:\n{params}"),
        )
    )
    a, b = (config.instances[f"{n}.istio-system"].builder for n in "ab")
    bag = AttributeBag({})
    with pytest.raises(EvaluationError, match=r"response\.code"):
        a.build(bag)
    with pytest.raises(EvaluationError, match=r"response\.code"):
        b.build(bag)
