"""redisquota and the ``redis`` key store on a real Redis Cluster (three masters; three more
replicas for the failover): exactly the limit granted by two `mixer serve` replicas, one hash slot
per allocation, the script loaded per node, revocation seen within a second, and what
``fail_open`` and ``fail_closed`` answer while a killed master's replica takes over."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.redisquota import KEY_STORE, RedisquotaConfig
from adapters.redisquota._handler import RedisquotaHandler
from mixer import HandlerEnv
from mixer.plans import PlanEnforcer
from mixer.quota import Algorithm, CounterRequest, EpochWindow
from mixer.quota.redis_store import RedisCounterStore, check_redis_url, redact_redis_url
from mixer.status import Code
from mixer.templates import PlanCheckInstance
from tests.backends.redis import unique_prefix
from tests.backends.redis_cluster import RedisClusterProcesses, redis_cluster, replicated_redis_cluster
from tests.quota.support import plans
from tests.server.exactness import config, metrics_of, run_clients
from tests.server.support import Launcher

__all__ = ["redis_cluster", "replicated_redis_cluster"]  # fixtures used below

LOG = logging.getLogger("test.redis_cluster")

PLANS = plans(
    """
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {name: big}
spec:
  limits:
  - {name: per_hour, max: 1000000, per: 1h, algorithm: rolling_window, buckets: 10}
  - {name: per_day, max: 1000000, per: day}
---
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {name: shared}
spec:
  limits:
  - {name: per_subject, max: 10, per: minute}
  - {name: everyone, max: 100, per: minute, dimensions: []}
"""
)
KEYS = {"k-dora": {"subject": "dora", "plan": "big"}}


def handler(url: str, prefix: str, *, name: str = "plans.istio-system", **params: Any) -> RedisquotaHandler:
    config = RedisquotaConfig.model_validate(
        {
            "redis_server_url": url,
            "key_prefix": prefix,
            "timeout": "1s",
            "subjects": {"keys": {"inline": KEYS}},
            **params,
        }
    )
    env = HandlerEnv(name, LOG, plans=PLANS, key_stores={"redis": KEY_STORE})
    return RedisquotaHandler(config, env)


@contextlib.asynccontextmanager
async def started(*handlers: RedisquotaHandler) -> AsyncIterator[None]:
    try:
        for h in handlers:
            await h.start()
        yield
    finally:
        for h in handlers:
            await h.shutdown(2.0)


def rolling_count(state: object) -> int:
    """Units held by a rolling window's state (``shape|bucket:count,...``)."""
    assert isinstance(state, bytes), state
    return sum(int(bucket.split(":")[1]) for bucket in state.decode().split("|", 1)[1].split(","))


# -- configuration --------------------------------------------------------------------------------


def test_cluster_urls() -> None:
    url = "redis+cluster://user:secret@10.0.0.1:7000,10.0.0.2:7000"
    assert check_redis_url(url) == url
    assert redact_redis_url(url) == "redis+cluster://user:***@10.0.0.1:7000,10.0.0.2:7000"
    assert check_redis_url("rediss+cluster://h:7000/0") == "rediss+cluster://h:7000/0"
    for bad, message in [
        ("redis+cluster://h:7000/1", "only database 0"),
        ("redis+cluster://h", "host:port"),
        ("redis+cluster://h:7000,:7001", "host:port"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_redis_url(bad)
    with pytest.raises(ValidationError, match=r"may not contain \{ or \}"):
        RedisquotaConfig.model_validate({"redis_server_url": "redis+cluster://h:1", "key_prefix": "a{b}:"})
    # A single server takes any prefix: there are no slots to keep together.
    assert RedisquotaConfig.model_validate({"redis_server_url": "h:1", "key_prefix": "a{b}:"}).key_prefix


async def test_an_allocation_over_two_groups_is_refused_before_any_round_trip() -> None:
    store = RedisCounterStore("redis+cluster://127.0.0.1:1", key_prefix="p:")
    window = EpochWindow(60)
    requests = [
        CounterRequest("a", 1, 5, Algorithm.FIXED_WINDOW, window=window, group="g1"),
        CounterRequest("b", 1, 5, Algorithm.FIXED_WINDOW, window=window, group="g2"),
    ]
    with pytest.raises(ValueError, match="share a group"):
        await store.allocate(requests)
    assert store.stats.failures == 0
    await store.close()


def test_a_plan_groups_its_counters_by_the_dimensions_every_limit_shares() -> None:
    enforcer = PlanEnforcer(RedisCounterStore("redis+cluster://127.0.0.1:1"), key_prefix="plan/")
    builtin = {"subject": "al/ice", "api": "", "operation": ""}
    assert enforcer.counter_group(PLANS["big"], builtin) == "plan/big/subject=al%2Fice"
    # One limit counts everyone together: the plan's counters all share one slot.
    assert enforcer.counter_group(PLANS["shared"], builtin) == "plan/shared"


# -- one slot per allocation, the script per node -------------------------------------------------


async def test_every_key_of_an_allocation_in_one_slot_and_subjects_spread(
    redis_cluster: RedisClusterProcesses,
) -> None:
    prefix = unique_prefix("slots")
    store = RedisCounterStore(redis_cluster.url, key_prefix=prefix, timeout=2.0)
    window = EpochWindow(600)
    try:
        for n in range(30):
            group = f"plan/p/subject=s{n}"
            requests = [
                CounterRequest(
                    f"plan/p/{limit}/subject=s{n}", 1, 5, Algorithm.FIXED_WINDOW, window=window, group=group
                )
                for limit in ("a", "b", "c")
            ]
            assert (await store.allocate(requests, deduplication_id=f"d{n}", dedup_seconds=60)).allowed
            assert (await store.allocate(requests, deduplication_id=f"d{n}", dedup_seconds=60)).replayed
    finally:
        await store.close()
    by_node: dict[int, list[bytes]] = {}
    for node in redis_cluster.nodes:
        by_node[node.port] = node.command("KEYS", f"{prefix}*")  # type: ignore[assignment]
    assert sum(map(len, by_node.values())) == 30 * 4  # three counters and a dedup record each
    assert all(by_node.values()), "every master holds some subjects"
    for n in range(30):
        keys = [key for found in by_node.values() for key in found if b"{plan/p/subject=s%d}" % n in key]
        assert len(keys) == 4
        slots = {redis_cluster.nodes[0].command("CLUSTER", "KEYSLOT", key) for key in keys}
        assert len(slots) == 1


async def test_noscript_loads_the_script_on_the_node_that_answered(
    redis_cluster: RedisClusterProcesses,
) -> None:
    prefix = unique_prefix("noscript")
    store = RedisCounterStore(redis_cluster.url, key_prefix=prefix, timeout=2.0)
    request = CounterRequest("quota/q", 1, 5, Algorithm.FIXED_WINDOW, window=EpochWindow(600))
    owner = redis_cluster.node_for_key(f"{prefix}{{quota/q}}quota/q")
    try:
        for node in redis_cluster.nodes:
            node.command("SCRIPT", "FLUSH")
        assert (await store.allocate([request])).allowed
        assert store.stats.script_loads == 1
        for node in redis_cluster.nodes:
            loaded = node.command("SCRIPT", "EXISTS", store.script_sha)
            assert loaded == [1 if node is owner else 0], node.port
        assert (await store.allocate([request])).allowed
        assert store.stats.script_loads == 1
    finally:
        await store.close()


# -- exactness across replicas -------------------------------------------------------------------

RETRY_EVERY = 10
RECONNECT_EVERY = 20


@pytest.mark.parametrize(
    ("limit", "clients", "checks_per_client"),
    [
        pytest.param(300, 4, 120, id="short"),
        pytest.param(3000, 6, 1000, id="long", marks=pytest.mark.slow),
    ],
)
def test_two_replicas_grant_exactly_the_limit_on_a_cluster(
    servers: Launcher,
    tmp_path: Path,
    redis_cluster: RedisClusterProcesses,
    limit: int,
    clients: int,
    checks_per_client: int,
) -> None:
    prefix = unique_prefix("cexact")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config(redis_cluster.url, prefix, limit), "utf-8")
    replicas = [
        servers.start("--config", str(config_path), "--workers", "1", "--reload-interval", "0", wait=False)
        for _ in range(2)
    ]
    for server in replicas:
        server.wait_ready()
    run = run_clients(
        [server.grpc_target for server in replicas],
        clients=clients,
        checks_per_client=checks_per_client,
        retry_every=RETRY_EVERY,
        reconnect_every=RECONNECT_EVERY,
        timeout=300,
    )
    checks = clients * checks_per_client
    assert len(run.codes) == checks
    assert run.counts() == {"OK": limit, "RESOURCE_EXHAUSTED": checks - limit}, replicas[0].stderr()
    # Every retry went to the other replica and was answered from the record in the cluster.
    assert run.retry_mismatches == 0

    per_replica = {str(n): metrics_of(server) for n, server in enumerate(replicas)}
    assert all(samples["checks"] > 0 for samples in per_replica.values()), per_replica
    assert sum(samples["allocations"] for samples in per_replica.values()) == checks
    assert sum(samples["denials"] for samples in per_replica.values()) == checks - limit
    assert sum(samples["dedup_hits"] for samples in per_replica.values()) == run.retries
    assert sum(samples["store_failures"] for samples in per_replica.values()) == 0

    counter = f"{prefix}{{plan/metered/subject=sam}}plan/metered/per_hour/subject=sam"
    assert rolling_count(redis_cluster.command("GET", counter, key=counter)) == limit
    keys = redis_cluster.keys(f"{prefix}*")
    assert counter.encode() in keys
    assert len({redis_cluster.nodes[0].command("CLUSTER", "KEYSLOT", key) for key in keys}) == 1
    assert all(redis_cluster.command("PTTL", key.decode(), key=key.decode()) != -1 for key in keys)
    print(
        f"cluster exactness: {checks} Checks (+{run.retries} retries), limit {limit}, "
        f"{run.counts()['OK']} granted, in {run.elapsed:.2f}s"
    )


# -- the key store ---------------------------------------------------------------------------------


async def test_a_revoked_key_stops_working_on_both_replicas_within_a_second(
    redis_cluster: RedisClusterProcesses,
) -> None:
    hash_name = unique_prefix("keys")
    redis_cluster.command(
        "HSET", hash_name, "k-live", json.dumps({"subject": "dora", "plan": "big"}), key=hash_name
    )
    store = {"keys": {"store": {"name": "redis", "params": {"url": redis_cluster.url, "hash": hash_name}}}}
    replicas = [
        handler(redis_cluster.url, unique_prefix("rk"), subjects=store),
        handler(redis_cluster.url, unique_prefix("rk"), subjects=store),
    ]
    async with started(*replicas):
        for h in replicas:
            answer = await h.handle_check(PlanCheckInstance("plancheck.istio-system", api_key="k-live"))
            assert answer.status.ok, answer.status
            assert answer.headers["x-mixer-subject"] == "dora"
        redis_cluster.command("HDEL", hash_name, "k-live", key=hash_name)
        revoked_at = time.monotonic()
        seen: dict[int, float] = {}
        while len(seen) < len(replicas) and time.monotonic() - revoked_at < 3:
            for i, h in enumerate(replicas):
                answer = await h.handle_check(PlanCheckInstance("plancheck.istio-system", api_key="k-live"))
                if i not in seen and answer.status.code is Code.UNAUTHENTICATED:
                    seen[i] = time.monotonic() - revoked_at
            await asyncio.sleep(0.02)
        assert len(seen) == 2, seen
        assert max(seen.values()) < 1.0, seen


# -- failover ---------------------------------------------------------------------------------------


class Load:
    """Checks sent back to back by a few tasks, each answer kept with its time."""

    def __init__(self, h: RedisquotaHandler, tasks: int = 3) -> None:
        self.handler = h
        self.answers: list[tuple[float, Code]] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run()) for _ in range(tasks)]

    async def _run(self) -> None:
        instance = PlanCheckInstance("plancheck.istio-system", api_key="k-dora")
        while not self._stop.is_set():
            code = (await self.handler.handle_check(instance)).status.code
            self.answers.append((time.monotonic(), code))
            # Not a spin: leave the loop to the other tasks and the failover's polling.
            await asyncio.sleep(0.002)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def counted_since(self, moment: float) -> int:
        return sum(1 for at, code in self.answers if at > moment and code is Code.OK)


async def test_a_killed_master_fail_open_and_fail_closed_then_counting_resumes(
    replicated_redis_cluster: RedisClusterProcesses,
) -> None:
    cluster = replicated_redis_cluster
    # Both handlers count subject dora: one slot, one master to kill.
    policies = {"fail_closed": unique_prefix("closed"), "fail_open": unique_prefix("open")}
    handlers = {
        policy: handler(
            cluster.url, prefix, name=f"{policy}.istio-system", failure_policy=policy, timeout="500ms"
        )
        for policy, prefix in policies.items()
    }
    counters = {
        policy: f"{prefix}{{plan/big/subject=dora}}plan/big/per_hour/subject=dora"
        for policy, prefix in policies.items()
    }
    victim = cluster.node_for_key(counters["fail_closed"])
    assert victim is cluster.node_for_key(counters["fail_open"])
    async with started(*handlers.values()):
        loads = {policy: Load(h) for policy, h in handlers.items()}
        try:
            await asyncio.sleep(0.3)
            killed_at = time.monotonic()
            victim.kill()
            failover = await asyncio.to_thread(cluster.wait_ok, 30.0)
            promoted_at = time.monotonic()

            # Counting resumes once each client has learnt the new master: a Check counted again.
            deadline = time.monotonic() + 20
            open_allocations = handlers["fail_open"].store.stats.allocations
            while not (
                loads["fail_closed"].counted_since(promoted_at) > 0
                and handlers["fail_open"].store.stats.allocations > open_allocations
            ):
                assert time.monotonic() < deadline, "counting did not resume"
                await asyncio.sleep(0.05)
            resumed_at = time.monotonic()
            open_allocations_at_resume = handlers["fail_open"].store.stats.allocations
            await asyncio.sleep(0.3)
        finally:
            for load in loads.values():
                await load.stop()

        stats = {policy: h.stats() for policy, h in handlers.items()}
        closed_codes = [code for _, code in loads["fail_closed"].answers]
        open_codes = [code for _, code in loads["fail_open"].answers]
        # fail_closed: refused while the master was gone, every refusal counted, none before it.
        unavailable = closed_codes.count(Code.UNAVAILABLE)
        assert unavailable > 0
        assert set(closed_codes) == {Code.OK, Code.UNAVAILABLE}
        assert stats["fail_closed"]["store_failures"] == unavailable
        assert all(at > killed_at for at, code in loads["fail_closed"].answers if code is Code.UNAVAILABLE)
        # fail_open: never refused; what went uncounted is counted as fail-open grants.
        assert set(open_codes) == {Code.OK}
        assert stats["fail_open"]["fail_open_grants"] == stats["fail_open"]["store_failures"] > 0
        assert stats["fail_open"]["allocations"] + stats["fail_open"]["fail_open_grants"] == len(open_codes)
        assert stats["fail_open"]["allocations"] > open_allocations_at_resume

        # Counting is exact again on the promoted replica: each Check adds one to the counter.
        for policy, h in handlers.items():
            before = rolling_count(cluster.command("GET", counters[policy], key=counters[policy]))
            instance = PlanCheckInstance("plancheck.istio-system", api_key="k-dora")
            for _ in range(20):
                assert (await h.handle_check(instance)).status.ok
            after = rolling_count(cluster.command("GET", counters[policy], key=counters[policy]))
            assert after - before == 20, policy
        assert cluster.node_for_key(counters["fail_closed"]) is not victim
    print(
        f"failover {failover:.2f}s after the kill; fail_closed: {len(closed_codes)} Checks, "
        f"{unavailable} UNAVAILABLE ({stats['fail_closed']['store_failures']} store failures counted); "
        f"fail_open: {len(open_codes)} Checks all OK, {stats['fail_open']['fail_open_grants']} granted "
        f"uncounted, {stats['fail_open']['allocations']} counted; both counting again "
        f"{resumed_at - killed_at:.2f}s after the kill"
    )
