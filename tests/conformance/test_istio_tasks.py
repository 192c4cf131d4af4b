"""The istio.io Mixer tasks, driven through Istio 1.4's own configs: what each task says one sees.

Tasks: policy-enforcement/rate-limiting, denial-and-list, observability collecting-metrics,
collecting-logs and tcp-metrics. Requests go through the runtime the server runs (Check and
Report as Mixer dispatched them); handlers are not started, so no listener is bound.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration

from adapters.memquota._config import RateLimitAlgorithm
from adapters.memquota._handler import MemquotaHandler
from adapters.prometheus import PrometheusHandler
from adapters.redisquota._handler import RedisquotaHandler
from adapters.stdio._config import StdioConfig
from adapters.stdio._handler import LineEncoder
from mixer.attributes import AttributeBag, AttributeValue, NanoDuration
from mixer.config import ValidatedConfig
from mixer.decision import QuotaRequest
from mixer.runtime import Runtime, build_runtime
from mixer.status import Code
from mixer.templates import LogEntryInstance
from mixer.wire import decode_attributes, encode_attributes
from tests.conformance.support import load_istio, real_registry

QUOTA = "requestcountquota"


def bag(**values: AttributeValue) -> AttributeBag:
    return AttributeBag({name.replace("__", "."): value for name, value in values.items()})


@pytest.fixture
async def runtime_of() -> AsyncIterator[Any]:
    built: list[Runtime] = []

    def build(*relative: str) -> Runtime:
        config = load_istio(*relative)
        rt = build_runtime(config, real_registry())
        built.append(rt)
        return rt

    yield build
    for rt in built:
        await rt.shutdown(5.0)


async def ask_quota(rt: Runtime, attributes: AttributeBag, n: int, quota: str = QUOTA) -> list[int]:
    granted = []
    for _ in range(n):
        # A fresh deduplication id per request, as a proxy sends them.
        outcome = await rt.check(attributes, {quota: QuotaRequest(1)}, deduplication_id=uuid.uuid4().hex)
        granted.append(outcome.quotas[quota].granted_amount)
    return granted


# -- rate limiting (memquota) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "quota"),
    [
        ("policy/mixer-rule-productpage-ratelimit.yaml", QUOTA),
        ("policy/mixer-rule-productpage-ratelimit-crd.yaml", "requestcount"),
    ],
)
async def test_productpage_rate_limit_of_the_task(runtime_of: Any, relative: str, quota: str) -> None:
    """ "limits productpage to 2 requests every 5 seconds" (the memquota override for productpage)."""
    rt = runtime_of(relative)
    productpage = bag(destination__labels={"app": "productpage", "version": "v1"})
    assert await ask_quota(rt, productpage, 4, quota) == [1, 1, 0, 0]
    refused = await rt.check(productpage, {quota: QuotaRequest(1)}, deduplication_id=uuid.uuid4().hex)
    grant = refused.quotas[quota]
    # As Mixer's memquota: OK with nothing granted (the proxy refuses the request: 429).
    assert (grant.status.ok, grant.granted_amount) == (True, 0)
    # Mixer's memquota answers a refusal valid for no time, so the proxy asks again next request.
    assert grant.valid_duration == timedelta(0)
    # The override for one source address allows 500 per second.
    trusted = bag(
        destination__labels={"app": "productpage"}, request__headers={"x-forwarded-for": "10.28.11.20"}
    )
    assert await ask_quota(rt, trusted, 5, quota) == [1] * 5


async def test_ratings_rate_limit_of_the_task(runtime_of: Any) -> None:
    """ratings: 1 request per second from reviews, 100 per second from anything else."""
    rt = runtime_of("policy/mixer-rule-ratings-ratelimit.yaml")
    from_reviews = bag(
        destination__labels={"app": "ratings"}, source__labels={"app": "reviews", "version": "v2"}
    )
    assert await ask_quota(rt, from_reviews, 2) == [1, 0]
    from_elsewhere = bag(destination__labels={"app": "ratings"}, source__labels={"app": "productpage"})
    assert await ask_quota(rt, from_elsewhere, 10) == [1] * 10


# -- denials and lists ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "handler"),
    [
        ("policy/mixer-rule-deny-label.yaml", "denyreviewsv3handler.istio-system"),
        ("policy/mixer-rule-deny-label-crd.yaml", "denyreviewsv3handler.denier.istio-system"),
    ],
)
async def test_denial_by_label_of_the_task(runtime_of: Any, relative: str, handler: str) -> None:
    rt = runtime_of(relative)
    v3 = bag(destination__labels={"app": "ratings"}, source__labels={"app": "reviews", "version": "v3"})
    denied = await rt.check(v3)
    assert denied.status.code is Code.PERMISSION_DENIED
    # Mixer's dispatcher writes handler:message with no space (Envoy shows PERMISSION_DENIED:<that>).
    assert denied.status.message == f"{handler}:Not allowed"
    v2 = bag(destination__labels={"app": "ratings"}, source__labels={"app": "reviews", "version": "v2"})
    assert (await rt.check(v2)).status.ok


@pytest.mark.parametrize(
    ("relative", "handler"),
    [
        ("policy/mixer-rule-deny-whitelist.yaml", "whitelist.istio-system"),
        ("policy/mixer-rule-deny-whitelist-crd.yaml", "whitelist.listchecker.istio-system"),
    ],
)
async def test_whitelist_of_the_task(runtime_of: Any, relative: str, handler: str) -> None:
    rt = runtime_of(relative)
    v3 = bag(destination__labels={"app": "ratings"}, source__labels={"app": "reviews", "version": "v3"})
    denied = await rt.check(v3)
    # PERMISSION_DENIED (403) as Mixer since 1.1, not NOT_FOUND (which Envoy sends as 404).
    assert denied.status.code is Code.PERMISSION_DENIED
    assert denied.status.message == f"{handler}:v3 is not whitelisted"
    assert denied.valid_duration == timedelta(seconds=300)
    assert denied.valid_use_count == 10000
    for version in ("v1", "v2"):
        allowed = bag(destination__labels={"app": "ratings"}, source__labels={"version": version})
        assert (await rt.check(allowed)).status.ok


@pytest.mark.parametrize(
    ("relative", "handler"),
    [
        ("policy/mixer-rule-deny-ip.yaml", "whitelistip.istio-system"),
        ("policy/mixer-rule-deny-ip-crd.yaml", "whitelistip.listchecker.istio-system"),
    ],
)
async def test_ip_whitelist_of_the_task(runtime_of: Any, relative: str, handler: str) -> None:
    rt = runtime_of(relative)
    gateway = {"istio": "ingressgateway"}
    outside = bag(source__ip=ipaddress.ip_address("192.0.2.7"), source__labels=gateway)
    denied = await rt.check(outside)
    assert denied.status.code is Code.PERMISSION_DENIED
    assert denied.status.message == f"{handler}:192.0.2.7 is not whitelisted"
    inside = bag(source__ip=ipaddress.ip_address("10.57.0.3"), source__labels=gateway)
    assert (await rt.check(inside)).status.ok


# -- metrics --------------------------------------------------------------------------------------


def prometheus(rt: Runtime, name: str) -> PrometheusHandler:
    handler = rt.handlers[name]
    assert isinstance(handler, PrometheusHandler)
    return handler


def exposition_lines(handler: PrometheusHandler) -> list[str]:
    return handler.exposition().decode().splitlines()


@pytest.mark.parametrize(
    ("relative", "handler"),
    [
        ("telemetry/metrics.yaml", "doublehandler.istio-system"),
        ("telemetry/metrics-crd.yaml", "doublehandler.prometheus.istio-system"),
    ],
)
async def test_collecting_metrics_of_the_task(runtime_of: Any, relative: str, handler: str) -> None:
    rt = runtime_of(relative)
    request = bag(
        context__reporter__kind="inbound",
        source__workload__name="productpage-v1",
        destination__workload__name="details-v1",
        destination__namespace="default",
    )
    outcome = rt.report([request])
    assert not outcome.errors
    lines = exposition_lines(prometheus(rt, handler))
    # The task queries istio_double_request_count: exactly that name, 2 per request.
    assert "# TYPE istio_double_request_count counter" in lines
    series = (
        'istio_double_request_count{destination="details-v1",message="twice the fun!",'
        'reporter="server",source="productpage-v1"}'
    )
    assert f"{series} 2" in lines
    rt.report([request, request])
    assert f"{series} 6" in exposition_lines(prometheus(rt, handler))
    assert not [line for line in lines if "double_request_count_total" in line]


def test_the_exposition_is_valid_for_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, (
        "promtool is not installed: run `make system-deps` (Debian package prometheus)"
    )
    config = load_istio("telemetry/metrics.yaml")
    rt = build_runtime(config, real_registry())
    rt.report([bag(source__workload__name='a\\b"c')])
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=prometheus(rt, "doublehandler.istio-system").exposition(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    problems = (result.stdout + result.stderr).decode().splitlines()
    # Valid text format; the only remarks are promtool's naming lints on the name the task's
    # config chose (Mixer's exposition drew the same).
    assert problems, "promtool should remark on a counter without _total"
    assert all(p.startswith("istio_double_request_count ") and "suffix" in p for p in problems), problems


@pytest.mark.parametrize(
    ("relative", "handler_name"),
    [
        ("telemetry/tcp-metrics.yaml", "mongohandler.default"),
        ("telemetry/tcp-metrics-crd.yaml", "mongohandler.prometheus.default"),
    ],
)
async def test_tcp_metrics_of_the_task(runtime_of: Any, relative: str, handler_name: str) -> None:
    rt = runtime_of(relative)
    connection: dict[str, AttributeValue] = {
        "context__protocol": "tcp",
        "destination__service__host": "mongodb.default.svc.cluster.local",
        "source__workload__name": "ratings-v2",
        "source__labels": {"version": "v2"},
        "destination__labels": {"version": "v1"},
        "connection__sent__bytes": 260,
        "connection__received__bytes": 94,
    }
    # The rules live in namespace default: an inbound report is in the server's namespace.
    rt.report([bag(context__reporter__kind="inbound", destination__namespace="default", **connection)])
    handler = prometheus(rt, handler_name)
    labels = '{destination_version="v1",source_service="ratings-v2",source_version="v2"}'
    assert f"istio_mongo_sent_bytes{labels} 260" in exposition_lines(handler)
    assert f"istio_mongo_received_bytes{labels} 94" in exposition_lines(handler)
    # A client-side (outbound) report belongs to the client's namespace (source.namespace), as in
    # Mixer's dispatcher; the server's namespace does not select the rules then.
    outbound = bag(context__reporter__kind="outbound", source__namespace="default", **connection)
    rt.report([outbound])
    assert f"istio_mongo_sent_bytes{labels} 520" in exposition_lines(handler)
    elsewhere = bag(
        context__reporter__kind="outbound",
        source__namespace="other",
        destination__namespace="default",
        **connection,
    )
    rt.report([elsewhere])
    assert f"istio_mongo_sent_bytes{labels} 520" in exposition_lines(handler)


# -- logs -----------------------------------------------------------------------------------------


def newlog_line(
    config: ValidatedConfig, attributes: Mapping[str, AttributeValue], instance: str
) -> dict[str, Any]:
    built = config.instances[instance].builder.build(AttributeBag(attributes))
    assert isinstance(built, LogEntryInstance)
    (handler_config,) = config.handlers.values()
    assert isinstance(handler_config.params, StdioConfig)
    line = LineEncoder(handler_config.params, lambda: datetime.now(UTC)).encode(built)
    assert line is not None
    record = json.loads(line)
    assert isinstance(record, dict)
    return record


def test_collecting_logs_of_the_task() -> None:
    # The proxy's response.duration, as sent on the wire: nanoseconds survive to the log line.
    wire = encode_attributes({"response.duration": NanoDuration(13_601_485)})
    assert wire.durations[next(iter(wire.durations))] == Duration(seconds=0, nanos=13_601_485)
    attributes: dict[str, AttributeValue] = {
        **decode_attributes(wire),
        "source.labels": {"app": "productpage"},
        "destination.labels": {"app": "details"},
        "response.code": 200,
        "response.size": 178,
        "request.time": datetime(2018, 9, 15, 20, 46, 36, 9801, tzinfo=UTC),
    }
    record = newlog_line(load_istio("telemetry/log-entry.yaml"), attributes, "newlog.istio-system")
    assert record == {
        "level": "warn",
        "time": "2018-09-15T20:46:36.009801Z",
        "instance": "newlog.instance.istio-system",
        "destination": "details",
        "latency": "13.601485ms",
        "responseCode": 200,
        "responseSize": 178,
        "source": "productpage",
        "user": "unknown",
    }


def test_collecting_logs_in_the_legacy_form() -> None:
    config = load_istio("telemetry/log-entry-crd.yaml")
    (name,) = config.instances
    attributes: dict[str, AttributeValue] = {
        "response.duration": NanoDuration(250),
        "request.time": datetime(2019, 1, 2, tzinfo=UTC),
    }
    record = newlog_line(config, attributes, name)
    assert record["instance"] == "newlog.logentry.istio-system"
    assert record["latency"] == "250ns"


# -- quota adapter defaults -----------------------------------------------------------------------


def test_quota_algorithms_default_as_in_mixer() -> None:
    # Mixer's memquota always slid its windows; its redisquota's rate_limit_algorithm defaults to
    # FIXED_WINDOW. A quota that names no algorithm gets the adapter's.
    assert MemquotaHandler.default_algorithm is RateLimitAlgorithm.ROLLING_WINDOW
    assert RedisquotaHandler.default_algorithm is RateLimitAlgorithm.FIXED_WINDOW
    (handler,) = load_istio("policy/mixer-rule-productpage-ratelimit.yaml").handlers.values()
    (quota,) = handler.params.model_dump()["quotas"]
    assert quota["rate_limit_algorithm"] is None
