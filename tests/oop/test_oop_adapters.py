"""Out-of-process adapters against a fake adapter speaking Mixer's adapter model over gRPC."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
import yaml

from mixer.attributes import AttributeBag
from mixer.config import ConfigError, ValidatedConfig, load_config
from mixer.decision import QuotaRequest
from mixer.registry import Registry
from mixer.runtime import Runtime, build_runtime
from mixer.status import Code
from plugins.manager import create_plugin_manager
from tests.oop.fake_adapter import (
    NOT_FOUND,
    FakeAdapter,
    keyval_params_descriptor,
    prometheus_params_descriptor,
    start_fake,
)

ISTIO = Path(__file__).resolve().parents[2].parent / "shared" / "istio-1.4"


@pytest.fixture(scope="module")
def istio() -> Path:
    if not ISTIO.is_dir():
        pytest.fail(f"Istio 1.4 configs not found at {ISTIO} (the shared data folder beside the repository)")
    return ISTIO


@pytest.fixture(scope="module")
def registry() -> Registry:
    return create_plugin_manager(load_entry_points=False, blocked=()).registry()


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeAdapter, int]]:
    adapter = FakeAdapter()
    server, port = await start_fake(adapter)
    yield adapter, port
    await server.stop(None)


def b64(descriptor_set: Any) -> str:
    return base64.b64encode(descriptor_set.SerializeToString()).decode()


def retarget(config: ValidatedConfig, address: str, **auth: Any) -> ValidatedConfig:
    """Point every out-of-process handler at ``address`` (Istio's are Kubernetes service names)."""
    handlers = {}
    for name, handler in config.handlers.items():
        params: Any = handler.params
        connection = params.connection.model_copy(update={"address": address, **auth})
        handlers[name] = dataclasses.replace(
            handler, params=params.model_copy(update={"connection": connection})
        )
    return dataclasses.replace(config, handlers=handlers)


async def started(config: ValidatedConfig, registry: Registry, tmp_path: Path) -> Runtime:
    runtime = build_runtime(config, registry, data_dir=tmp_path / "data")
    await runtime.start()
    return runtime


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


# -- the control-headers task ----------------------------------------------------------------------


def control_headers(istio: Path, registry: Registry) -> ValidatedConfig:
    files = [istio / "httpbin" / "keyval-template.yaml", istio / "httpbin" / "keyval.yaml"]
    files.append(istio / "docs-tasks" / "control-headers-keyval.yaml")
    return load_config(files, registry, environ={})


def test_control_headers_task_loads_unchanged(istio: Path, registry: Registry) -> None:
    config = control_headers(istio, registry)
    handler = config.handlers["keyval.istio-system"]
    assert handler.adapter == "oop:keyval"
    params: Any = handler.params
    assert params.connection.address == "keyval:9070"
    assert config.instances["keyval.istio-system"].template == "keyval"


async def test_keyval_output_becomes_a_request_header(
    istio: Path, registry: Registry, fake: tuple[FakeAdapter, int], tmp_path: Path
) -> None:
    adapter, port = fake
    config = retarget(control_headers(istio, registry), f"127.0.0.1:{port}")
    runtime = await started(config, registry, tmp_path)
    try:
        outcome = await runtime.check(AttributeBag({"request.headers": {"user": "jason"}}))
        assert outcome.status.code is Code.OK
        headers = [(op.name, op.value) for op in outcome.request_header_operations]
        assert ("user-group", "admin") in headers
        request: Any = adapter.received["HandleKeyval"][0]
        assert request.instance.key == "jason"
        assert request.instance.name == "keyval.instance.istio-system"
        assert request.adapter_config.type_url == "type.googleapis.com/keyval.Params"

        denied = await runtime.check(AttributeBag({"request.headers": {"user": "bob"}}))
        assert int(denied.status.code) == NOT_FOUND
        assert "user-group" not in [op.name for op in denied.request_header_operations]
    finally:
        await runtime.shutdown(5)


# -- report: metric and logentry -----------------------------------------------------------------------


def prometheus_oop(istio: Path, registry: Registry, tmp_path: Path) -> ValidatedConfig:
    adapter_doc = tmp_path / "prometheus-nosession.yaml"
    adapter_doc.write_text(
        "apiVersion: config.istio.io/v1alpha2\nkind: adapter\nmetadata:\n  name: prometheus-nosession\n"
        "  namespace: istio-system\nspec:\n  session_based: false\n  templates: [metric]\n"
        f"  config: {b64(prometheus_params_descriptor())}\n"
    )
    # The rule went on top of an installed Istio, whose attribute manifests declare rbac.permissive.*.
    manifests = tmp_path / "manifests.yaml"
    documents = yaml.safe_load_all((istio / "install" / "istio-1.4.10-default.yaml").read_text())
    kept = [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == "attributemanifest"]
    assert kept, "the Istio install has attribute manifests"
    manifests.write_text(yaml.safe_dump_all(kept))
    files = [manifests, adapter_doc, istio / "policy" / "prometheus-oop-rule.yaml"]
    return load_config(files, registry, environ={})


async def test_prometheus_oop_rule_sends_handle_metric(
    istio: Path, registry: Registry, fake: tuple[FakeAdapter, int], tmp_path: Path
) -> None:
    adapter, port = fake
    config = retarget(prometheus_oop(istio, registry, tmp_path), f"127.0.0.1:{port}")
    runtime = await started(config, registry, tmp_path)
    try:
        bag = AttributeBag(
            {"source.workload.name": "productpage-v1", "response.code": 503, "connection.mtls": True}
        )
        outcome = runtime.report([bag])
        assert outcome.instances == 1
        await wait_for(lambda: "HandleMetric" in adapter.received)
    finally:
        await runtime.shutdown(5)
    request: Any = adapter.received["HandleMetric"][0]
    instance = request.instances[0]
    assert instance.name == "requestcount-oop.instance.istio-system"
    assert instance.value.int64_value == 1
    assert instance.dimensions["source_workload"].string_value == "productpage-v1"
    assert instance.dimensions["response_code"].int64_value == 503
    assert instance.dimensions["destination_app"].string_value == "unknown"
    assert instance.monitored_resource_type == "UNSPECIFIED"
    assert request.adapter_config.type_url == "type.googleapis.com/adapter.prometheus.config.Params"
    assert b"request_count_oop" in request.adapter_config.value


def fake_config(
    tmp_path: Path, connection: str = "", templates: str = "[listentry, logentry, quota]"
) -> Path:
    path = tmp_path / "fake.yaml"
    path.write_text(
        f"""apiVersion: config.istio.io/v1alpha2
kind: adapter
metadata: {{name: fakeadapter, namespace: istio-system}}
spec: {{templates: {templates}}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: fake, namespace: istio-system}}
spec:
  adapter: fakeadapter
  connection:
    address: "127.0.0.1:1"
{connection}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: sourceip, namespace: istio-system}}
spec:
  template: listentry
  params: {{value: source.ip | ip("10.0.0.1")}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: access, namespace: istio-system}}
spec:
  template: logentry
  params:
    severity: '"info"'
    timestamp: request.time
    variables: {{path: request.path | "", code: response.code | 0, host: request.host | "h"}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: requestcount, namespace: istio-system}}
spec:
  template: quota
  params:
    dimensions:
      user: request.headers["user"] | "anon"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: all, namespace: istio-system}}
spec:
  actions:
  - handler: fake
    instances: [sourceip, access, requestcount]
"""
    )
    return path


async def test_check_sends_handle_list_entry_and_quota(
    registry: Registry, fake: tuple[FakeAdapter, int], tmp_path: Path
) -> None:
    adapter, port = fake
    adapter.granted = 2
    config = retarget(load_config([fake_config(tmp_path)], registry, environ={}), f"127.0.0.1:{port}")
    runtime = await started(config, registry, tmp_path)
    try:
        bag = AttributeBag({"request.headers": {"user": "ann"}})
        outcome = await runtime.check(bag, {"requestcount": QuotaRequest(5)}, deduplication_id="d1")
    finally:
        await runtime.shutdown(5)
    assert outcome.status.code is Code.OK
    assert outcome.valid_use_count == 7
    assert outcome.quotas["requestcount"].granted_amount == 2
    listed: Any = adapter.received["HandleListEntry"][0]
    assert listed.instance.value == "10.0.0.1"
    quota: Any = adapter.received["HandleQuota"][0]
    assert quota.instance.dimensions["user"].string_value == "ann"
    assert quota.quota_request.quotas["requestcount.instance.istio-system"].amount == 5
    assert quota.dedup_id == "d1requestcount"


async def test_report_sends_handle_log_entry(
    registry: Registry, fake: tuple[FakeAdapter, int], tmp_path: Path
) -> None:
    adapter, port = fake
    config = retarget(load_config([fake_config(tmp_path)], registry, environ={}), f"127.0.0.1:{port}")
    runtime = await started(config, registry, tmp_path)
    moment = datetime(2026, 12, 7, 4, 0, 1, tzinfo=UTC)
    try:
        runtime.report([AttributeBag({"request.path": "/a", "response.code": 404, "request.time": moment})])
        await wait_for(lambda: "HandleLogEntry" in adapter.received)
    finally:
        await runtime.shutdown(5)
    request: Any = adapter.received["HandleLogEntry"][0]
    entry = request.instances[0]
    assert entry.name == "access.instance.istio-system"
    assert entry.severity == "info"
    assert entry.timestamp.value.ToDatetime(tzinfo=UTC) == moment
    assert entry.variables["path"].string_value == "/a"
    assert entry.variables["code"].int64_value == 404


# -- failures ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_adapter_down_gives_unavailable_not_cached(registry: Registry, tmp_path: Path) -> None:
    config = retarget(load_config([fake_config(tmp_path)], registry, environ={}), f"127.0.0.1:{free_port()}")
    runtime = await started(config, registry, tmp_path)
    try:
        outcome = await runtime.check(AttributeBag({}))
    finally:
        await runtime.shutdown(5)
    assert outcome.status.code is Code.UNAVAILABLE
    assert "adapter unavailable" in outcome.status.message
    assert outcome.valid_duration.total_seconds() == 0


async def test_adapter_error_text_is_not_passed_on(
    registry: Registry, fake: tuple[FakeAdapter, int], tmp_path: Path
) -> None:
    adapter, port = fake
    adapter.fail = grpc.StatusCode.INTERNAL
    config = retarget(load_config([fake_config(tmp_path)], registry, environ={}), f"127.0.0.1:{port}")
    runtime = await started(config, registry, tmp_path)
    try:
        outcome = await runtime.check(AttributeBag({}))
    finally:
        await runtime.shutdown(5)
    assert outcome.status.code is Code.INTERNAL
    assert "secret" not in outcome.status.message


async def test_slow_adapter_times_out(
    registry: Registry, fake: tuple[FakeAdapter, int], tmp_path: Path
) -> None:
    adapter, port = fake
    adapter.delay = 5.0
    config = load_config([fake_config(tmp_path, '    timeout: "0.3s"')], registry, environ={})
    config = retarget(config, f"127.0.0.1:{port}")
    runtime = await started(config, registry, tmp_path)
    begun = time.monotonic()
    try:
        outcome = await runtime.check(AttributeBag({}))
    finally:
        await runtime.shutdown(5)
    assert outcome.status.code is Code.DEADLINE_EXCEEDED
    assert time.monotonic() - begun < 4.0


async def test_report_is_retried_until_the_adapter_is_up(registry: Registry, tmp_path: Path) -> None:
    port = free_port()
    config = retarget(load_config([fake_config(tmp_path)], registry, environ={}), f"127.0.0.1:{port}")
    runtime = await started(config, registry, tmp_path)
    adapter = FakeAdapter()
    server = grpc.aio.server()
    try:
        moment = datetime(2026, 12, 7, tzinfo=UTC)
        outcome = runtime.report([AttributeBag({"request.path": "/late", "request.time": moment})])
        assert outcome.instances == 1
        await asyncio.sleep(0.5)  # a few failed sends while nothing listens
        server.add_generic_rpc_handlers(adapter.handlers())
        assert server.add_insecure_port(f"127.0.0.1:{port}") == port
        await server.start()
        await wait_for(lambda: "HandleLogEntry" in adapter.received)
    finally:
        await runtime.shutdown(5)
        await server.stop(None)
    request: Any = adapter.received["HandleLogEntry"][0]
    entry = request.instances[0]
    assert entry.variables["path"].string_value == "/late"


# -- TLS -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> Iterator[dict[str, Path]]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": tmp_path / "ca.pem", "token": tmp_path / "token"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["token"].write_text("t0ken\n")
    yield files
    del cert


async def test_tls_with_a_bearer_token(
    registry: Registry, ca: trustme.CA, tls_files: dict[str, Path], tmp_path: Path
) -> None:
    cert = ca.issue_cert("localhost")
    credentials = grpc.ssl_server_credentials(
        [(cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes())]
    )
    adapter = FakeAdapter()
    server, port = await start_fake(adapter, credentials)
    connection = (
        "    authentication:\n      tls:\n"
        f"        caCertificates: {tls_files['ca']}\n        tokenPath: {tls_files['token']}\n"
        "        authHeader: BEARER\n        serverName: localhost\n"
    )
    config = retarget(
        load_config([fake_config(tmp_path, connection)], registry, environ={}), f"127.0.0.1:{port}"
    )
    runtime = await started(config, registry, tmp_path)
    try:
        outcome = await runtime.check(AttributeBag({}))
    finally:
        await runtime.shutdown(5)
        await server.stop(None)
    assert outcome.status.code is Code.OK
    assert ("authorization", "Bearer t0ken") in adapter.metadata[0]


async def test_tls_refuses_an_untrusted_server(
    registry: Registry, tls_files: dict[str, Path], tmp_path: Path
) -> None:
    other = trustme.CA().issue_cert("localhost")
    credentials = grpc.ssl_server_credentials(
        [(other.private_key_pem.bytes(), other.cert_chain_pems[0].bytes())]
    )
    adapter = FakeAdapter()
    server, port = await start_fake(adapter, credentials)
    connection = f"    authentication:\n      tls:\n        caCertificates: {tls_files['ca']}\n        serverName: localhost\n"
    config = retarget(
        load_config([fake_config(tmp_path, connection)], registry, environ={}), f"127.0.0.1:{port}"
    )
    runtime = await started(config, registry, tmp_path)
    try:
        outcome = await runtime.check(AttributeBag({}))
    finally:
        await runtime.shutdown(5)
        await server.stop(None)
    assert outcome.status.code is Code.UNAVAILABLE
    assert adapter.received == {}


# -- config errors -------------------------------------------------------------------------------------


def test_undeclared_adapter_is_a_clear_error(istio: Path, registry: Registry) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config([istio / "policy" / "prometheus-oop-rule.yaml"], registry, environ={})
    assert 'out-of-process adapter "prometheus-nosession" is not declared' in str(caught.value)


def test_params_that_do_not_fit_the_descriptor(istio: Path, registry: Registry, tmp_path: Path) -> None:
    handler = tmp_path / "handler.yaml"
    handler.write_text(
        "apiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {name: kv, namespace: istio-system}\n"
        "spec:\n  adapter: keyval\n  connection: {address: 'keyval:9070'}\n  params: {tabel: {a: b}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(
            [istio / "httpbin" / "keyval-template.yaml", istio / "httpbin" / "keyval.yaml", handler],
            registry,
            environ={},
        )
    assert "keyval.Params" in str(caught.value)
    assert "tabel" in str(caught.value)


def test_keyval_params_descriptor_matches_istios(istio: Path) -> None:
    """The fake's keyval params are wire-compatible with the descriptor Istio ships."""
    from mixer.oop import adapter_descriptor, encode_params

    spec = next(yaml.safe_load_all((istio / "httpbin" / "keyval.yaml").read_text()))["spec"]
    istio_params = adapter_descriptor("keyval", spec).params_class
    ours = adapter_descriptor("keyval", {"config": b64(keyval_params_descriptor())}).params_class
    table = {"table": {"jason": "admin"}}
    assert encode_params(istio_params, table) == encode_params(ours, table)


# -- typed values, the other check templates, sessions ------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


TYPED = """apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata: {name: typed, namespace: istio-system}
spec:
  attributes:
    t.dns: {valueType: DNS_NAME}
    t.email: {valueType: EMAIL_ADDRESS}
    t.uri: {valueType: URI}
    t.ip: {valueType: IP_ADDRESS}
    t.duration: {valueType: DURATION}
    t.double: {valueType: DOUBLE}
    t.bool: {valueType: BOOL}
    t.time: {valueType: TIMESTAMP}
---
apiVersion: config.istio.io/v1alpha2
kind: adapter
metadata: {name: typedadapter, namespace: istio-system}
spec: {templates: [metric]}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: typed, namespace: istio-system}
spec:
  adapter: typedadapter
  connection: {address: "127.0.0.1:1"}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: typed, namespace: istio-system}
spec:
  template: metric
  params:
    value: t.double
    dimensions:
      dns: t.dns
      email: t.email
      uri: t.uri
      ip: t.ip
      duration: t.duration
      flag: t.bool
      time: t.time
      text: '"plain"'
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: typed, namespace: istio-system}
spec:
  actions: [{handler: typed, instances: [typed]}]
"""


async def test_values_carry_their_type(
    registry: Registry, fake: tuple[FakeAdapter, int], tmp_path: Path
) -> None:
    import ipaddress
    from datetime import timedelta

    adapter, port = fake
    config = retarget(
        load_config([write(tmp_path, "typed.yaml", TYPED)], registry, environ={}), f"127.0.0.1:{port}"
    )
    runtime = await started(config, registry, tmp_path)
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    bag = AttributeBag(
        {
            "t.dns": "svc.example.com",
            "t.email": "a@example.com",
            "t.uri": "https://example.com/x",
            "t.ip": ipaddress.ip_address("10.1.2.3"),
            "t.duration": timedelta(milliseconds=1500),
            "t.double": 2.5,
            "t.bool": True,
            "t.time": moment,
        }
    )
    try:
        assert runtime.report([bag]).instances == 1
        await wait_for(lambda: "HandleMetric" in adapter.received)
    finally:
        await runtime.shutdown(5)
    request: Any = adapter.received["HandleMetric"][0]
    instance = request.instances[0]
    dims = instance.dimensions
    assert instance.value.double_value == 2.5
    assert dims["dns"].dns_name_value.value == "svc.example.com"
    assert dims["email"].email_address_value.value == "a@example.com"
    assert dims["uri"].uri_value.value == "https://example.com/x"
    assert dims["ip"].ip_address_value.value == bytes([10, 1, 2, 3])
    assert dims["duration"].duration_value.value.ToTimedelta() == timedelta(milliseconds=1500)
    assert dims["flag"].bool_value is True
    assert dims["time"].timestamp_value.value.ToDatetime(tzinfo=UTC) == moment
    assert dims["text"].WhichOneof("value") == "string_value"


CHECKS = """apiVersion: config.istio.io/v1alpha2
kind: adapter
metadata: {name: checks, namespace: istio-system}
spec: {templates: [authorization, apikey, checknothing], session_based: SESSION}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: checks, namespace: istio-system}
spec:
  adapter: checks
  connection: {address: "127.0.0.1:1"}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: authz, namespace: istio-system}
spec:
  template: authorization
  params:
    subject:
      user: source.principal | "nobody"
      properties:
        app: source.labels["app"] | ""
    action:
      method: request.method | "GET"
      path: request.path | "/"
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: key, namespace: istio-system}
spec:
  template: apikey
  params:
    api_key: request.api_key | ""
    api: '"petstore"'
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: nothing, namespace: istio-system}
spec:
  template: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: checks, namespace: istio-system}
spec:
  actions: [{handler: checks, instances: [authz, key, nothing]}]
"""


@pytest.mark.parametrize("session_based", [False, True])
async def test_authorization_apikey_checknothing(
    registry: Registry, fake: tuple[FakeAdapter, int], tmp_path: Path, session_based: bool
) -> None:
    adapter, port = fake
    text = CHECKS.replace("SESSION", "true" if session_based else "false")
    config = retarget(
        load_config([write(tmp_path, "checks.yaml", text)], registry, environ={}), f"127.0.0.1:{port}"
    )
    runtime = await started(config, registry, tmp_path)
    try:
        bag = AttributeBag(
            {
                "source.principal": "alice",
                "source.labels": {"app": "web"},
                "request.path": "/pets",
                "request.api_key": "k1",
            }
        )
        outcome = await runtime.check(bag)
        deadline = time.monotonic() + 20
        # A session-based handler answers UNAVAILABLE until its session is open.
        while session_based and outcome.status.code is Code.UNAVAILABLE and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            outcome = await runtime.check(bag)
    finally:
        await runtime.shutdown(5)
    assert outcome.status.code is Code.OK
    authz: Any = adapter.received["HandleAuthorization"][0]
    assert authz.instance.subject.user == "alice"
    assert authz.instance.subject.properties["app"].string_value == "web"
    assert authz.instance.action.method == "GET"
    assert authz.instance.action.path == "/pets"
    key: Any = adapter.received["HandleApiKey"][0]
    assert (key.instance.api_key, key.instance.api) == ("k1", "petstore")
    nothing: Any = adapter.received["HandleCheckNothing"][0]
    assert nothing.instance.name == "nothing.instance.istio-system"
    if session_based:
        assert "Validate" in adapter.received
        assert authz.adapter_config.value == b"s-1"
        assert "CloseSession" in adapter.received
    else:
        assert "CreateSession" not in adapter.received
        assert authz.adapter_config.type_url == ""


def test_effective_config_shows_calls_not_encoded_params(istio: Path, registry: Registry) -> None:
    from mixer.config import redacted

    shown = redacted(control_headers(istio, registry))["handlers"]["keyval.istio-system"]
    assert shown["adapter"] == "oop:keyval"
    assert shown["params"]["templates"] == {"keyval": "/keyval.HandleKeyvalService/HandleKeyval"}
    assert shown["params"]["adapter_config"].endswith(" bytes>")
    assert "jason" not in repr(shown)


async def test_mutual_tls(
    registry: Registry, ca: trustme.CA, tls_files: dict[str, Path], tmp_path: Path
) -> None:
    server_cert = ca.issue_cert("localhost")
    client = ca.issue_cert("mixer.istio-system")
    key, cert = tmp_path / "client.key", tmp_path / "client.pem"
    client.private_key_pem.write_to_path(str(key))
    client.cert_chain_pems[0].write_to_path(str(cert))
    credentials = grpc.ssl_server_credentials(
        [(server_cert.private_key_pem.bytes(), server_cert.cert_chain_pems[0].bytes())],
        root_certificates=ca.cert_pem.bytes(),
        require_client_auth=True,
    )
    adapter = FakeAdapter()
    server, port = await start_fake(adapter, credentials)
    mutual = (
        "    authentication:\n      mutual:\n"
        f"        privateKey: {key}\n        clientCertificate: {cert}\n"
        f"        caCertificates: {tls_files['ca']}\n        serverName: localhost\n"
    )
    without = f"    authentication:\n      tls:\n        caCertificates: {tls_files['ca']}\n        serverName: localhost\n"
    outcomes = []
    try:
        for connection in (mutual, without):
            config = load_config([fake_config(tmp_path, connection)], registry, environ={})
            runtime = await started(retarget(config, f"127.0.0.1:{port}"), registry, tmp_path)
            try:
                outcomes.append(await runtime.check(AttributeBag({})))
            finally:
                await runtime.shutdown(5)
    finally:
        await server.stop(None)
    assert outcomes[0].status.code is Code.OK
    assert outcomes[1].status.code is Code.UNAVAILABLE  # the server wants a client certificate
    assert len(adapter.received["HandleListEntry"]) == 1


def test_outputs_are_known_only_under_the_action_name(
    istio: Path, registry: Registry, tmp_path: Path
) -> None:
    task = (istio / "docs-tasks" / "control-headers-keyval.yaml").read_text()
    renamed = write(
        tmp_path, "renamed.yaml", task.replace("values: [ x.output.value ]", "values: [ y.output.value ]")
    )
    files = [istio / "httpbin" / "keyval-template.yaml", istio / "httpbin" / "keyval.yaml", renamed]
    with pytest.raises(ConfigError) as caught:
        load_config(files, registry, environ={})
    assert 'requestHeaderOperations[0].values[0]: unknown attribute "y.output.value"' in str(caught.value)


async def test_a_reload_keeps_an_unchanged_handler(istio: Path, registry: Registry, tmp_path: Path) -> None:
    first = build_runtime(control_headers(istio, registry), registry)
    second = build_runtime(control_headers(istio, registry), registry, previous=first)
    assert second.delta.reused == ("keyval.istio-system",)
    moved = retarget(control_headers(istio, registry), "127.0.0.1:1")
    third = build_runtime(moved, registry, previous=second)
    assert third.delta.new == ("keyval.istio-system",)


async def test_calls_in_flight_are_bounded(
    istio: Path, registry: Registry, fake: tuple[FakeAdapter, int], tmp_path: Path
) -> None:
    from mixer.oop._handler import MAX_IN_FLIGHT

    adapter, port = fake
    adapter.delay = 0.05
    runtime = await started(
        retarget(control_headers(istio, registry), f"127.0.0.1:{port}"), registry, tmp_path
    )
    bag = AttributeBag({"request.headers": {"user": "jason"}})
    try:
        outcomes = await asyncio.gather(*(runtime.check(bag) for _ in range(3 * MAX_IN_FLIGHT)))
    finally:
        await runtime.shutdown(5)
    assert all(outcome.status.code is Code.OK for outcome in outcomes)
    assert 1 < adapter.most_in_flight <= MAX_IN_FLIGHT
