"""What the status page tests share: a config with a denier and a Kafka handler, and a load thread."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from mixer.api.mixer_v1 import CHECK_METHOD, REPORT_METHOD
from mixer.wire import encode_check_request, encode_report_request
from tests.server.support import ServerProcess, policy_config

KAFKA_HANDLER = "kafka.istio-system"
BLOCKED = "blocked.svc"


def kafka_config(output: Path, bootstrap: str, topic: str) -> str:
    """:func:`policy_config` plus every Report's log entry sent to Kafka through a delivery queue
    that gives a batch up to the spool (and opens its circuit) after two seconds of failures."""
    return policy_config(
        output,
        blocked_host=BLOCKED,
        extra=f"""---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: kafka, namespace: istio-system}}
spec:
  compiledAdapter: kafka
  params:
    brokers: ["{bootstrap}"]
    topic: {topic}
    encoding: json
    acks: "1"
    request_timeout: 1s
    delivery:
      batch_timeout: 100ms
      retry_initial_interval: 100ms
      retry_max_interval: 500ms
      retry_max_elapsed: 2s
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: tokafka, namespace: istio-system}}
spec:
  actions:
  - handler: kafka
    instances: [entry]
""",
    )


class Load(threading.Thread):
    """Checks (one in four for the blocked host, so some are denied) and Reports at a steady pace,
    until :meth:`finish` or ``limit`` seconds; :meth:`pause` holds it between calls."""

    def __init__(self, target: str, *, limit: float = 180.0, pace: float = 0.01) -> None:
        super().__init__(daemon=True, name="status-load")
        self._target = target
        self._limit = limit
        self._pace = pace
        self._run_allowed = threading.Event()
        self._run_allowed.set()
        self._idle = threading.Event()
        self._done = threading.Event()
        self.checks = 0
        self.reports = 0
        self.failures = 0

    def run(self) -> None:
        deadline = time.monotonic() + self._limit
        with grpc.insecure_channel(self._target) as channel:
            check = channel.unary_unary(CHECK_METHOD)
            report = channel.unary_unary(REPORT_METHOD)
            n = 0
            while not self._done.is_set() and time.monotonic() < deadline:
                if not self._run_allowed.is_set():
                    self._idle.set()
                    self._run_allowed.wait(0.1)
                    continue
                self._idle.clear()
                n += 1
                host = BLOCKED if n % 4 == 0 else "reviews.default.svc"
                try:
                    check(
                        encode_check_request(
                            {"destination.service.host": host, "request.api_key": "sk-live-secret"}
                        ).SerializeToString(),
                        timeout=5,
                    )
                    self.checks += 1
                    report(
                        encode_report_request(
                            [{"request.id": f"r{n}-{i}", "destination.service.host": host} for i in range(5)]
                        ).SerializeToString(),
                        timeout=5,
                    )
                    self.reports += 1
                except grpc.RpcError:
                    self.failures += 1
                time.sleep(self._pace)
            self._idle.set()

    def pause(self, timeout: float = 10.0) -> None:
        """Stop sending, and return once no call is in flight."""
        self._run_allowed.clear()
        if not self._idle.wait(timeout):
            raise AssertionError("the load did not pause")

    def resume(self) -> None:
        self._idle.clear()
        self._run_allowed.set()

    def finish(self) -> None:
        self._done.set()
        self._run_allowed.set()
        self.join(10)


def status_json(server: ServerProcess, view: str = "") -> dict[str, Any]:
    status, body = server.get(f"/status{view}.json")
    assert status == 200, body
    data: dict[str, Any] = json.loads(body)
    return data
