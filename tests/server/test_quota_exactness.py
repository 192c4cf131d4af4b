"""Exact plan quotas across processes: `mixer serve --workers 2` counting in one real Redis, driven by
four client processes at once. Exactly the plan's limit is granted, whichever worker answers, and
a retried Check (same deduplication id, likely another worker) replays its first answer."""

from __future__ import annotations

import json
from pathlib import Path

from tests.backends.redis import RedisServer, redis_server, unique_prefix
from tests.server.exactness import config, metrics_by_worker, run_clients, total
from tests.server.support import Launcher, wait_until

__all__ = ["redis_server"]  # the fixture used below

LIMIT = 500
CLIENTS = 4
CHECKS_PER_CLIENT = 300
#: Every RETRY_EVERY-th Check is sent again with the same deduplication id, over a new connection.
RETRY_EVERY = 10
#: A new channel (a new connection, spread over the workers by SO_REUSEPORT) every this many Checks.
RECONNECT_EVERY = 25


def ready_workers(path: Path) -> list[int] | None:
    try:
        workers = json.loads(path.read_text("utf-8"))["workers"]
    except (FileNotFoundError, ValueError, KeyError):
        return None
    return list(workers) if len(workers) == 2 else None


def test_exactly_the_limit_is_granted_across_workers_and_client_processes(
    servers: Launcher, tmp_path: Path, redis_server: RedisServer
) -> None:
    prefix = unique_prefix("exact")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config(redis_server.url, prefix, LIMIT), "utf-8")
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

    run = run_clients(
        [server.grpc_target],
        clients=CLIENTS,
        checks_per_client=CHECKS_PER_CLIENT,
        retry_every=RETRY_EVERY,
        reconnect_every=RECONNECT_EVERY,
    )

    codes = run.codes
    assert len(codes) == CLIENTS * CHECKS_PER_CLIENT
    assert run.counts() == {
        "OK": LIMIT,
        "RESOURCE_EXHAUSTED": CLIENTS * CHECKS_PER_CLIENT - LIMIT,
    }, server.stderr()
    assert run.retry_mismatches == 0

    # Both workers answered Checks (each counts its own), and together they answered them all:
    # every first send allocated once in Redis, every retry was a replay.
    per_worker = metrics_by_worker(server.admin_url, 2)
    retries = run.retries
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
    print(
        f"{len(codes) + retries} Checks from {CLIENTS} processes in {run.elapsed:.2f}s; per worker {checks}"
    )
