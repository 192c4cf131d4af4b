"""Decode rate of a realistic Istio 1.4 ReportRequest: 100 HTTP records, one shared dictionary.

Each record has 30 attributes: 20 strings, 3 string maps (request.headers with 11 entries and two
label maps), 3 integers, 2 timestamps, a duration and an IP address.

Run: ``.venv/bin/python bench/wire_decode.py [--seconds N] [--profile]``. Prints records/s for
decoding alone and for decoding plus reading one header of every record, from the fastest of
many runs (the rate an undisturbed core reaches), for the compiled decoder (when it is built) and
the pure-Python one, measured in alternation in one run; ``--profile`` profiles the decoder in use.
"""

from __future__ import annotations

import argparse
import cProfile
import ipaddress
import pstats
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from mixer.attributes import AttributeValue
from mixer.wire import ReportEncoding, _fast, decode_report_request, encode_report_request

RECORDS = 100


def _record(i: int) -> dict[str, AttributeValue]:
    start = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
    return istio_http_record(i, start, str(uuid.UUID(int=i * 7919 + 1)), f"{i:032x}")


def istio_http_record(i: int, start: datetime, request_id: str, trace_id: str) -> dict[str, AttributeValue]:
    """Record ``i`` of a batch as an Istio 1.4 sidecar reports an HTTP request (shared by the benches)."""
    when = start + timedelta(milliseconds=37 * i)
    return {
        "source.uid": f"kubernetes://productpage-v1-6b746f74dc-{i % 4}x9kq.default",
        "source.principal": "cluster.local/ns/default/sa/bookinfo-productpage",
        "source.workload.name": "productpage-v1",
        "source.workload.namespace": "default",
        "source.labels": {"app": "productpage", "version": "v1", "pod-template-hash": "6b746f74dc"},
        "destination.uid": "kubernetes://reviews-v2-7bf8c9648f-pmd2k.default",
        "destination.principal": "cluster.local/ns/default/sa/bookinfo-reviews",
        "destination.workload.name": "reviews-v2",
        "destination.workload.namespace": "default",
        "destination.service.host": "reviews.default.svc.cluster.local",
        "destination.service.name": "reviews",
        "destination.ip": ipaddress.IPv4Address("10.44.1.9"),
        "destination.labels": {"app": "reviews", "version": "v2", "pod-template-hash": "7bf8c9648f"},
        "request.headers": {
            ":authority": "reviews:9080",
            ":path": f"/reviews/{i}",
            ":method": "GET",
            "user-agent": "python-requests/2.22.0",
            "accept": "*/*",
            "accept-encoding": "gzip, deflate",
            "x-request-id": request_id,
            "x-b3-traceid": trace_id,
            "x-b3-spanid": trace_id[16:],
            "x-b3-sampled": "1",
            "x-forwarded-proto": "http",
        },
        "request.id": request_id,
        "request.host": "reviews:9080",
        "request.method": "GET",
        "request.path": f"/reviews/{i}",
        "request.scheme": "http",
        "request.useragent": "python-requests/2.22.0",
        "request.total_size": 812,
        "request.time": when,
        "response.code": 200 if i % 10 else 503,
        "response.total_size": 512 + i,
        "response.time": when + timedelta(microseconds=7250 + i),
        "response.duration": timedelta(microseconds=7250 + i),
        "context.protocol": "http",
        "context.reporter.kind": "inbound",
        "context.reporter.uid": "kubernetes://reviews-v2-7bf8c9648f-pmd2k.default",
        "context.proxy_error_code": "-",
    }


def report_request_bytes(records: int = RECORDS) -> bytes:
    request = encode_report_request(
        [_record(i) for i in range(records)], ReportEncoding.INDEPENDENT_ENCODING, use_default_words=True
    )
    return request.SerializeToString()


def _rates(runs: dict[str, Callable[[], object]], seconds: float) -> dict[str, float]:
    """Records/s of each run: the fastest of many timed calls (on a shared machine, the least
    disturbed one), the runs taking turns so that a busy spell slows them all alike."""
    best = dict.fromkeys(runs, float("inf"))
    for run in runs.values():
        run()
    deadline = time.perf_counter() + seconds * len(runs)
    while time.perf_counter() < deadline:
        for name, run in runs.items():
            start = time.process_time()
            run()
            best[name] = min(best[name], time.process_time() - start)
    return {name: RECORDS / elapsed for name, elapsed in best.items()}


@contextmanager
def _decoder(module: _fast.CompiledDecoder | None) -> Iterator[None]:
    saved = _fast.cdecode
    _fast.cdecode = module
    try:
        yield
    finally:
        _fast.cdecode = saved


def _with(module: _fast.CompiledDecoder | None, run: Callable[[], object]) -> Callable[[], object]:
    def wrapped() -> object:
        with _decoder(module):
            return run()

    return wrapped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    data = report_request_bytes()
    bags = decode_report_request(data)
    print(f"{len(data)} bytes, {len(bags)} records, {len(bags[0])} attributes in each")
    print(f"decoder in use: {_fast.describe_decoder()}")

    def decode() -> object:
        return decode_report_request(data)

    def decode_and_read() -> object:
        for bag in decode_report_request(data):
            bag.get_map_value("request.headers", "x-request-id")
        return None

    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [decode() for _ in range(200)])
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    decoders: dict[str, _fast.CompiledDecoder | None] = {"pure Python": None}
    if _fast.compiled is not None:
        decoders = {"compiled": _fast.compiled, **decoders}
    for label, run in (("decode", decode), ("decode + one header", decode_and_read)):
        rates = _rates({name: _with(module, run) for name, module in decoders.items()}, args.seconds)
        for name, rate in rates.items():
            print(f"{label + ' (' + name + '):':<36} {rate:>10,.0f} records/s {1e6 / rate:>7.2f} us/record")


if __name__ == "__main__":
    main()
