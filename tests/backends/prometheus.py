"""A real Prometheus server on a free 127.0.0.1 port, scraping given targets every second, stopped by PID.

Prometheus answers ``/-/ready`` within a fraction of a second but waits several seconds before
its first scrape, so tests never sleep: :meth:`PrometheusServer.wait_for` polls
``/api/v1/query`` until a predicate holds or a deadline passes. ``promtool_check_metrics`` lints
an exposition with ``promtool check metrics``.

Fixture: ``prometheus_factory`` (call it with the targets; every server it started is stopped
when the test ends). Import it into a test module (or a conftest) to use it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.backends._process import free_port, stop_process, wait_ready

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
#: Prometheus waits up to a scrape interval plus its start-up offset before the first scrape.
QUERY_TIMEOUT = 30.0


def scrape_config(targets: Sequence[str], *, interval: str = "1s", job: str = "mixer") -> str:
    """A prometheus.yml scraping ``targets`` (``host:port``) at ``/metrics`` every ``interval``."""
    listed = ", ".join(json.dumps(target) for target in targets)
    return (
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  scrape_timeout: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "scrape_configs:\n"
        f"- job_name: {job}\n"
        "  metrics_path: /metrics\n"
        f"  static_configs:\n  - targets: [{listed}]\n"
    )


@dataclass
class QueryResult:
    """One series of an instant vector: its labels and value."""

    labels: dict[str, str]
    value: float


class PrometheusServer:
    """One ``prometheus`` process with its config, data and log in ``directory``."""

    def __init__(self, directory: Path, targets: Sequence[str], *, interval: str = "1s") -> None:
        self.directory = directory
        self.port = free_port()
        self.config_path = directory / "prometheus.yml"
        self.config_path.write_text(scrape_config(targets, interval=interval), "utf-8")
        self.log_path = directory / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace") if self.log_path.exists() else ""

    def start(self) -> PrometheusServer:
        argv = [
            PROMETHEUS,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.directory)
        wait_ready(
            self.process,
            self._ready,
            name="prometheus",
            log=self.log,
            timeout=READY_TIMEOUT,
            give_up=self.stop,
            interval=0.05,
        )
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return int(response.status) == 200
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM by PID and wait (SIGKILL if it lingers). Idempotent."""
        if self.process is not None:
            stop_process(self.process, STOP_TIMEOUT)

    def query(self, promql: str) -> list[QueryResult]:
        """An instant query now. :raises AssertionError: Prometheus refused the query."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                answer: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise AssertionError(f"query {promql!r} refused: {err.read().decode()}") from err
        assert answer["status"] == "success", answer
        data = answer["data"]
        if data["resultType"] == "scalar":
            return [QueryResult({}, float(data["result"][1]))]
        return [QueryResult(dict(item["metric"]), float(item["value"][1])) for item in data["result"]]

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[QueryResult]], bool],
        *,
        timeout: float = QUERY_TIMEOUT,
        what: str = "",
    ) -> list[QueryResult]:
        """Poll ``promql`` until ``predicate`` holds for its result; that result.

        :raises AssertionError: the deadline passed (the last result is in the message).
        """
        deadline = time.monotonic() + timeout
        last: list[QueryResult] = []
        while True:
            last = self.query(promql)
            if predicate(last):
                return last
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what or promql}; last result: {last}\n"
                    f"targets: {self.targets()}"
                )
            time.sleep(0.2)

    def targets(self) -> list[dict[str, Any]]:
        """The scrape targets with their health and last error, for failure messages."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as response:
                data: dict[str, Any] = json.loads(response.read())
        except OSError as exc:
            return [{"error": str(exc)}]
        return [
            {"url": t.get("scrapeUrl"), "health": t.get("health"), "error": t.get("lastError")}
            for t in data["data"]["activeTargets"]
        ]


def value_of(results: list[QueryResult]) -> float | None:
    """The value of a one-series result (``sum(...)``), or None when there is no series yet."""
    return results[0].value if len(results) == 1 else None


def promtool_check_metrics(exposition: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics < exposition``: exit 0 when the exposition is clean."""
    return subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """``prometheus_factory(["127.0.0.1:42422"])`` starts a server scraping those targets."""
    started: list[PrometheusServer] = []

    def start(targets: Sequence[str], *, interval: str = "1s") -> PrometheusServer:
        directory = tmp_path / f"prometheus-{len(started)}"
        directory.mkdir()
        server = PrometheusServer(directory, targets, interval=interval)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()
