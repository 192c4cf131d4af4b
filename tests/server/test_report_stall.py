"""The largest Report a server accepts does not stall the Checks that arrive while it is processed."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from mixer.api.mixer_v1 import CHECK_METHOD, REPORT_METHOD
from mixer.attributes import AttributeValue
from mixer.proto.istio.mixer.v1.report_pb2 import ReportRequest
from mixer.server import DEFAULT_MAX_REPORT_RECORDS
from mixer.wire import ReportEncoding, encode_check_request, encode_report_request
from tests.server.support import ServerProcess, launcher, metric_value

#: What a Check may take at the 99th percentile while the Report is processed (a Check alone takes
#: about a millisecond; a Report handled in one go holds every call for hundreds of milliseconds).
P99_BOUND = 0.050
REPEATS = 3


def istio_bag(i: int, now: datetime) -> dict[str, AttributeValue]:
    """An inbound HTTP request as an Istio 1.4 proxy reports it (the embedded config's rules use these)."""
    return {
        "context.protocol": "http",
        "context.reporter.kind": "inbound",
        "request.time": now,
        "response.time": now + timedelta(milliseconds=3),
        "request.id": f"stall-{i}",
        "request.path": f"/items/{i}",
        "request.method": "GET",
        "request.host": "reviews",
        "request.useragent": "curl/7.64",
        "request.size": 0,
        "response.size": 1024 + i % 512,
        "response.code": 200 if i % 10 else 503,
        "response.duration": timedelta(milliseconds=3),
        "source.workload.name": "productpage-v1",
        "source.workload.namespace": "default",
        "source.principal": "cluster.local/ns/default/sa/productpage",
        "destination.workload.name": "reviews-v1",
        "destination.workload.namespace": "default",
        "destination.service.host": "reviews.default.svc.cluster.local",
        "destination.service.name": "reviews",
        "destination.service.namespace": "default",
        "destination.port": 9080,
    }


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`mixer serve` on the embedded default config (Prometheus metrics, access log on stdout)."""
    with launcher(tmp_path_factory.mktemp("stall")) as launch:
        yield launch.start("--reload-interval", "0")


def largest_report(now: datetime) -> bytes:
    bags = [istio_bag(i, now) for i in range(DEFAULT_MAX_REPORT_RECORDS)]
    return encode_report_request(bags, ReportEncoding.DELTA_ENCODING).SerializeToString()


async def check_latencies_during(channel: grpc.aio.Channel, work: asyncio.Task[bytes]) -> list[float]:
    """Back-to-back Checks from before ``work`` starts until it is done; each one's latency."""
    rpc = channel.unary_unary(CHECK_METHOD)
    payload = encode_check_request(
        {"destination.service.host": "reviews.default.svc.cluster.local"}
    ).SerializeToString()
    latencies: list[float] = []
    while not work.done():
        started = time.perf_counter()
        await rpc(payload, timeout=30)
        latencies.append(time.perf_counter() - started)
    return latencies


async def test_checks_keep_their_latency_during_the_largest_report(
    embedded_server: ServerProcess, tmp_path: Path
) -> None:
    payload = largest_report(datetime.now(UTC))
    assert len(payload) < 4 * 1024 * 1024, "the batch must fit the default message size"
    async with grpc.aio.insecure_channel(embedded_server.grpc_target) as channel:
        check = channel.unary_unary(CHECK_METHOD)
        warm = encode_check_request({"destination.service.host": "x"}).SerializeToString()
        for _ in range(20):
            await check(warm, timeout=10)
        report = channel.unary_unary(REPORT_METHOD)
        latencies: list[float] = []
        for _ in range(REPEATS):
            work = asyncio.ensure_future(report(payload, timeout=60))
            latencies += await check_latencies_during(channel, work)
            assert await work == b""
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    summary = (
        f"{len(latencies)} Checks during {REPEATS} Reports of {DEFAULT_MAX_REPORT_RECORDS} bags: "
        f"median {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms"
    )
    print(summary)
    assert len(latencies) >= 3 * REPEATS, summary
    assert p99 < P99_BOUND, summary
    records = metric_value(embedded_server.metrics(), "mixer_report_records_total")
    assert records is not None
    assert records >= REPEATS * DEFAULT_MAX_REPORT_RECORDS


async def test_a_report_over_the_bound_is_resource_exhausted_without_a_stall(
    embedded_server: ServerProcess,
) -> None:
    # The shape that stalled the server for seconds: 450,000 tiny bags, 3.6 MB, under the size limit.
    one = encode_report_request([{"request.id": "x"}])
    element = one.attributes[0].SerializeToString()
    header = ReportRequest(global_word_count=one.global_word_count, default_words=one.default_words)
    payload = header.SerializeToString() + (b"\x0a" + bytes([len(element)]) + element) * 450_000
    assert len(payload) < 4 * 1024 * 1024
    async with grpc.aio.insecure_channel(embedded_server.grpc_target) as channel:
        report = channel.unary_unary(REPORT_METHOD)
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await report(payload, timeout=30)
        elapsed = time.perf_counter() - started
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"more than {DEFAULT_MAX_REPORT_RECORDS} records" in (info.value.details() or "")
        # Refused after scanning 10,001 elements, not after parsing 450,000 (seconds before).
        assert elapsed < 2.0, f"refused after {elapsed:.2f}s"
        over = encode_report_request([{"request.id": "x"}] * (DEFAULT_MAX_REPORT_RECORDS + 1))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await report(over.SerializeToString(), timeout=30)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    exposition = embedded_server.metrics()
    assert (
        metric_value(
            exposition, "mixer_requests_total", api="mixer_v1", method="Report", code="RESOURCE_EXHAUSTED"
        )
        == 2
    )
