"""The fluentd adapter against a FAKE fluentd forward input (Forward protocol, chunk acks)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.fluentd import FluentdConfig
from adapters.fluentd._handler import FluentdHandler
from mixer.adapter import HandlerEnv, ReportBatch
from mixer.attributes import AttributeBag
from mixer.config import load_config_text
from mixer.runtime import build_runtime
from mixer.templates import LogEntryInstance
from plugins.manager import create_plugin_manager
from tests.adapters.fake_fluentd import FakeFluentd

ISTIO = Path(__file__).resolve().parents[2].parent / "shared" / "istio-1.4"
WHEN = datetime(2026, 12, 7, 4, 0, 0, tzinfo=UTC)


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _entry(name: str = "newlog.istio-system", **variables: object) -> LogEntryInstance:
    return LogEntryInstance(name, variables=dict(variables), timestamp=WHEN, severity="info")


def _handler(port: int, tmp_path: Path, **params: object) -> FluentdHandler:
    config = FluentdConfig.model_validate(
        {
            "address": f"127.0.0.1:{port}",
            "pushIntervalDuration": "20ms",
            "delivery": {"retry_initial_interval": "20ms", "retry_max_interval": "100ms"},
            **params,
        }
    )
    env = HandlerEnv(
        handler_name="handler.istio-system", logger=logging.getLogger("test.fluentd"), data_dir=tmp_path
    )
    return FluentdHandler(config, env)


async def test_events_carry_the_instance_name_as_tag(tmp_path: Path) -> None:
    server = FakeFluentd()
    await server.start()
    handler = _handler(server.port, tmp_path, integerDuration=True)
    await handler.start()
    try:
        handler.handle_report(
            ReportBatch(
                "handler.istio-system",
                [
                    _entry(latency=timedelta(milliseconds=12), responseCode=200),
                    _entry("tagged.istio-system", tag="custom.tag", user="alice"),
                ],
            )
        )
        await _until(lambda: len(server.events) == 2, "two events")
        first, second = sorted(server.events, key=lambda e: e.tag)
        assert second.tag == "newlog.instance.istio-system"
        assert second.record == {"latency": 12, "responseCode": 200, "severity": "info"}
        assert second.time == int(WHEN.timestamp())
        assert first.tag == "custom.tag"
        assert first.record == {"user": "alice", "severity": "info", "name": "tagged.instance.istio-system"}
        assert all(event.chunk for event in server.events)
    finally:
        await handler.shutdown(5.0)
        await server.stop()


async def test_down_server_records_are_kept_and_delivered_later(tmp_path: Path) -> None:
    probe = FakeFluentd()
    await probe.start()
    port = probe.port
    await probe.stop()
    handler = _handler(
        port, tmp_path, delivery={"retry_initial_interval": "20ms", "retry_max_elapsed": "100ms"}
    )
    await handler.start()
    server = FakeFluentd(port=port)
    try:
        handler.handle_report(ReportBatch("h", [_entry(n=i) for i in range(5)]))
        await _until(lambda: handler.delivery_stats.failed >= 1, "a failed send")
        await server.start()
        await _until(lambda: len({e.record["n"] for e in server.events}) == 5, "the kept records", timeout=60)
        assert handler.delivery_stats.retried + handler.delivery_stats.spooled >= 1
    finally:
        await handler.shutdown(5.0)
        await server.stop()


async def test_missing_ack_times_out_and_is_retried(tmp_path: Path) -> None:
    server = FakeFluentd(ack=False)
    await server.start()
    handler = _handler(server.port, tmp_path, pushTimeoutDuration="200ms")
    await handler.start()
    try:
        handler.handle_report(ReportBatch("h", [_entry(n=1)]))
        await _until(lambda: len(server.chunks) >= 2, "a second attempt after the ack timeout")
        assert handler.delivery_stats.failed >= 1
        server.ack = True
        sent = handler.delivery_stats.sent
        await _until(lambda: handler.delivery_stats.sent > sent, "an acknowledged send")
        assert {e.record["n"] for e in server.events} == {1}
    finally:
        await handler.shutdown(5.0)
        await server.stop()


def _istio(name: str) -> str:
    path = ISTIO / "telemetry" / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: the tests read ../shared/istio-1.4 beside the repo")
    return path.read_text()


@pytest.mark.parametrize("name", ["fluentd-istio.yaml", "fluentd-istio-crd.yaml"])
async def test_istio_fluentd_config_driven_by_a_report(name: str, tmp_path: Path) -> None:
    server = FakeFluentd()
    await server.start()
    registry = create_plugin_manager().registry()
    text = _istio(name)
    # Unchanged but for where fluentd listens.
    load_config_text(text, registry)
    text = text.replace("fluentd-es.logging:24224", f"127.0.0.1:{server.port}")
    runtime = build_runtime(load_config_text(text, registry), registry)
    await runtime.start()
    try:
        bag = AttributeBag(
            {
                "request.time": WHEN,
                "source.workload.name": "productpage-v1",
                "destination.labels": {"app": "ratings"},
                "response.code": 200,
                "response.size": 99,
                "response.duration": timedelta(milliseconds=7),
            }
        )
        outcome = runtime.report([bag])
        assert outcome.instance_errors == 0, outcome.errors
        await _until(lambda: len(server.events) == 1, "the log entry", timeout=90)
        event = server.events[0]
        # Mixer's instance names: newlog.instance.istio-system, or the legacy newlog.logentry.istio-system.
        assert event.tag == (
            "newlog.logentry.istio-system" if "crd" in name else "newlog.instance.istio-system"
        )
        assert event.record == {
            "source": "productpage-v1",
            "user": "unknown",
            "destination": "ratings",
            "responseCode": 200,
            "responseSize": 99,
            "latency": "7ms",
            "severity": "info",
        }
        assert event.time == int(WHEN.timestamp())
    finally:
        await runtime.shutdown(5.0)
        await server.stop()
