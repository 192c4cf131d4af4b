"""Exact plan quotas across processes: `mixer serve --workers 2` counting in one real Redis, driven by
four client processes at once. Exactly the plan's limit is granted, whichever worker answers, and
a retried Check (same deduplication id, likely another worker) replays its first answer."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.backends.redis import RedisServer, redis_server, unique_prefix
from tests.server.support import Launcher, http_get, metric_value, wait_until

__all__ = ["redis_server"]  # the fixture used below

LIMIT = 500
CLIENTS = 4
CHECKS_PER_CLIENT = 300
#: Every RETRY_EVERY-th Check is sent again with the same deduplication id, over a new connection.
RETRY_EVERY = 10
#: A new channel (a new connection, spread over the workers by SO_REUSEPORT) every this many Checks.
RECONNECT_EVERY = 25
API_KEY = "exact-key"


def config(redis_url: str, prefix: str) -> str:
    # A rolling hour cannot roll over during the test (a grant stays in it for at least 54 minutes);
    # the daily fixed window only adds a second counter to every allocation.
    return f"""
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {{name: metered}}
spec:
  limits:
  - {{name: per_hour, max: {LIMIT}, per: 1h, algorithm: rolling_window, buckets: 10}}
  - {{name: per_day, max: 1000000, per: day}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: plans, namespace: istio-system}}
spec:
  compiledAdapter: redisquota
  params:
    redis_server_url: {redis_url}
    key_prefix: '{prefix}'
    # The test is about atomicity: a slow round trip on a busy two-core machine must not be
    # refused (a timed-out allocation may still have been spent).
    timeout: 5s
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

target, name, checks, retry_every, reconnect_every, key = sys.argv[1:7]
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
        with SyncMixerClient(target, timeout=20) as other:
            if other.check(attributes, deduplication_id=dedup).code != first:
                retry_mismatches += 1
client.close()
print(json.dumps({"codes": codes, "retry_mismatches": retry_mismatches}))
"""


def ready_workers(path: Path) -> list[int] | None:
    try:
        workers = json.loads(path.read_text("utf-8"))["workers"]
    except (FileNotFoundError, ValueError, KeyError):
        return None
    return list(workers) if len(workers) == 2 else None


HANDLER = "plans.istio-system"
#: Per worker: Checks answered, and what its Redis store counted.
SAMPLES = {
    "checks": ("mixer_check_calls_total", {}),
    "allocations": ("mixer_redisquota_allocations_total", {"handler": HANDLER}),
    "denials": ("mixer_redisquota_denials_total", {"handler": HANDLER}),
    "dedup_hits": ("mixer_redisquota_dedup_hits_total", {"handler": HANDLER}),
    "store_failures": ("mixer_redisquota_store_failures_total", {"handler": HANDLER}),
}


def metrics_by_worker(http_url: str, workers: int) -> dict[str, dict[str, float]]:
    """:data:`SAMPLES` of each worker, scraping over new connections until every worker answered."""
    seen: dict[str, dict[str, float]] = {}

    def all_seen() -> bool:
        status, body = http_get(http_url + "/metrics")
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


def total(per_worker: dict[str, dict[str, float]], key: str) -> float:
    return sum(samples[key] for samples in per_worker.values())


def test_exactly_the_limit_is_granted_across_workers_and_client_processes(
    servers: Launcher, tmp_path: Path, redis_server: RedisServer
) -> None:
    prefix = unique_prefix("exact")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config(redis_server.url, prefix), "utf-8")
    ready_file = tmp_path / "ready.json"
    server = servers.start(
        "--config",
        str(config_path),
        "--workers",
        "2",
        "--reload-interval",
        "0",
        "--ready-file",
        str(ready_file),
        wait=False,
    )
    wait_until(lambda: ready_workers(ready_file), 40, "both workers ready")

    started = time.monotonic()
    clients = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CLIENT,
                server.grpc_target,
                f"client{n}",
                str(CHECKS_PER_CLIENT),
                str(RETRY_EVERY),
                str(RECONNECT_EVERY),
                API_KEY,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(CLIENTS)
    ]
    results = []
    try:
        for client in clients:
            out, err = client.communicate(timeout=60)
            assert client.returncode == 0, err.decode()
            results.append(json.loads(out))
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
    elapsed = time.monotonic() - started

    codes = [code for result in results for code in result["codes"]]
    assert len(codes) == CLIENTS * CHECKS_PER_CLIENT
    assert {code: codes.count(code) for code in set(codes)} == {
        "OK": LIMIT,
        "RESOURCE_EXHAUSTED": CLIENTS * CHECKS_PER_CLIENT - LIMIT,
    }, server.stderr()
    assert sum(result["retry_mismatches"] for result in results) == 0

    # Both workers answered Checks (each counts its own), and together they answered them all:
    # every first send allocated once in Redis, every retry was a replay.
    per_worker = metrics_by_worker(server.http_url, 2)
    retries = CLIENTS * len(range(0, CHECKS_PER_CLIENT, RETRY_EVERY))
    assert all(samples["checks"] > 0 for samples in per_worker.values()), per_worker
    assert total(per_worker, "checks") == CLIENTS * CHECKS_PER_CLIENT + retries
    assert total(per_worker, "allocations") == CLIENTS * CHECKS_PER_CLIENT
    assert total(per_worker, "denials") == CLIENTS * CHECKS_PER_CLIENT - LIMIT
    assert total(per_worker, "dedup_hits") == retries
    assert total(per_worker, "store_failures") == 0

    # What Redis holds: the hour's buckets add up to the limit, and every key expires.
    counter = f"{prefix}plan/metered/per_hour/subject=sam"
    state = redis_server.command("GET", counter)
    assert isinstance(state, bytes)
    buckets = state.decode().split("|", 1)[1].split(",")
    assert sum(int(bucket.split(":")[1]) for bucket in buckets) == LIMIT
    keys = redis_server.command("KEYS", f"{prefix}*")
    assert isinstance(keys, list)
    # -1: no expiry (never allowed); -2: already expired (early deduplication records).
    ttls = [redis_server.command("PTTL", key) for key in keys]
    assert counter.encode() in keys
    assert -1 not in ttls
    checks = {worker: samples["checks"] for worker, samples in per_worker.items()}
    print(f"{len(codes) + retries} Checks from {CLIENTS} processes in {elapsed:.2f}s; per worker {checks}")
