"""The prometheus adapter under `mixer serve`, scraped by a real Prometheus: one process, then workers."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mixer.attributes import AttributeValue
from mixer.client import MixerClient
from tests.backends.prometheus import PrometheusServer, promtool_check_metrics, value_of
from tests.server.support import (
    Launcher,
    ServerProcess,
    free_port,
    http_get,
    launcher,
    metric_value,
    wait_until,
)

STEADY = 40.0


def web_request(i: int) -> dict[str, AttributeValue]:
    """An inbound HTTP request to "web", as a proxy reports it (the stock rules' input)."""
    now = datetime.now(UTC)
    return {
        "request.time": now,
        "response.time": now + timedelta(milliseconds=3),
        "context.protocol": "http",
        "context.reporter.kind": "inbound",
        "destination.service.name": "web",
        "destination.service.host": "web.default.svc.cluster.local",
        "request.id": f"req-{i}",
        "request.method": "GET",
        "request.path": "/",
        "response.code": 200,
    }


async def send_reports(target: str, count: int, *, fresh_connections: bool) -> None:
    """``count`` Report calls of one record each; each on a new connection when asked (so that
    SO_REUSEPORT spreads them over the workers)."""
    if not fresh_connections:
        async with MixerClient(target) as client:
            for i in range(count):
                await client.report([web_request(i)])
        return
    for i in range(count):
        async with MixerClient(target) as client:
            await client.report([web_request(i)])


def scraped_total(address: str) -> float:
    status, text = http_get(f"http://{address}/metrics")
    assert status == 200
    return metric_value(text, "istio_requests_total", destination_service_name="web") or 0.0


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Launcher]:
    with launcher(tmp_path) as launch:
        yield launch


@dataclass
class Scraped:
    """One Prometheus for the module (its first scrape comes seconds after start: paid once),
    scraping an address for each test's server."""

    prometheus: PrometheusServer
    one_process: str
    workers: str


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    one, workers = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    prometheus = PrometheusServer(tmp_path_factory.mktemp("prometheus"), [one, workers]).start()
    try:
        yield Scraped(prometheus, one, workers)
    finally:
        prometheus.stop()


async def test_one_process_reports_reach_a_real_prometheus(
    servers: Launcher, scraped: Scraped, tmp_path: Path
) -> None:
    prometheus, scrape = scraped.prometheus, scraped.one_process
    server = servers.start(env={"MIXER_PROMETHEUS_LISTEN": scrape, "TMPDIR": str(tmp_path)})

    count = 17
    await send_reports(server.grpc_target, count, fresh_connections=False)
    assert scraped_total(scrape) == count

    query = f'sum(istio_requests_total{{destination_service_name="web", instance="{scrape}"}})'
    result = prometheus.wait_for(query, lambda r: value_of(r) == count, what=f"{query} == {count}")
    assert value_of(result) == count

    status, exposition = http_get(f"http://{scrape}/metrics")
    assert status == 200
    lint = promtool_check_metrics(exposition)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def ready_workers(path: Path) -> list[int] | None:
    try:
        info: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return [int(pid) for pid in info["workers"]]


def worker_ports(server: ServerProcess) -> set[str]:
    return set(re.findall(r"prometheus handler \S+: /metrics on 127\.0\.0\.1:(\d+)", server.stderr()))


async def test_workers_one_scrape_sums_every_worker_and_survives_restarts(
    servers: Launcher, scraped: Scraped, tmp_path: Path
) -> None:
    prometheus, scrape = scraped.prometheus, scraped.workers
    query = f'sum(istio_requests_total{{destination_service_name="web", instance="{scrape}"}})'
    ready_file = tmp_path / "ready.json"
    parent = servers.start(
        "--workers",
        "2",
        "--ready-file",
        str(ready_file),
        env={"MIXER_PROMETHEUS_LISTEN": scrape, "TMPDIR": str(tmp_path)},
        wait=False,
    )
    first: list[int] = wait_until(lambda: ready_workers(ready_file), STEADY, "the workers to be ready")

    count = 40
    await send_reports(parent.grpc_target, count, fresh_connections=True)

    # Both workers took a share (each serves its own share on its own port)...
    ports = wait_until(
        lambda: worker_ports(parent) if len(worker_ports(parent)) == 2 else None, STEADY, "ports"
    )
    other = next(port for port in ports if f"127.0.0.1:{port}" != scrape)
    share = scraped_total(f"127.0.0.1:{other}")
    assert 0 < share < count, f"one worker took {share} of {count}: the spread is not tested"
    # ... and the configured port serves the sum.
    assert scraped_total(scrape) == count

    result = prometheus.wait_for(query, lambda r: value_of(r) == count, what=f"{query} == {count}")
    assert value_of(result) == count
    status, exposition = http_get(f"http://{scrape}/metrics")
    assert status == 200
    lint = promtool_check_metrics(exposition)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    # Worker 1 dies: what it had counted stays in the total, and its successor adds to it.
    victim = first[1]  # the ready file lists the workers by index
    os.kill(victim, signal.SIGKILL)

    def replaced() -> list[int] | None:
        pids = ready_workers(ready_file)
        return pids if pids is not None and victim not in pids else None

    wait_until(replaced, STEADY, "worker 1 to be replaced")
    assert scraped_total(scrape) == count
    more = 20
    await send_reports(parent.grpc_target, more, fresh_connections=True)
    assert scraped_total(scrape) == count + more
    prometheus.wait_for(query, lambda r: value_of(r) == count + more, what=f"{query} == {count + more}")
    # The counter never went down in between (a partial drop would read as a reset).
    series = f'istio_requests_total{{destination_service_name="web", instance="{scrape}"}}'
    resets = prometheus.query(f"resets({series}[5m])")
    assert [r.value for r in resets] == [0.0]

    assert parent.stop() == 0
