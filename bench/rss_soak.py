"""Resident memory of `mixer serve --workers 2` under a steady Report and Check load.

The server runs Istio 1.4's stock telemetry (the metrics, and the access log into a file) with the
Check benchmark's plan policy (bench/config/check, counters in memory), with ``--workers``
workers allowed on every CPU. A closed loop of 100-record Reports and Checks runs for
``--minutes``; every ``--interval`` seconds the resident set of the supervisor and of each worker
is read from /proc/PID/status. Printed: each sample, then per worker the peak and the growth from
the end of the first minute (the caches and pools warmed) to the end.

    .venv/bin/python bench/rss_soak.py [--minutes 5] [--workers 2] [--interval 10]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from check_throughput import requests
from report_fanout import report_bodies
from sidebyside import (
    CHECK_METHOD,
    POLICY,
    RECORDS_PER_REPORT,
    REPORT_METHOD,
    STOCK,
    Endpoint,
    Variant,
    grpc_load,
    running,
)

#: The first minute warms caches, pools and the allocator; growth counts from its end.
WARM_SECONDS = 60.0


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def soak(endpoint: Endpoint, args: argparse.Namespace) -> dict[int, list[tuple[float, float]]]:
    connections = 2 * args.workers
    reports = grpc_load(REPORT_METHOD, report_bodies(), RECORDS_PER_REPORT, args.concurrency, connections)
    checks = grpc_load(CHECK_METHOD, requests(), 1, args.concurrency, connections)
    samples: dict[int, list[tuple[float, float]]] = {}
    started = time.monotonic()
    end = started + args.minutes * 60
    carried = [0, 0]

    async def drive(kind: int) -> None:
        load = (reports, checks)[kind]
        while time.monotonic() < end:
            done, _ = await load(endpoint, min(args.interval, max(0.1, end - time.monotonic())))
            carried[kind] += done

    async def sample() -> None:
        while True:
            elapsed = time.monotonic() - started
            pids = [endpoint.proc.pid, *children(endpoint.proc.pid)]
            line = []
            for pid in pids:
                mib = rss_mib(pid)
                samples.setdefault(pid, []).append((elapsed, mib))
                line.append(f"{pid}: {mib:,.0f} MiB")
            print(
                f"{elapsed:6.0f} s  records {carried[0]:,}  checks {carried[1]:,}  RSS " + ", ".join(line),
                flush=True,
            )
            if time.monotonic() >= end:
                return
            await asyncio.sleep(min(args.interval, max(0.0, end - time.monotonic())))

    await asyncio.gather(drive(0), drive(1), sample())
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    variant = Variant(
        f"stock telemetry + Check policy, --workers {args.workers}",
        "mixer",
        [*STOCK, POLICY / "policy.yaml", POLICY / "memquota.yaml"],
        stdout_file=True,
        extra=("--workers", str(args.workers)),
        pinned=False,
    )
    with tempfile.TemporaryDirectory() as tmp, running(variant, Path(tmp) / "server") as endpoint:
        samples = asyncio.run(soak(endpoint, args))
    print("\n| process | peak RSS | RSS after the first minute | RSS at the end | growth |")
    print("|---|---|---|---|---|")
    for pid, series in samples.items():
        role = "supervisor" if pid == endpoint.proc.pid else f"worker {pid}"
        warm = next((mib for t, mib in series if t >= min(WARM_SECONDS, series[-1][0])), series[0][1])
        last = series[-1][1]
        growth = (last - warm) / warm if warm else 0.0
        peak = max(mib for _, mib in series)
        print(f"| {role} | {peak:,.0f} MiB | {warm:,.0f} MiB | {last:,.0f} MiB | {growth:+.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
