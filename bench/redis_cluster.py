"""Check throughput of `mixer serve` with redisquota on one Redis and on a three-master Redis Cluster.

The policy and the load are bench/check_throughput.py's (an API key mapped to a plan of two
limits for 100 tenants, an IP allow list, one rate limit and one daily quota); only where the
counters live changes: ``redis://`` (one server) or ``redis+cluster://`` (three masters, the
tenants' counters spread over them by hash tag). The server runs pinned to CPU 0, the load
generator and every Redis process to CPU 1, so each figure is one server core's.

- maximum rate: a closed loop with ``--concurrency`` calls in flight for ``--seconds``, the median
  of ``--rounds`` rounds;
- latency: an open loop at half that maximum rate for ``--seconds``: p50 and p99;
- direct: allocations per second of one ``RedisCounterStore`` in this process (no gRPC), with
  ``--concurrency`` allocations in flight: the client's own cost per Check;
- Redis time: microseconds of Redis CPU per allocation script call (``INFO commandstats``,
  ``usec_per_call`` of ``evalsha``, averaged over the masters), so one Redis core serves about
  a million over that many allocations a second.

    .venv/bin/python bench/redis_cluster.py [--seconds 5] [--rounds 3] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_throughput import (
    CLIENT_CPU,
    Result,
    _stop,
    _wait_grpc,
    free_port,
    measure,
    mixer_server,
    pin,
    redis_server,
    requests,
)

from mixer.quota import Algorithm, CounterRequest, EpochWindow
from mixer.quota.redis_store import RedisCounterStore

MASTERS = 3


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 >= 65536:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _cluster_ok(port: int) -> bool:
    cli = shutil.which("redis-cli") or "redis-cli"
    out = subprocess.run(
        [cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True, check=False
    ).stdout
    return "cluster_state:ok" in out and "cluster_slots_ok:16384" in out


@contextlib.contextmanager
def redis_cluster(directory: Path) -> Iterator[str]:
    """Three masters on CPU 1, formed by ``redis-cli --cluster create``; the ``redis+cluster`` URL."""
    binary = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    if binary is None or cli is None:
        raise SystemExit("redis-server and redis-cli are not installed (make system-deps)")
    ports = [_cluster_port() for _ in range(MASTERS)]
    procs = []
    try:
        for port in ports:
            node = directory / f"node-{port}"
            node.mkdir()
            argv = [
                binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                "--dir", str(node), "--cluster-enabled", "yes",
                "--cluster-config-file", str(node / "nodes.conf"), "--cluster-node-timeout", "1000",
            ]  # fmt: skip
            procs.append(
                subprocess.Popen(
                    argv,
                    stdout=subprocess.DEVNULL,
                    preexec_fn=lambda: pin(CLIENT_CPU),  # noqa: PLW1509 - affinity only
                )
            )
        for port in ports:
            _wait_grpc(port)
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
            capture_output=True,
            check=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while not all(_cluster_ok(port) for port in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)
    finally:
        for proc in procs:
            _stop(proc)


async def direct(url: str, concurrency: int, seconds: float) -> float:
    """Allocations per second of one store (two counters each, 100 subjects), in this process."""
    store = RedisCounterStore(url, key_prefix="bench:direct:", pool_size=concurrency, timeout=5.0)
    window = EpochWindow(86400)
    batches = [
        [
            CounterRequest(
                f"plan/standard/{limit}/subject=t{n}", 1, 10**9, Algorithm.FIXED_WINDOW,
                window=window, group=f"plan/standard/subject=t{n}",
            )
            for limit in ("per_second", "per_day")
        ]
        for n in range(100)
    ]  # fmt: skip
    done = 0
    try:
        for batch in batches[:10]:
            await store.allocate(batch)
        stop = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < stop:
                await store.allocate(batches[i % len(batches)])
                done += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return done / (time.perf_counter() - started)
    finally:
        await store.close()


def redis_usec_per_call(url: str) -> float:
    """Redis's own CPU microseconds per ``EVALSHA``, over every master the URL names."""
    import redis

    if url.startswith("redis+cluster://"):
        nodes = [n.rsplit(":", 1) for n in url.removeprefix("redis+cluster://").split(",")]
    else:
        nodes = [url.removeprefix("redis://").removesuffix("/0").rsplit(":", 1)]
    usec = calls = 0.0
    for host, port in nodes:
        with redis.Redis(host=host, port=int(port)) as client:
            stats = client.info("commandstats").get("cmdstat_evalsha", {})
            usec += float(stats.get("usec", 0))
            calls += float(stats.get("calls", 0))
    return usec / calls if calls else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--latency-seconds", type=float, default=0.0, help="length of the half-rate run (default --seconds)"
    )
    args = parser.parse_args(argv)
    pin(CLIENT_CPU)
    bodies = requests()
    rows: list[tuple[Result, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        with redis_server() as url:
            rate = asyncio.run(direct(url, args.concurrency, args.seconds))
            print(f"direct, one Redis: {rate:,.0f} allocations/s", flush=True)
            with mixer_server(
                "redisquota, one Redis", "redisquota", {"BENCH_REDIS_URL": url}, Path(tmp)
            ) as target:
                rows.append((measure(target, bodies, args), rate, redis_usec_per_call(url)))
        with redis_cluster(Path(tmp)) as url:
            rate = asyncio.run(direct(url, args.concurrency, args.seconds))
            print(f"direct, Redis Cluster: {rate:,.0f} allocations/s", flush=True)
            with mixer_server(
                "redisquota, Redis Cluster (3 masters)",
                "redisquota",
                {"BENCH_REDIS_URL": url},
                Path(tmp) / "cluster",
            ) as target:
                rows.append((measure(target, bodies, args), rate, redis_usec_per_call(url)))
    print(
        "\n| counters in | Checks/s (one core) | p50 at half rate | p99 at half rate | failed "
        "| direct allocations/s (one process) | Redis µs per allocation |"
    )
    print("|---|---|---|---|---|---|---|")
    for r, rate, usec in rows:
        print(
            f"| {r.name} | {r.rate:,.0f} | {r.p50:.2f} ms | {r.p99:.2f} ms | {r.failures} "
            f"| {rate:,.0f} | {usec:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
