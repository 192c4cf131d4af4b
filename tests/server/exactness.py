"""The quota exactness run shared by the single-Redis and the Redis Cluster tests: a plan config
for redisquota, client processes that send Checks (and retries) at once, and the per-process
metrics to add up.

Each client process sends its first sends to one server and its retries (same deduplication id,
a new connection) to the next one: with several replicas, a retry is answered by another replica
than the first send, from the record in Redis.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tests.server.support import ServerProcess, http_get, metric_value, wait_until

__all__ = [
    "API_KEY",
    "HANDLER",
    "SAMPLES",
    "ClientRun",
    "config",
    "metrics_by_worker",
    "metrics_of",
    "run_clients",
    "total",
]

API_KEY = "exact-key"
HANDLER = "plans.istio-system"


def config(
    redis_url: str, prefix: str, limit: int, *, timeout: str = "5s", failure_policy: str = "fail_closed"
) -> str:
    # A rolling hour cannot roll over during the test (a grant stays in it for at least 54 minutes);
    # the daily fixed window only adds a second counter to every allocation.
    return f"""
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {{name: metered}}
spec:
  limits:
  - {{name: per_hour, max: {limit}, per: 1h, algorithm: rolling_window, buckets: 10}}
  - {{name: per_day, max: 1000000, per: day}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: plans, namespace: istio-system}}
spec:
  compiledAdapter: redisquota
  params:
    redis_server_url: '{redis_url}'
    key_prefix: '{prefix}'
    # The exactness runs are about atomicity: a slow round trip on a busy two-core machine must
    # not be refused (a timed-out allocation may still have been spent).
    timeout: {timeout}
    failure_policy: {failure_policy}
    # A retry is meant to be answered from the first answer however late a busy machine sends it:
    # the window outlasts the whole run.
    min_deduplication_duration: 10m
    subjects:
      keys:
        inline:
          {API_KEY}: {{subject: sam, plan: metered}}
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
metadata: {{name: plans, namespace: istio-system}}
spec:
  actions:
  - handler: plans
    instances: [plancheck]
"""


CLIENT = """
import json, sys
from mixer.client import SyncMixerClient

target, retry_target, name, checks, retry_every, reconnect_every, key = sys.argv[1:8]
checks, retry_every, reconnect_every = int(checks), int(retry_every), int(reconnect_every)
attributes = {"request.api_key": key, "context.protocol": "http"}
codes, retry_mismatches, client = [], 0, None
for i in range(checks):
    if i % reconnect_every == 0:
        if client is not None:
            client.close()
        client = SyncMixerClient(target, timeout=20)
    dedup = f"{name}-{i}"
    first = client.check(attributes, deduplication_id=dedup).code
    codes.append(first.name)
    if i % retry_every == 0:
        with SyncMixerClient(retry_target, timeout=20) as other:
            if other.check(attributes, deduplication_id=dedup).code != first:
                retry_mismatches += 1
client.close()
print(json.dumps({"codes": codes, "retry_mismatches": retry_mismatches}))
"""


@dataclass(frozen=True, slots=True)
class ClientRun:
    """What the client processes saw: every first send's code, and retries answered differently."""

    codes: list[str]
    retries: int
    retry_mismatches: int
    elapsed: float

    def counts(self) -> dict[str, int]:
        return {code: self.codes.count(code) for code in set(self.codes)}


def run_clients(
    targets: Sequence[str],
    *,
    clients: int,
    checks_per_client: int,
    retry_every: int,
    reconnect_every: int,
    timeout: float = 60.0,
) -> ClientRun:
    """``clients`` processes at once, client *n* sending to ``targets[n % len]`` and retrying on
    the next target."""
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CLIENT,
                targets[n % len(targets)],
                targets[(n + 1) % len(targets)],
                f"client{n}",
                str(checks_per_client),
                str(retry_every),
                str(reconnect_every),
                API_KEY,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(clients)
    ]
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            assert process.returncode == 0, err.decode()
            results.append(json.loads(out))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return ClientRun(
        [code for result in results for code in result["codes"]],
        clients * len(range(0, checks_per_client, retry_every)),
        sum(result["retry_mismatches"] for result in results),
        time.monotonic() - started,
    )


#: Per process: Checks answered, and what its Redis store counted.
SAMPLES = {
    "checks": ("mixer_check_calls_total", {}),
    "allocations": ("mixer_redisquota_allocations_total", {"handler": HANDLER}),
    "denials": ("mixer_redisquota_denials_total", {"handler": HANDLER}),
    "dedup_hits": ("mixer_redisquota_dedup_hits_total", {"handler": HANDLER}),
    "store_failures": ("mixer_redisquota_store_failures_total", {"handler": HANDLER}),
    "fail_open_grants": ("mixer_redisquota_fail_open_grants_total", {"handler": HANDLER}),
}


def metrics_of(server: ServerProcess) -> dict[str, float]:
    """:data:`SAMPLES` of a single-process server."""
    body = server.metrics()
    return {key: metric_value(body, name, **labels) or 0.0 for key, (name, labels) in SAMPLES.items()}


def metrics_by_worker(admin_url: str, workers: int) -> dict[str, dict[str, float]]:
    """:data:`SAMPLES` of each worker, scraping over new connections until every worker answered."""
    seen: dict[str, dict[str, float]] = {}

    def all_seen() -> bool:
        status, body = http_get(admin_url + "/metrics")
        if status == 200:
            for worker in map(str, range(workers)):
                if metric_value(body, "mixer_worker_restarts", worker=worker) is not None:
                    seen[worker] = {
                        key: metric_value(body, name, **labels) or 0.0
                        for key, (name, labels) in SAMPLES.items()
                    }
        return len(seen) == workers

    wait_until(all_seen, 20, "/metrics from every worker")
    return seen


def total(per_process: dict[str, dict[str, float]], key: str) -> float:
    return sum(samples[key] for samples in per_process.values())
