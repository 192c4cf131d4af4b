"""OTLP span encoding in process: the compiled encoder (mixer/spans/_cspan.pyx) against the Python path.

Instances are what deploy/config/fanout's tracespan builds from an Istio sidecar's HTTP request:
B3 ids, times, sizes, addresses and 14 span tags, with a request id, trace id and path of their
own per instance (as real traffic has; values that repeat from request to request stay in the
Python path's attribute cache). Both paths encode the same instances, alternating in ``--rounds``
rounds; the median per path is printed, after checking that both write the same bytes.

    .venv/bin/python bench/span_encoding.py [--seconds 1] [--rounds 7]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from mixer.spans import otlp, span_from_instance
from mixer.templates import TraceSpanInstance

START = datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=UTC)


def instance(i: int) -> TraceSpanInstance:
    ids = os.urandom(16).hex()
    return TraceSpanInstance(
        name="tracespan.istio-system",
        trace_id=ids,
        span_id=ids[16:],
        parent_span_id=os.urandom(8).hex() if i % 2 else "",
        span_name="reviews.default.svc.cluster.local",
        start_time=START + timedelta(milliseconds=i),
        end_time=START + timedelta(milliseconds=i, microseconds=7250 + i),
        http_status_code=503 if i % 10 == 0 else 200,
        client_span=False,
        rewrite_client_span_id=False,
        source_name="productpage-v1",
        destination_name="reviews-v2",
        source_ip=ipaddress.ip_address(f"10.0.{i % 4}.{i % 200 + 1}"),
        destination_ip=ipaddress.ip_address("10.44.1.9"),
        request_size=0,
        request_total_size=812,
        response_size=0,
        response_total_size=512 + i,
        api_protocol="http",
        span_tags={
            "traceparent": "",
            "tracestate": "",
            "http.method": "GET",
            "http.url": f"/reviews/{i}",
            "http.host": "reviews:9080",
            "user_agent": "python-requests/2.22.0",
            "guid:x-request-id": f"{ids[:8]}-{ids[8:12]}-{ids[12:16]}-{ids[16:20]}-{ids[20:]}",
            "source.namespace": "default",
            "source.version": "v1",
            "destination.namespace": "default",
            "destination.version": "v2",
            "destination.service": "reviews.default.svc.cluster.local",
            "response.flags": "-",
            "grpc.status": "",
        },
    )


def rate(encode: Callable[[], object], count: int, seconds: float) -> float:
    done = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        encode()
        done += count
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    compiled = otlp.compiled
    if compiled is None:
        raise SystemExit("the compiled span encoder is not built: nothing to compare")
    batches = [[instance(i) for i in range(1000)] for _ in range(20)]
    turn = iter(range(1 << 62))

    def python_path() -> None:
        otlp.cspan = None
        try:
            for item in batches[next(turn) % len(batches)]:
                otlp.encode_instance(item)
        finally:
            otlp.cspan = compiled

    def compiled_path() -> None:
        for item in batches[next(turn) % len(batches)]:
            otlp.encode_instance(item)

    for item in batches[0]:
        answer = compiled.encode(item)
        assert answer is not None
        assert answer[0] == otlp.encode_span(span_from_instance(item))
    variants = {"Python path": python_path, "compiled (mixer.spans._cspan)": compiled_path}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, encode in variants.items():
            rates[name].append(rate(encode, 1000, args.seconds))
    medians = {name: 1e6 / statistics.median(values) for name, values in rates.items()}
    for name, per_span in medians.items():
        print(f"{name}: {per_span:.1f} us per span (median of {args.rounds} rounds)")
    print(f"span encoding x{medians['Python path'] / medians['compiled (mixer.spans._cspan)']:.2f}")


if __name__ == "__main__":
    main()
