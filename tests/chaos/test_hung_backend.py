"""A backend that accepts connections and never answers, next to healthy ones.

A TCP listener in the test accepts every connection and never reads or writes. Two handlers of
one `mixer serve` point at it: the elasticsearch handler (Reports) and a redisquota handler
(Checks for one host, ``fail_open`` after a 3 s timeout). Next to them: a kafka handler on a real
Tansu for the same Reports, and a denier for Checks to another host. For 5 s (20 s with
``MIXER_CHAOS=full``) Checks go to both hosts and Reports keep coming. What must hold: the other
host's Checks and the Reports stay fast (p99 under 1 s, a wide bound: the hung paths take 3 s
and more), every accepted record reaches Kafka, and the hung handlers' calls take their timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from mixer.client import MixerClient
from mixer.status import Code
from tests.backends.kafka import TansuBroker, consume, unique_topic
from tests.chaos.conftest import (
    ROOT,
    Figures,
    count_delivery,
    metric,
    percentile,
    record,
    sized,
    start_server,
)
from tests.e2e.conftest import ES_HANDLER, KAFKA_HANDLER, kafka_request_ids, send_report
from tests.server.support import Launcher

pytestmark = pytest.mark.chaos

DURATION = sized(5.0, 20.0)
#: The redisquota round-trip bound: a Check to the hung path takes this long.
HUNG_TIMEOUT = 3.0
#: Wide for a noisy two-core machine, and still far below what a hung path costs.
BOUND = 1.0
FANOUT = ROOT / "deploy" / "config" / "fanout"


class BlackHole:
    """Accepts TCP connections on 127.0.0.1 and holds them open without reading or writing."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self.held: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                self.held.append(self._listener.accept()[0])

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._listener.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    try:
        yield hole
    finally:
        hole.close()


def config(kafka: str, topic: str, hole: int) -> str:
    return f"""
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: kafka, namespace: istio-system}}
spec:
  compiledAdapter: kafka
  params:
    brokers: ["{kafka}"]
    topic: {topic}
    encoding: json
    acks: "1"
    request_timeout: 2s
    delivery: {{batch_timeout: 20ms, retry_initial_interval: 100ms, retry_max_interval: 500ms}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: elasticsearch, namespace: istio-system}}
spec:
  compiledAdapter: elasticsearch
  params:
    hosts: ["http://127.0.0.1:{hole}"]
    index: chaos-%Y.%m.%d
    request_timeout: 2s
    delivery: {{batch_timeout: 20ms, retry_initial_interval: 100ms, retry_max_interval: 500ms}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: accesslog, namespace: istio-system}}
spec:
  actions:
  - {{handler: kafka, instances: [accesslog]}}
  - {{handler: elasticsearch, instances: [accesslog]}}
---
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {{name: bulk}}
spec:
  limits:
  - {{name: per_day, max: 100000000, per: day}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: hungquota, namespace: istio-system}}
spec:
  compiledAdapter: redisquota
  params:
    redis_server_url: redis://127.0.0.1:{hole}/0
    timeout: {HUNG_TIMEOUT:g}s
    failure_policy: fail_open
    subjects:
      keys:
        inline:
          hung-key: {{subject: hung, plan: bulk}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: plancheck, namespace: istio-system}}
spec:
  compiledTemplate: plancheck
  params:
    api_key: request.api_key | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: hungquota, namespace: istio-system}}
spec:
  match: destination.service.host == "hung.svc"
  actions:
  - {{handler: hungquota, instances: [plancheck]}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: denyall, namespace: istio-system}}
spec:
  compiledAdapter: denier
  params:
    status: {{code: 7, message: not on the guest list}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: nothing, namespace: istio-system}}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: denied, namespace: istio-system}}
spec:
  match: destination.service.host == "denied.svc"
  actions:
  - {{handler: denyall, instances: [nothing]}}
"""


async def timed_checks(target: str, host: str, until: float) -> list[tuple[float, Code]]:
    answers: list[tuple[float, Code]] = []
    async with MixerClient(target, timeout=30) as client:
        while time.monotonic() < until:
            started = time.monotonic()
            answer = await client.check(
                {"destination.service.host": host, "request.api_key": "hung-key", "context.protocol": "http"}
            )
            answers.append((time.monotonic() - started, answer.code))
            await asyncio.sleep(0.01)
    return answers


async def timed_reports(target: str, until: float, accepted: set[str]) -> list[float]:
    latencies: list[float] = []
    prefix = uuid.uuid4().hex[:8]
    n = 0
    async with grpc.aio.insecure_channel(target) as channel:
        while time.monotonic() < until:
            ids = [f"{prefix}-{n + k}" for k in range(10)]
            n += 10
            started = time.monotonic()
            await send_report(channel, ids, timeout=30)
            latencies.append(time.monotonic() - started)
            accepted.update(ids)
            await asyncio.sleep(0.05)
    return latencies


async def test_a_backend_that_never_answers_does_not_slow_the_others(
    launch: Launcher, tansu: TansuBroker, black_hole: BlackHole, tmp_path: Path
) -> None:
    topic = unique_topic("chaos")
    config_path = tmp_path / "hung.yaml"
    config_path.write_text(config(tansu.bootstrap, topic, black_hole.port), "utf-8")
    server = await start_server(
        launch,
        FANOUT / "attributes.yaml",
        "--config",
        str(FANOUT / "accesslog.yaml"),
        "--config",
        str(config_path),
        "--data-dir",
        str(tmp_path / "data"),
        "--reload-interval",
        "0",
    )
    until = time.monotonic() + DURATION
    accepted: set[str] = set()
    good, hung, reports = await asyncio.gather(
        timed_checks(server.grpc_target, "denied.svc", until),
        timed_checks(server.grpc_target, "hung.svc", until),
        timed_reports(server.grpc_target, until, accepted),
    )
    assert black_hole.held, "nothing connected to the hung backend"

    # The hung paths are slow by their timeout, and fail open (quota) or wait (elasticsearch).
    assert {code for _, code in hung} == {Code.OK}
    assert min(latency for latency, _ in hung) >= HUNG_TIMEOUT * 0.9
    assert await metric(server, "mixer_delivery_sent_total", handler=ES_HANDLER) == 0
    # The others are not held up by them.
    assert {code for _, code in good} == {Code.PERMISSION_DENIED}
    good_p99 = percentile([latency for latency, _ in good], 0.99)
    report_p99 = percentile(reports, 0.99)
    assert good_p99 < BOUND, good_p99
    assert report_p99 < BOUND, report_p99

    records = await consume(tansu.bootstrap, [topic], expected=len(accepted), timeout=60)
    seen = kafka_request_ids(records)
    figures = Figures(f"a backend that never answers, for {DURATION:g}s", sent=len(accepted))
    count_delivery(figures, accepted, seen)
    figures.notes.update(
        other_check_p99_ms=round(good_p99 * 1000, 1),
        other_checks=len(good),
        report_p99_ms=round(report_p99 * 1000, 1),
        hung_check_min_ms=round(min(latency for latency, _ in hung) * 1000),
        kafka_sent=int(await metric(server, "mixer_delivery_sent_total", handler=KAFKA_HANDLER)),
        elasticsearch_spooled=int(await metric(server, "mixer_delivery_spool_records", handler=ES_HANDLER)),
    )
    record(figures)
    assert figures.lost == 0
