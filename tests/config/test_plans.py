"""Plan documents: what loads, what each plan compiles to, and every error with file and path."""

from __future__ import annotations

import pytest

from mixer.plans import Dimension, Overage
from mixer.quota import Algorithm, CalendarUnit, CalendarWindow, EpochWindow
from tests.config.conftest import ErrorsOf, Loader, doc, docs


def plan_doc(name: str, spec: str, namespace: str | None = None) -> str:
    return doc("plan", name, spec, namespace)


def test_a_plan_loads_with_its_defaults(load: Loader) -> None:
    config = load(
        plan_doc(
            "free",
            """
            description: Evaluation tier
            limits:
            - {name: per_minute, max: 10, per: minute}
            - {name: per_day, max: 1000, per: 24h}
            """,
        )
    )
    free = config.plans["free"]
    assert free.description == "Evaluation tier"
    minute, day = free.limits
    assert minute.algorithm is Algorithm.FIXED_WINDOW
    assert isinstance(minute.window, CalendarWindow)
    assert minute.window.unit is CalendarUnit.MINUTE
    assert day.window == EpochWindow(86400)
    assert minute.dimensions == (Dimension("subject"),)
    assert minute.cost is None
    assert minute.overage is Overage.REJECT
    assert free.fingerprint
    assert "test.yaml: document 1" in free.source


def test_every_field(load: Loader) -> None:
    config = load(
        plan_doc(
            "pro",
            """
            limits:
            - name: kib
              max: 5000
              per: day
              time_zone: Europe/Berlin
              cost: request.size / 1024 | 1
              dimensions: [subject, api, operation, {region: 'request.headers["x-region"] | "none"'}]
              overage: shadow
            - {name: rate, max: 100, per: 1m, algorithm: gcra, burst: 20}
            - {name: smooth, max: 100, per: hour, algorithm: rolling_window, buckets: 12}
            - {name: gcra_default_burst, max: 7, per: minute, algorithm: gcra}
            """,
        ).replace("config.istio.io/v1alpha2", "mixer.mesh/v1alpha1")
    )
    kib, rate, smooth, default_burst = config.plans["pro"].limits
    assert isinstance(kib.window, CalendarWindow)
    assert str(kib.window.zone) == "Europe/Berlin"
    assert kib.cost is not None
    assert kib.cost.text == "request.size / 1024 | 1"
    assert [d.name for d in kib.dimensions] == ["subject", "api", "operation", "region"]
    assert kib.overage is Overage.SHADOW
    assert (rate.algorithm, rate.period, rate.burst, rate.window) == (Algorithm.GCRA, 60.0, 20, None)
    assert (smooth.period, smooth.buckets, smooth.bucket_seconds) == (3600.0, 12, 300.0)
    assert default_burst.burst == 7
    assert default_burst.period == 60.0


def test_a_plan_may_have_no_limits_and_dimensions_may_be_empty(load: Loader) -> None:
    config = load(
        docs(
            plan_doc("unlimited", "description: no limits"),
            plan_doc("shared", "limits: [{name: all, max: 5, per: 1s, dimensions: []}]"),
        )
    )
    assert config.plans["unlimited"].limits == ()
    assert config.plans["shared"].limits[0].dimensions == ()


def test_the_fingerprint_follows_the_content(load: Loader) -> None:
    one = load(plan_doc("free", "limits: [{name: m, max: 10, per: minute}]")).plans["free"]
    same = load(plan_doc("free", "limits: [{name: m, max: 10, per: minute}]")).plans["free"]
    other = load(plan_doc("free", "limits: [{name: m, max: 11, per: minute}]")).plans["free"]
    assert one.fingerprint == same.fingerprint != other.fingerprint


@pytest.mark.parametrize(
    ("limit", "path", "message"),
    [
        ("{name: m, max: 1}", "spec.limits[0].per", "required field is missing"),
        ("{name: m, max: 1, per: 0s}", "spec.limits[0].per", "out of range"),
        ("{name: m, max: 1, per: 32d}", "spec.limits[0].per", "out of range"),
        ("{name: m, max: 1, per: 745h}", "spec.limits[0].per", "out of range"),
        ("{name: m, max: 1, per: week}", "spec.limits[0].per", "invalid duration"),
        ("{name: m, max: 1, per: 60}", "spec.limits[0].per", "expected a duration"),
        ("{name: m, max: 0, per: 1s}", "spec.limits[0].max", "greater than or equal to 1"),
        ("{name: m, max: 1, per: month, algorithm: gcra}", "spec.limits[0].per", "only for fixed_window"),
        ("{name: m, max: 1, per: 1h, time_zone: UTC}", "spec.limits[0].time_zone", "calendar unit"),
        (
            "{name: m, max: 1, per: day, time_zone: Mars/Base}",
            "spec.limits[0].time_zone",
            "unknown time zone",
        ),
        ("{name: m, max: 1, per: 1s, burst: 3}", "spec.limits[0].burst", "only to algorithm gcra"),
        ("{name: m, max: 1, per: 1s, buckets: 3}", "spec.limits[0].buckets", "only to algorithm rolling"),
        ("{name: m, max: 1, per: 1s, algorithm: leaky}", "spec.limits[0].algorithm", "fixed_window"),
        ("{name: m, max: 1, per: 1s, overage: warn}", "spec.limits[0].overage", "reject"),
        ("{name: m, max: 1, per: 1s, costs: 2}", "spec.limits[0].costs", "unknown field"),
        ("{name: m, max: 1, per: 1s, cost: request.path}", "spec.limits[0].cost", "INT64"),
        ("{name: m, max: 1, per: 1s, cost: request.nope}", "spec.limits[0].cost", "request.nope"),
        (
            "{name: m, max: 1, per: 1s, dimensions: [user]}",
            "spec.limits[0].dimensions[0]",
            "unknown dimension",
        ),
        (
            "{name: m, max: 1, per: 1s, dimensions: [{api: request.path}]}",
            "spec.limits[0].dimensions[0].api",
            "built-in dimension",
        ),
        (
            "{name: m, max: 1, per: 1s, dimensions: [{a: request.path, b: request.host}]}",
            "spec.limits[0].dimensions[0]",
            "one {name: expression}",
        ),
        ("{name: m, max: 1, per: 1s, dimensions: [api, api]}", "spec.limits[0].dimensions[1]", "twice"),
        ("{name: 'a b', max: 1, per: 1s}", "spec.limits[0].name", "not a valid limit name"),
    ],
)
def test_limit_errors_name_the_file_document_and_field(
    errors_of: ErrorsOf, limit: str, path: str, message: str
) -> None:
    errors = errors_of(plan_doc("free", f"limits:\n- {limit}\n"))
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"test.yaml: document 1 (plan free.istio-system): {path}: "), errors
    assert message in errors[0]


def test_duplicate_limits_and_several_errors_at_once(errors_of: ErrorsOf) -> None:
    errors = errors_of(
        docs(
            plan_doc("free", "limits: [{name: m, max: 1, per: 1s}, {name: m, max: 2, per: 1m}]"),
            plan_doc("pro", "limits: [{name: m, max: 1, per: 1s, burst: 2}]"),
        )
    )
    assert errors == [
        'test.yaml: document 1 (plan free.istio-system): spec.limits[1].name: limit "m" is defined twice '
        "in this plan",
        "test.yaml: document 2 (plan pro.istio-system): spec.limits[0].burst: burst applies only to "
        "algorithm gcra",
    ]


def test_plans_are_global(errors_of: ErrorsOf) -> None:
    errors = errors_of(plan_doc("free", "limits: []", namespace="team-a"))
    assert errors == [
        "test.yaml: document 1 (plan free.team-a): metadata.namespace: plans are global: leave the "
        "namespace out or use istio-system"
    ]


def test_duplicate_plan_and_bad_plan_name(errors_of: ErrorsOf) -> None:
    errors = errors_of(docs(plan_doc("free", "limits: []"), plan_doc("free", "limits: []")))
    assert "duplicate plan" in errors[0]
    errors = errors_of(plan_doc("fr/ee", "limits: []"))
    assert "metadata.name" in errors[0]
    assert "not a valid plan name" in errors[0]


def test_unknown_spec_keys_are_rejected(errors_of: ErrorsOf) -> None:
    errors = errors_of(plan_doc("free", "limit: []"))
    assert errors == ["test.yaml: document 1 (plan free.istio-system): spec.limit: unknown field"]


def test_configs_without_plans_have_none(load: Loader) -> None:
    assert load(doc("handler", "h", "compiledAdapter: gate")).plans == {}
