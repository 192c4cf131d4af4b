"""`mixer serve --workers 2`: two processes on shared ports, restarted when killed, stopped together."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from tests.deploy._traffic import http_bag
from tests.server.support import Launcher, check, http_get, report, wait_until

STEADY = 40.0


def ready_info(path: Path) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return info


def readyz_pid(url: str) -> int | None:
    # urllib opens a new connection per request: SO_REUSEPORT spreads them over the workers.
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
            return int(json.loads(response.read())["pid"])
    except OSError:
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_workers_share_the_ports_are_restarted_and_stop_together(
    servers: Launcher, tmp_path: Path
) -> None:
    ready_file = tmp_path / "ready.json"
    # The embedded default: its Prometheus handler must not crash-loop worker 1 on worker 0's port.
    parent = servers.start("--workers", "2", "--ready-file", str(ready_file), wait=False)
    info = wait_until(lambda: ready_info(ready_file), STEADY, "the supervisor's ready file")
    assert info["pid"] == parent.pid
    first = set(info["workers"])
    assert len(first) == 2

    seen: set[int] = set()

    def both_answer() -> bool:
        pid = readyz_pid(parent.http_url)
        if pid is not None:
            seen.add(pid)
        return seen == first

    wait_until(both_answer, STEADY, "/readyz answers from both workers")

    async with grpc.aio.insecure_channel(parent.grpc_target) as channel:
        response = await check(channel, {"destination.service.host": "x.svc"})
        assert response.HasField("precondition")

    ports = set(re.findall(r"prometheus handler \S+: /metrics on 127\.0\.0\.1:(\d+)", parent.stderr()))
    assert len(ports) == 2, parent.stderr()
    assert parent.extra["env"]["MIXER_PROMETHEUS_LISTEN"].rsplit(":", 1)[1] in ports

    victim = min(first)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> set[int] | None:
        current = ready_info(ready_file)
        if current is None:
            return None
        pids = {int(pid) for pid in current["workers"]}
        return pids if victim not in pids and len(pids) == 2 else None

    second: set[int] = wait_until(replaced, STEADY, "the killed worker to be replaced")
    (newcomer,) = second - first
    assert "will be restarted" in parent.stderr()

    def newcomer_answers() -> bool:
        return readyz_pid(parent.http_url) == newcomer

    wait_until(newcomer_answers, STEADY, "the new worker to answer")

    assert parent.stop() == 0
    assert not ready_file.exists()
    for pid in second:
        assert not alive(pid), f"worker {pid} outlived the supervisor"


STOCK = Path(__file__).resolve().parents[2] / "deploy" / "config" / "istio-1.4" / "v1.1"


async def test_workers_serve_the_stock_config_and_the_scrape_port_sums_them(
    servers: Launcher, tmp_path: Path
) -> None:
    ready_file = tmp_path / "ready.json"
    # The stock telemetry config as shipped: one prometheus handler with one listen address.
    parent = servers.start(
        "--workers", "2", "--config", str(STOCK), "--ready-file", str(ready_file), wait=False
    )  # fmt: skip
    info = wait_until(lambda: ready_info(ready_file), STEADY, "the supervisor's ready file")
    workers = {int(pid) for pid in info["workers"]}
    assert len(workers) == 2, parent.stderr()
    scrape = parent.extra["env"]["MIXER_PROMETHEUS_LISTEN"]
    ports = set(re.findall(r"prometheus handler \S+: /metrics on 127\.0\.0\.1:(\d+)", parent.stderr()))
    assert len(ports) == 2, parent.stderr()
    (own,) = ports - {scrape.rsplit(":", 1)[1]}

    # A new channel is a new connection: SO_REUSEPORT spreads them over both workers.
    sent = 0
    answered: set[int] = set()
    deadline = time.monotonic() + STEADY
    while (len(answered) < 2 or sent < 20) and time.monotonic() < deadline:
        async with grpc.aio.insecure_channel(parent.grpc_target) as channel:
            await report(channel, [http_bag()])
        sent += 1
        pid = readyz_pid(parent.http_url)
        if pid is not None:
            answered.add(pid)
    assert answered == workers

    def total(port: str) -> float:
        _, text = http_get(f"http://127.0.0.1:{port}/metrics")
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("istio_requests_total{")
        )

    # Worker 0's port serves both workers' series; worker 1's own port only its share.
    wait_until(lambda: total(scrape.rsplit(":", 1)[1]) == sent, STEADY, f"{sent} requests on the scrape port")
    share = total(own)
    assert 0 < share < sent, f"worker 1 counted {share} of {sent}"
    assert parent.stop() == 0
