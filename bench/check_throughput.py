"""Check throughput of `mixer serve` with a realistic policy, as a ratio of a trivial servicer's.

The policy (bench/config/check/): an API key mapped to a plan, an IP allow list, one rate limit and
one daily quota, with counters in process memory (memquota) and in Redis (redisquota). The trivial
servicer answers every Check with the same precomputed bytes over the same gRPC stack: the
transport ceiling. Every server runs pinned to CPU 0; the load generator (and Redis) to CPU 1, so
each figure is one server core's. For each server:

- maximum rate: a closed loop with ``--concurrency`` calls in flight for ``--seconds``, the median
  of ``--rounds`` rounds;
- latency: an open loop at half that maximum rate for ``--latency-seconds`` (default
  ``--seconds``; 60 shows the pauses of full garbage collections): p50, p99 and the worst call.

    .venv/bin/python bench/check_throughput.py [--seconds 5] [--rounds 3] [--concurrency 64] \
        [--latency-seconds 60] [--only memquota,redisquota]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc

from mixer.decision import CheckOutcome
from mixer.status import OK
from mixer.wire import build_check_response, encode_check_request

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "bench" / "config" / "check"
CHECK_METHOD = "/istio.mixer.v1.Mixer/Check"
SERVER_CPU = 0
CLIENT_CPU = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


def requests(n: int = 100) -> list[bytes]:
    """Pre-encoded Checks from 100 tenants, as a sidecar sends them."""
    out = []
    for i in range(n):
        attrs = {
            "request.api_key": f"bench-key-{i:03d}",
            "source.ip": ipaddress.ip_address(f"10.1.{i // 250}.{i % 250 + 1}"),
            "destination.service.name": "orders",
            "request.method": "GET",
            "request.path": f"/v1/orders/{i}",
            "context.protocol": "http",
            "request.headers": {":authority": "orders", "user-agent": "bench/1.0", "x-request-id": f"r{i}"},
        }
        out.append(encode_check_request(attrs).SerializeToString())
    return out


# -- trivial servicer ---------------------------------------------------------------------------


async def _trivial(port: int) -> None:
    answer = build_check_response(CheckOutcome(OK, timedelta(minutes=1), 10000))
    body = answer.SerializeToString()

    async def check(request: bytes, context: object) -> bytes:
        return body

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "istio.mixer.v1.Mixer", {"Check": grpc.unary_unary_rpc_method_handler(check)}
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# -- processes ----------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen[bytes]


def _start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        preexec_fn=lambda: pin(SERVER_CPU),  # noqa: PLW1509 - affinity only
    )


def _wait_grpc(port: int, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _wait_ready(http_port: int, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        url = f"http://127.0.0.1:{http_port}/readyz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=0.5) as reply:
            if reply.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("mixer serve did not become ready")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def trivial_server() -> Iterator[Target]:
    port = free_port()
    proc = _start([sys.executable, __file__, "--trivial-server", str(port)])
    try:
        _wait_grpc(port)
        yield Target("trivial servicer", port, proc)
    finally:
        _stop(proc)


@contextlib.contextmanager
def mixer_server(name: str, store: str, env: dict[str, str], data_dir: Path) -> Iterator[Target]:
    port, http = free_port(), free_port()
    argv = [
        sys.executable, "-m", "mixer", "serve",
        "--config", str(POLICY / "policy.yaml"), "--config", str(POLICY / f"{store}.yaml"),
        "--grpc-listen", f"127.0.0.1:{port}", "--http-listen", f"127.0.0.1:{http}",
        "--admin-listen", "127.0.0.1:0",
        "--data-dir", str(data_dir / store), "--log-level", "warning",
    ]  # fmt: skip
    proc = _start(argv, env)
    try:
        _wait_ready(http)
        yield Target(name, port, proc)
    finally:
        _stop(proc)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (make system-deps)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        preexec_fn=lambda: pin(CLIENT_CPU),  # noqa: PLW1509
    )
    try:
        _wait_grpc(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)


# -- load ---------------------------------------------------------------------------------------


async def closed_loop(port: int, bodies: Sequence[bytes], concurrency: int, seconds: float) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(CHECK_METHOD)
        for body in bodies[:10]:
            await call(body)  # warm up the connection and the server's caches
        done = 0
        stop = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < stop:
                await call(bodies[i % len(bodies)])
                done += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return done / (time.perf_counter() - started)


async def open_loop(
    port: int, bodies: Sequence[bytes], rate: float, seconds: float
) -> tuple[float, float, float, int]:
    """Calls at a fixed rate; latencies of the calls (ms): p50, p99, max, and how many failed."""
    latencies: list[float] = []
    failures = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(CHECK_METHOD)
        await call(bodies[0])

        async def one(body: bytes) -> None:
            nonlocal failures
            sent = time.perf_counter()
            try:
                await call(body)
            except grpc.aio.AioRpcError:
                failures += 1
                return
            latencies.append((time.perf_counter() - sent) * 1000)

        interval = 1.0 / rate
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(bodies[i % len(bodies)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return p50, p99, latencies[-1], failures


@dataclass
class Result:
    name: str
    rate: float
    p50: float
    p99: float
    worst: float
    failures: int


def measure(target: Target, bodies: Sequence[bytes], args: argparse.Namespace) -> Result:
    rates = [
        asyncio.run(closed_loop(target.port, bodies, args.concurrency, args.seconds))
        for _ in range(args.rounds)
    ]
    rate = statistics.median(rates)
    seconds = args.latency_seconds or args.seconds
    p50, p99, worst, failures = asyncio.run(open_loop(target.port, bodies, rate / 2, seconds))
    rounds = ", ".join(f"{r:,.0f}" for r in rates)
    print(
        f"{target.name}: {rate:,.0f} calls/s (rounds {rounds}); at {rate / 2:,.0f}/s for {seconds:g}s "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.1f} ms, {failures} failed",
        flush=True,
    )
    return Result(target.name, rate, p50, p99, worst, failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-seconds", type=float, default=0.0)
    parser.add_argument(
        "--only", default="memquota,redisquota", help="which mixer servers to measure beside the trivial one"
    )
    parser.add_argument("--trivial-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trivial_server:
        asyncio.run(_trivial(args.trivial_server))
        return 0
    pin(CLIENT_CPU)
    bodies = requests()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        with trivial_server() as target:
            results.append(measure(target, bodies, args))
        only = set(args.only.split(","))
        if "memquota" in only:
            with mixer_server("mixer serve, memquota", "memquota", {}, Path(tmp)) as target:
                results.append(measure(target, bodies, args))
        if "redisquota" in only:
            with (
                redis_server() as url,
                mixer_server(
                    "mixer serve, redisquota", "redisquota", {"BENCH_REDIS_URL": url}, Path(tmp)
                ) as target,
            ):
                results.append(measure(target, bodies, args))
    base = results[0].rate
    print("\n| server | calls/s | ratio to trivial | p50 at half rate | p99 at half rate | max |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.name} | {r.rate:,.0f} | {r.rate / base:.2f} | {r.p50:.2f} ms | {r.p99:.2f} ms "
            f"| {r.worst:.1f} ms |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
