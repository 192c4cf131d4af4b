"""The istio.mixer.v1 servicer in process: overload, deadlines, failures, and the runtime holder."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest

from mixer.api import Admission, ServiceLimits
from mixer.api.mixer_v1 import CHECK_METHOD, REPORT_METHOD, MixerV1Service
from mixer.attributes import ISTIO_MANIFEST
from mixer.config import ValidatedConfig
from mixer.proto.istio.mixer.v1.check_pb2 import CheckResponse
from mixer.runtime import Runtime, RuntimeStats, build_runtime
from mixer.server import ConfigInfo, RuntimeHolder, ServerMetrics
from mixer.wire import encode_check_request, encode_report_request
from tests.runtime.support import config, fq, handler, instance, registry, rule
from tests.server.support import metric_value

INFO = ConfigInfo(embedded=False, source="test")
CHECK = encode_check_request({"source.name": "a"}).SerializeToString()
REPORT = encode_report_request([{"source.name": "a"}]).SerializeToString()


def one_handler_config(**params: Any) -> ValidatedConfig:
    return config(
        [handler("h", **params)],
        [instance("who", "listentry", value='source.name | "x"'), instance("m", "metric", value="1")],
        [rule("r", None, (fq("h"), [fq("who"), fq("m")]))],
    )


@dataclass
class Served:
    service: MixerV1Service
    holder: RuntimeHolder
    metrics: ServerMetrics
    admission: Admission
    channel: grpc.aio.Channel

    async def call(self, method: str, payload: bytes, timeout: float | None = 10.0) -> bytes:
        answer: bytes = await self.channel.unary_unary(method)(payload, timeout=timeout)
        return answer

    async def error(self, method: str, payload: bytes, timeout: float | None = 10.0) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await self.call(method, payload, timeout)
        return info.value

    def count(self, method: str, code: str) -> float | None:
        from prometheus_client import generate_latest

        text = generate_latest(self.metrics.registry).decode()
        return metric_value(text, "mixer_requests_total", api="mixer_v1", method=method, code=code)


async def serve(
    runtime: Runtime, *, limit: int = 100, limits: ServiceLimits | None = None
) -> AsyncIterator[Served]:
    holder = RuntimeHolder(runtime, INFO)
    metrics = ServerMetrics(lambda: holder.current.stats)
    admission = Admission(limit)
    service = MixerV1Service(holder, metrics, admission, limits or ServiceLimits())
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((service.rpc_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(service, holder, metrics, admission, channel)
    finally:
        await server.stop(None)


@pytest.fixture
async def slow() -> AsyncIterator[Served]:
    runtime = build_runtime(one_handler_config(delay=30.0), registry())
    await runtime.start()
    async for served in serve(runtime, limit=1, limits=ServiceLimits(check_timeout=60.0)):
        yield served
    await runtime.shutdown(1.0)


async def wait_for(condition: Any, what: str) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


async def test_over_the_concurrency_limit_calls_are_unavailable_at_once(slow: Served) -> None:
    held = asyncio.ensure_future(slow.call(CHECK_METHOD, CHECK, timeout=30))
    await wait_for(lambda: slow.admission.in_flight == 1, "the first Check in flight")
    assert slow.service.in_flight == 1

    err = await slow.error(CHECK_METHOD, CHECK)
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert "overloaded" in (err.details() or "")
    err = await slow.error(REPORT_METHOD, REPORT)
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert slow.count("Check", "UNAVAILABLE") == 1
    assert slow.count("Report", "UNAVAILABLE") == 1

    held.cancel()
    await wait_for(lambda: slow.admission.in_flight == 0, "the cancelled Check to leave")
    assert slow.holder.in_use(slow.holder.current) == 0
    await wait_for(lambda: slow.count("Check", "CANCELLED") == 1, "the cancellation to be counted")


async def test_a_caller_deadline_ends_the_call_deadline_exceeded(slow: Served) -> None:
    err = await slow.error(CHECK_METHOD, CHECK, timeout=0.2)
    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_for(lambda: slow.admission.in_flight == 0, "the Check to leave")
    await wait_for(lambda: slow.count("Check", "DEADLINE_EXCEEDED") == 1, "the deadline to be counted")


async def test_check_timeout_bounds_a_call_without_deadline() -> None:
    runtime = build_runtime(one_handler_config(delay=30.0), registry())
    await runtime.start()
    async for served in serve(runtime, limits=ServiceLimits(check_timeout=0.1)):
        response = CheckResponse.FromString(await served.call(CHECK_METHOD, CHECK, timeout=None))
        status = response.precondition.status
        assert status.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
        # Not the caller's deadline: an answer the proxy must not cache.
        assert response.precondition.valid_use_count == 0
    await runtime.shutdown(1.0)


@pytest.mark.parametrize(
    ("params", "code", "detail"),
    [
        ({"overloaded": True}, grpc.StatusCode.UNAVAILABLE, "overloaded"),
        ({"raise_message": "disk full"}, grpc.StatusCode.UNKNOWN, "disk full"),
    ],
)
async def test_a_report_the_handlers_did_not_take_fails_with_the_runtime_status(
    params: dict[str, Any], code: grpc.StatusCode, detail: str
) -> None:
    runtime = build_runtime(one_handler_config(**params), registry())
    await runtime.start()
    async for served in serve(runtime):
        err = await served.error(REPORT_METHOD, REPORT)
        assert err.code() is code
        assert detail in (err.details() or "")
        assert served.count("Report", code.name) == 1
    await runtime.shutdown(1.0)


class ExplodingRuntime:
    """Stands in for a runtime with a bug: every dispatch raises."""

    def __init__(self) -> None:
        self.config = type("Config", (), {"manifest": ISTIO_MANIFEST})()
        self.stats = RuntimeStats()
        self.generation = 1

    async def check(self, *args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("bug")

    def report(self, bags: Any) -> Any:
        raise ZeroDivisionError("bug")


async def test_an_unexpected_exception_is_internal_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    runtime = cast(Runtime, ExplodingRuntime())
    caplog.set_level(logging.ERROR, logger="mixer.api.mixer_v1")
    async for served in serve(runtime):
        for method, payload in ((CHECK_METHOD, CHECK), (REPORT_METHOD, REPORT)):
            err = await served.error(method, payload)
            assert err.code() is grpc.StatusCode.INTERNAL
            assert "bug" not in (err.details() or "")
        # Still serving, and nothing leaked.
        assert served.admission.in_flight == 0
        assert served.holder.in_use(runtime) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "Check failed unexpectedly" in messages
    assert "Report failed unexpectedly" in messages
    assert all(r.exc_info for r in caplog.records)


# -- the holder ----------------------------------------------------------------------------------


async def test_a_swapped_out_runtime_is_drained_before_it_is_retired() -> None:
    old = build_runtime(one_handler_config(), registry())
    new = build_runtime(one_handler_config(tag="new"), registry())
    holder = RuntimeHolder(old, INFO)
    leased = holder.acquire()
    assert leased is old
    assert holder.swap(new, INFO) is old
    assert holder.acquire() is new
    assert not await holder.drained(old, 0.05)
    waiting = asyncio.ensure_future(holder.drained(old, 5))
    await asyncio.sleep(0)
    holder.release(leased)
    assert await waiting
    assert holder.in_use(old) == 0
    assert holder.in_use(new) == 1
    assert await holder.drained(old, 0)
