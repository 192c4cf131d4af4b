"""Throughput of `mixer serve --workers 2` against one worker, Report and Check, on this machine's cores.

The server runs Istio 1.4's stock telemetry config (deploy/config/istio-1.4/v1.1, the access log on
stdout, discarded) together with the Check benchmark's policy (bench/config/check, counters in
Redis so that the workers share them), with ``--workers 1`` and then ``--workers 2``, allowed on
every CPU. The load comes from ``--clients`` processes, each with four connections (SO_REUSEPORT
spreads connections, not calls, over the workers) and ``--concurrency`` calls in flight, in a
closed loop for ``--seconds``: Reports of 100 records, then Checks. The figures are calls per
second in all, and per server CPU-second (the server processes' own CPU time, from /proc): on a
machine whose load generator shares the cores, the second shows what the workers do with a core.

    .venv/bin/python bench/workers_scaling.py [--seconds 10] [--clients 2] [--concurrency 32]
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
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc

from mixer.attributes import AttributeValue
from mixer.wire import encode_check_request, encode_report_request

ROOT = Path(__file__).resolve().parent.parent
STOCK = ROOT / "deploy" / "config" / "istio-1.4" / "v1.1"
POLICY = ROOT / "bench" / "config" / "check"
METHODS = {"report": "/istio.mixer.v1.Mixer/Report", "check": "/istio.mixer.v1.Mixer/Check"}
CONNECTIONS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_bag(i: int) -> dict[str, AttributeValue]:
    now = datetime.now(UTC)
    return {
        "request.time": now,
        "response.time": now + timedelta(milliseconds=7),
        "context.protocol": "http",
        "context.reporter.kind": "inbound",
        "request.id": f"r{i}",
        "request.path": f"/reviews/{i % 50}",
        "request.method": "GET",
        "request.headers": {"x-request-id": f"r{i}"},
        "destination.service.host": "reviews.default.svc.cluster.local",
        "destination.service.name": "reviews",
        "source.workload.name": f"productpage-{i % 5}",
        "response.code": 200 if i % 10 else 503,
        "response.duration": timedelta(milliseconds=7),
    }


def bodies(kind: str) -> list[bytes]:
    if kind == "report":
        return [
            encode_report_request([http_bag(k * 100 + i) for i in range(100)]).SerializeToString()
            for k in range(10)
        ]
    return [
        encode_check_request(
            {
                "request.api_key": f"bench-key-{i:03d}",
                "source.ip": ipaddress.ip_address(f"10.1.0.{i + 1}"),
                "destination.service.name": "orders",
                "request.method": "GET",
            }
        ).SerializeToString()
        for i in range(100)
    ]


# -- client processes -----------------------------------------------------------------------------


async def client(kind: str, port: int, seconds: float, concurrency: int) -> int:
    payloads = bodies(kind)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(CONNECTIONS)]
    calls = [channel.unary_unary(METHODS[kind]) for channel in channels]
    for call in calls:
        await call(payloads[0])
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        call = calls[k % len(calls)]
        i = k
        while time.perf_counter() < stop:
            await call(payloads[i % len(payloads)])
            done += 1
            i += concurrency

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    for channel in channels:
        await channel.close()
    return done


# -- the server -----------------------------------------------------------------------------------


def cpu_seconds(pids: Sequence[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def ready(http: int) -> bool:
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=0.5) as reply,
    ):
        return bool(reply.status == 200)
    return False


@contextlib.contextmanager
def server(workers: int, redis_url: str, data_dir: Path) -> Iterator[tuple[int, list[int]]]:
    port, http = free_port(), free_port()
    argv = [
        sys.executable, "-m", "mixer", "serve", "--workers", str(workers),
        "--config", str(STOCK), "--config", str(POLICY / "policy.yaml"),
        "--config", str(POLICY / "redisquota.yaml"),
        "--grpc-listen", f"127.0.0.1:{port}", "--http-listen", f"127.0.0.1:{http}",
        "--data-dir", str(data_dir / f"workers-{workers}"), "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "BENCH_REDIS_URL": redis_url, "MIXER_PROMETHEUS_LISTEN": f"127.0.0.1:{free_port()}"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        end = time.monotonic() + 60
        want = workers + 1 if workers > 1 else 1
        pids = [proc.pid]
        while not (ready(http) and len(pids) == want):
            if time.monotonic() > end:
                raise RuntimeError("mixer serve did not become ready")
            time.sleep(0.2)
            pids = [proc.pid, *children(proc.pid)] if workers > 1 else [proc.pid]
        time.sleep(1.0)  # let every worker finish starting
        yield port, pids
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (make system-deps)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait()


def load(kind: str, port: int, pids: Sequence[int], args: argparse.Namespace) -> tuple[float, float]:
    """Calls per second, and per server CPU-second."""
    argv = [sys.executable, __file__, "--client", kind, "--port", str(port)]
    argv += ["--seconds", str(args.seconds), "--concurrency", str(args.concurrency)]
    before = cpu_seconds(pids)
    started = time.perf_counter()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(args.clients)]
    done = sum(int(p.communicate()[0].strip() or 0) for p in procs)
    elapsed = time.perf_counter() - started
    used = cpu_seconds(pids) - before
    return done / elapsed, done / used if used > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--client", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        print(asyncio.run(client(args.client, args.port, args.seconds, args.concurrency)))
        return 0
    print(f"{os.cpu_count()} CPUs; {args.clients} client processes x {args.concurrency} calls in flight")
    figures: dict[tuple[str, int], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, redis_server() as url:
        for workers in (1, 2):
            with server(workers, url, Path(tmp)) as (port, pids):
                for kind in ("report", "check"):
                    figures[kind, workers] = load(kind, port, pids, args)
                    rate, per_cpu = figures[kind, workers]
                    unit = "Reports of 100 records" if kind == "report" else "Checks"
                    print(
                        f"--workers {workers}: {rate:,.0f} {unit}/s, {per_cpu:,.0f} per server CPU-s",
                        flush=True,
                    )
    print("\n| call | 1 worker/s | 2 workers/s | ratio | per CPU-s, 1 | per CPU-s, 2 |")
    print("|---|---|---|---|---|---|")
    for kind in ("report", "check"):
        (one, one_cpu), (two, two_cpu) = figures[kind, 1], figures[kind, 2]
        print(f"| {kind} | {one:,.0f} | {two:,.0f} | {two / one:.2f} | {one_cpu:,.0f} | {two_cpu:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
