"""Memory a caller's data can pin: after large records are written, RSS comes back to its plateau.

A real `mixer serve` writes an access log to a file; 5,000 records with 100 KB paths go in (over
gRPC Report, then as 64 KB syslog datagrams, which anyone can send over UDP). Once every
accepted record is on disk, the server's resident set may be only a bounded amount above what
it was after a warm-up: caches and buffers are bounded in bytes, not in entries.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import grpc.aio

from mixer.attributes import AttributeValue
from mixer.server._malloc import TRIM_INTERVAL
from tests.server.support import Launcher, ServerProcess, free_port, metric_value, report, wait_until

RECORDS = 5_000
PATH_BYTES = 100 * 1024
#: Growth allowed once writes drained. Caches hold at most a few MiB and the bounded buffers (the
#: stdio buffer's 32 MiB of lines, Reports in flight) are freed once drained; the server hands the
#: heaps' free pages back every few seconds (mixer/server/_malloc.py). Without that, allocator
#: slack alone left 135 MiB on a busy machine; a cache bounded by count grew by 700 MiB.
MAX_GROWTH_MIB = 64
WRITE_TIMEOUT = 300.0

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: tofile, namespace: istio-system}}
spec:
  compiledAdapter: stdio
  params:
    outputPath: {output}
    outputAsJson: true
    maxMegabytesBeforeRotation: 0
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: accesslog, namespace: istio-system}}
spec:
  compiledTemplate: logentry
  params:
    severity: '"Info"'
    timestamp: request.time
    variables:
      requestId: request.id | ""
      url: request.path | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: logall, namespace: istio-system}}
spec:
  actions:
  - handler: tofile
    instances: [accesslog]
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def line_count(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def start(servers: Launcher, tmp_path: Path, *extra: str) -> tuple[ServerProcess, Path]:
    output = tmp_path / "access.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(output=output), "utf-8")
    server = servers.start(
        "--config", str(config), "--reload-interval", "0", "--log-level", "WARNING", *extra
    )
    return server, output


def settled_rss(server: ServerProcess, output: Path, expected: int) -> float:
    """RSS once ``expected`` lines are on disk and the server has had a moment to release memory."""
    wait_until(lambda: line_count(output) >= expected, WRITE_TIMEOUT, f"{expected} lines in {output}", 1.0)
    # Lowest of the readings over one period of the server's heap trimming and a margin: the
    # flush thread and garbage collection settle in well under this.
    readings = []
    deadline = time.monotonic() + TRIM_INTERVAL + 2.0
    while time.monotonic() < deadline:
        readings.append(rss_mib(server.pid))
        time.sleep(0.2)
    return min(readings)


def big_bag(i: int) -> dict[str, AttributeValue]:
    return {
        "request.id": f"r{i}",
        "request.time": datetime.now(UTC),
        "request.path": "/" + f"{i:08d}" * (PATH_BYTES // 8),
    }


async def send_reports(server: ServerProcess, first: int, count: int, per_call: int = 20) -> None:
    """Sends every record once; a call the server refuses because the writer's bounded buffer is
    full (UNAVAILABLE, nothing of it accepted) is sent again after a pause, as a proxy would."""
    deadline = time.monotonic() + WRITE_TIMEOUT
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        for start_at in range(first, first + count, per_call):
            bags = [big_bag(i) for i in range(start_at, min(start_at + per_call, first + count))]
            while True:
                try:
                    await report(channel, bags)
                    break
                except grpc.aio.AioRpcError as err:
                    if err.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)


def test_report_records_with_large_paths_leave_rss_at_its_plateau(servers: Launcher, tmp_path: Path) -> None:
    server, output = start(servers, tmp_path)
    # Warm-up: the first large records grow the heap to its working size.
    asyncio.run(send_reports(server, 0, 500))
    before = settled_rss(server, output, 500)
    asyncio.run(send_reports(server, 500, RECORDS))
    after = settled_rss(server, output, 500 + RECORDS)
    lines = output.read_text("utf-8").splitlines()
    print(f"report: RSS {before:.0f} MiB -> {after:.0f} MiB")
    assert len(lines) == 500 + RECORDS
    assert len(json.loads(lines[-1])["url"]) > PATH_BYTES
    assert after - before < MAX_GROWTH_MIB, f"RSS {before:.0f} MiB -> {after:.0f} MiB"


def syslog_datagram(i: int) -> bytes:
    record = {
        "msec": f"{time.time():.3f}",
        "request_id": f"s{i}",
        "request_uri": "/" + f"{i:08d}" * ((63 * 1024) // 8),
        "status": "200",
    }
    return b"<190>May  6 07:08:09 web-1 nginx: " + json.dumps(record).encode()


def syslog_count(server: ServerProcess, result: str) -> float:
    return metric_value(server.metrics(), "mixer_syslog_datagrams_total", result=result) or 0.0


def send_datagrams(server: ServerProcess, port: int, first: int, count: int) -> float:
    """Send ``count`` datagrams at about the pace the server takes them in; how many it accepted.

    A socket's receive buffer holds only a few 64 KB datagrams, so they go out a couple of
    milliseconds apart; what the kernel still drops on a loaded machine is not counted.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(first, first + count):
            sock.sendto(syslog_datagram(i), ("127.0.0.1", port))
            time.sleep(0.002)

    def settled() -> float | None:
        before = syslog_count(server, "accepted")
        time.sleep(1.0)
        after = syslog_count(server, "accepted")
        return after if after == before else None

    return float(wait_until(settled, 60.0, "the syslog receiver to take in the datagrams"))


def test_syslog_datagrams_with_large_paths_leave_rss_at_its_plateau(
    servers: Launcher, tmp_path: Path
) -> None:
    port = free_port()
    server, output = start(servers, tmp_path, "--syslog-listen", f"127.0.0.1:{port}")
    accepted = send_datagrams(server, port, 0, 500)
    before = settled_rss(server, output, int(accepted))
    accepted = send_datagrams(server, port, 500, RECORDS)
    after = settled_rss(server, output, int(accepted))
    print(f"syslog: RSS {before:.0f} MiB -> {after:.0f} MiB, {accepted:.0f} datagrams accepted")
    assert accepted > RECORDS / 2, "most datagrams should reach a server on loopback"
    assert after - before < MAX_GROWTH_MIB, (
        f"RSS {before:.0f} MiB -> {after:.0f} MiB ({accepted:.0f} accepted)"
    )
