"""The largest Report a server accepts does not stall the Checks that arrive while it is processed."""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import aiohttp
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


#: What fits 10,000 JSON records in the 4 MiB body limit and still drives the embedded rules.
HTTP_NAMES = frozenset(
    {
        "context.protocol",
        "context.reporter.kind",
        "request.time",
        "response.time",
        "request.path",
        "request.method",
        "response.code",
        "response.size",
        "response.duration",
        "destination.service.host",
        "destination.workload.name",
        "source.workload.name",
    }
)


def largest_http_report(now: datetime) -> bytes:
    """The same bags as a ``/v1/report`` body (JSON values: RFC 3339 times, Go durations)."""

    def as_json(value: AttributeValue) -> object:
        if isinstance(value, datetime):
            return value.isoformat().replace("+00:00", "Z")
        if isinstance(value, timedelta):
            return f"{value // timedelta(milliseconds=1)}ms"
        return value

    records = [
        {name: as_json(value) for name, value in istio_bag(i, now).items() if name in HTTP_NAMES}
        for i in range(DEFAULT_MAX_REPORT_RECORDS)
    ]
    return json.dumps({"records": records}, separators=(",", ":")).encode()


async def check_latencies_during(channel: grpc.aio.Channel, work: asyncio.Future[object]) -> list[float]:
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


@pytest.mark.parametrize("api", ["grpc", "http"])
async def test_checks_keep_their_latency_during_the_largest_report(
    embedded_server: ServerProcess, api: str
) -> None:
    now = datetime.now(UTC)
    payload = largest_report(now) if api == "grpc" else largest_http_report(now)
    assert len(payload) < 4 * 1024 * 1024, "the batch must fit the default message size"
    before = metric_value(embedded_server.metrics(), "mixer_report_records_total") or 0
    async with (
        grpc.aio.insecure_channel(embedded_server.grpc_target) as channel,
        aiohttp.ClientSession() as session,
    ):
        check = channel.unary_unary(CHECK_METHOD)
        warm = encode_check_request({"destination.service.host": "x"}).SerializeToString()
        for _ in range(20):
            await check(warm, timeout=10)
        report = channel.unary_unary(REPORT_METHOD)

        async def send() -> object:
            if api == "grpc":
                return await report(payload, timeout=60)
            async with session.post(
                f"{embedded_server.http_url}/v1/report",
                data=io.BytesIO(payload),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=60),
            ) as response:
                return response.status, await response.text()

        latencies: list[float] = []
        for _ in range(REPEATS):
            work = asyncio.ensure_future(send())
            latencies += await check_latencies_during(channel, work)
            expected = b"" if api == "grpc" else (202, '{"status": "OK", "records": 10000}')
            assert await work == expected
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    summary = (
        f"{api}: {len(latencies)} Checks during {REPEATS} Reports of {DEFAULT_MAX_REPORT_RECORDS} bags: "
        f"median {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms"
    )
    print(summary)
    assert len(latencies) >= 3 * REPEATS, summary
    assert p99 < P99_BOUND, summary
    records = metric_value(embedded_server.metrics(), "mixer_report_records_total")
    assert records is not None
    assert records - before == REPEATS * DEFAULT_MAX_REPORT_RECORDS


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
