"""The standard gRPC services of a real server: health (grpc.health.v1), reflection, and the drain delay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from mixer.api import GRPC_PROTOCOLS
from mixer.server import MixerServer, ServeOptions
from mixer.server._introspection import api_service_names
from tests.server.support import check, http_get, policy_options

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
EXPECTED_SERVICES = {
    "istio.mixer.v1.Mixer",
    "envoy.service.auth.v3.Authorization",
    "envoy.service.ratelimit.v3.RateLimitService",
    "envoy.service.accesslog.v3.AccessLogService",
}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[MixerServer]:
    serving = MixerServer(policy_options(tmp_path))
    await serving.start()
    try:
        yield serving
    finally:
        await serving.stop()


async def _health(target: str, service: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(answer.status)


def test_the_health_service_covers_every_api_service() -> None:
    assert set(api_service_names()) == EXPECTED_SERVICES
    assert len(api_service_names()) == len(GRPC_PROTOCOLS)


async def test_health_is_serving_for_the_server_and_each_service(server: MixerServer) -> None:
    target = str(server.grpc_address)
    for service in ("", *EXPECTED_SERVICES):
        assert await _health(target, service) == SERVING, service
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _health(target, "no.such.Service")
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def _reflect(target: str) -> tuple[list[str], list[str]]:
    """The services a reflection client lists, and the methods of istio.mixer.v1.Mixer it resolves."""
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = list(database.get_services())
        pool = DescriptorPool(database)
        mixer = pool.FindServiceByName("istio.mixer.v1.Mixer")
        methods = [f"{m.name}({m.input_type.full_name})" for m in mixer.methods]
        # A file descriptor, fetched by name, with its dependencies.
        check_file = pool.FindFileContainingSymbol("istio.mixer.v1.CheckRequest")
        assert check_file.name.endswith("check.proto")
        return services, methods


async def test_reflection_lists_services_and_serves_their_descriptors(server: MixerServer) -> None:
    services, methods = await asyncio.to_thread(_reflect, str(server.grpc_address))
    assert set(services) >= EXPECTED_SERVICES
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(services)
    assert sorted(methods) == [
        "Check(istio.mixer.v1.CheckRequest)",
        "Report(istio.mixer.v1.ReportRequest)",
    ]


def _envoy_descriptor(target: str, name: str) -> str:
    with grpc.insecure_channel(target) as channel:
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        return str(pool.FindServiceByName(name).full_name)


async def test_reflection_resolves_every_served_service(server: MixerServer) -> None:
    for name in EXPECTED_SERVICES:
        assert await asyncio.to_thread(_envoy_descriptor, str(server.grpc_address), name) == name


async def test_the_drain_delay_keeps_serving_while_saying_not_ready(tmp_path: Path) -> None:
    delay = 2.0
    serving = MixerServer(policy_options(tmp_path, drain_delay=delay))
    await serving.start()
    target = str(serving.grpc_address)
    http = str(serving.http_address)
    assert await _health(target, "istio.mixer.v1.Mixer") == SERVING
    started = time.monotonic()
    stopping = asyncio.ensure_future(serving.stop())
    try:
        deadline = time.monotonic() + 10
        while await _health(target, "istio.mixer.v1.Mixer") != NOT_SERVING:
            assert time.monotonic() < deadline, "health never went NOT_SERVING"
            await asyncio.sleep(0.02)
        assert await _health(target, "") == NOT_SERVING
        status, _ = await asyncio.to_thread(http_get, f"http://{http}/readyz")
        assert status == 503
        # Not ready, yet still taking calls until the delay is over.
        async with grpc.aio.insecure_channel(target) as channel:
            answer = await check(channel, {"destination.service.host": "blocked.svc"})
        assert answer.precondition.status.code == 7
        assert not stopping.done()
    finally:
        await stopping
    assert time.monotonic() - started >= delay


async def test_no_drain_delay_by_default(tmp_path: Path) -> None:
    assert ServeOptions().drain_delay == 0
    with pytest.raises(ValueError, match="--drain-delay"):
        ServeOptions(drain_delay=-1)


def test_the_drain_delay_reaches_the_workers_command_line() -> None:
    from mixer.cli import build_parser
    from mixer.cli._serve import options_from_args

    options = ServeOptions(drain_delay=1.5, log_format="json")
    again = options_from_args(build_parser().parse_args(["serve", *options.to_argv()]))
    assert again.drain_delay == 1.5
    assert again == options
