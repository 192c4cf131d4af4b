"""redisquota: memquota's answers with counters in a real Redis, failure policies, reloads, and
the ``redis`` API key store (revocation seen by every replica within a second)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.redisquota import ADAPTER, KEY_STORE, RedisquotaConfig
from adapters.redisquota._handler import RedisquotaHandler
from mixer import HandlerEnv, QuotaArgs
from mixer.attributes import AttributeBag
from mixer.config import load_config_text
from mixer.defaults import embedded_config_text
from mixer.plans import CachedKeyStore, KeyStoreInfo, PlanConfig
from mixer.plans.redis_keys import RedisKeyStore, RedisKeyStoreParams
from mixer.quota.redis_store import RedisQuotaCollector, totals
from mixer.quotahandler import STORE_UNAVAILABLE
from mixer.registry import Registry
from mixer.runtime import Runtime, build_runtime
from mixer.status import Code
from mixer.templates import PlanCheckInstance, QuotaInstance
from plugins.manager import create_plugin_manager
from tests.backends.redis import RedisServer, redis_server, redis_session, unique_prefix
from tests.quota.support import FakeClock, plans
from tests.server.support import metric_value

__all__ = ["redis_server", "redis_session"]  # fixtures used by the tests below

LOG = logging.getLogger("test.redisquota")
NS = "istio-system"

PLANS = plans(
    """
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {name: free}
spec:
  limits:
  - {name: per_minute, max: 2, per: minute}
  - {name: per_hour, max: 100, per: 1h, algorithm: rolling_window, buckets: 6}
---
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {name: pro}
spec:
  limits: [{name: per_minute, max: 100, per: minute, algorithm: gcra, burst: 3}]
---
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {name: big}
spec:
  limits: [{name: per_hour, max: 100000, per: 1h}]
"""
)
KEYS = {"k-free": {"subject": "alice", "plan": "free"}, "k-pro": {"subject": "bob", "plan": "pro"}}
QUOTAS = [
    {
        "name": "requestcountquota.instance.istio-system",
        "maxAmount": 3,
        "validDuration": "10s",
        "overrides": [{"dimensions": {"destination": "reviews"}, "maxAmount": 1, "validDuration": "5s"}],
    },
    {
        "name": "rolling",
        "maxAmount": 2,
        "validDuration": "60s",
        "bucketDuration": "30s",
        "rateLimitAlgorithm": "ROLLING_WINDOW",
    },
]


class Handlers:
    """Builds redisquota handlers against one Redis, each its own prefix unless told; shuts all down."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.prefix = unique_prefix("rq")
        self.built: list[RedisquotaHandler] = []

    def __call__(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        clock: FakeClock | None = None,
        plan_map: Mapping[str, PlanConfig] | None = None,
        previous: RedisquotaHandler | None = None,
        key_stores: Mapping[str, KeyStoreInfo] | None = None,
        name: str = f"quota.{NS}",
    ) -> RedisquotaHandler:
        merged = {
            "redis_server_url": self.server.url,
            "key_prefix": self.prefix,
            "timeout": "1s",
            "subjects": {"keys": {"inline": KEYS}},
            "quotas": QUOTAS,
            **(params or {}),
        }
        config = RedisquotaConfig.model_validate(merged)
        env = HandlerEnv(
            name,
            LOG,
            plans=PLANS if plan_map is None else plan_map,
            key_stores={"redis": KEY_STORE} if key_stores is None else key_stores,
            previous=previous,
        )
        h = RedisquotaHandler(config, env, clock=clock or FakeClock(6000.0))
        self.built.append(h)
        return h

    async def close(self) -> None:
        for h in self.built:
            await h.shutdown(1.0)


@pytest.fixture
async def shared(redis_session: RedisServer) -> AsyncIterator[Handlers]:
    handlers = Handlers(redis_session)
    yield handlers
    await handlers.close()


@pytest.fixture
async def own(redis_server: RedisServer) -> AsyncIterator[Handlers]:
    """Handlers against a Redis of this test alone (to stop, pause, restart and flush)."""
    handlers = Handlers(redis_server)
    yield handlers
    await handlers.close()


def plancheck(**fields: Any) -> PlanCheckInstance:
    return PlanCheckInstance("plancheck.istio-system", **fields)


def quota(
    dimensions: Mapping[str, Any] | None = None, name: str = "requestcountquota.istio-system"
) -> QuotaInstance:
    return QuotaInstance(name, dict(dimensions or {}))


async def grants(h: RedisquotaHandler, instance: QuotaInstance, n: int, amount: int = 1) -> list[int]:
    return [(await h.handle_quota(instance, QuotaArgs("", amount))).granted_amount for _ in range(n)]


async def codes(h: RedisquotaHandler, n: int, **fields: Any) -> list[Code]:
    return [(await h.handle_check(plancheck(**fields))).status.code for _ in range(n)]


# -- what it is -----------------------------------------------------------------------------------


def test_describes_itself() -> None:
    assert ADAPTER.templates == {"apikey", "plancheck", "quota"}
    assert ADAPTER.kinds() == ("redisquota",)
    assert ADAPTER.uses_plans
    assert KEY_STORE.name == "redis"


def test_mixer_params_and_secrets() -> None:
    config = RedisquotaConfig.model_validate(
        {"redisServerUrl": "redis-master:6379", "connectionPoolSize": 3, "quotas": QUOTAS}
    )
    assert (config.redis_server_url, config.connection_pool_size) == ("redis-master:6379", 3)
    assert config.failure_policy.value == "fail_closed"
    assert config.timeout == timedelta(milliseconds=50)
    secret = RedisquotaConfig.model_validate({"redis_server_url": "redis://:hunter2@h:6379/0"})
    assert "hunter2" not in str(secret.model_dump())
    assert secret.model_dump()["redis_server_url"] == "redis://:***@h:6379/0"
    with pytest.raises(ValidationError, match="scheme"):
        RedisquotaConfig.model_validate({"redis_server_url": "http://h:6379"})
    with pytest.raises(ValidationError, match="failure_policy"):
        RedisquotaConfig.model_validate({"failure_policy": "fail_sometimes"})
    with pytest.raises(ValidationError, match="configured twice"):
        RedisquotaConfig.model_validate({"quotas": [QUOTAS[1], QUOTAS[1]]})
    params = RedisKeyStoreParams.model_validate(
        {"url": "redis://u:pw@h:1/0", "hash": "keys", "refresh": "250ms"}
    )
    assert "pw" not in str(params.model_dump())


async def test_building_and_stopping_touch_no_server() -> None:
    # Nothing listens on this port: a handler that is built, started and stopped never noticed.
    config = RedisquotaConfig.model_validate({"redis_server_url": "redis://127.0.0.1:9/0"})
    h = RedisquotaHandler(config, HandlerEnv("idle", LOG))
    await h.start()
    await h.shutdown(1.0)
    await h.shutdown(1.0)
    assert h.store_failures == 0


# -- Mixer quotas ---------------------------------------------------------------------------------


async def test_quota_fixed_window_overrides_and_rolling_window(shared: Handlers) -> None:
    clock = FakeClock(6000.0)
    h = shared(clock=clock)
    assert await grants(h, quota({"destination": "ratings"}), 4) == [1, 1, 1, 0]
    assert await grants(h, quota({"destination": "reviews"}), 2) == [1, 0]
    result = await h.handle_quota(quota({"destination": "reviews"}), QuotaArgs("", 1))
    assert result.valid_duration == timedelta(seconds=5)
    assert (
        await h.handle_quota(quota({"destination": "ratings"}), QuotaArgs("", 5, best_effort=True))
    ).granted_amount == 0
    clock.advance(10)
    assert await grants(h, quota({"destination": "ratings"}), 1) == [1]
    rolling = quota(name="rolling")
    assert await grants(h, rolling, 1) == [1]
    clock.advance(30)
    assert await grants(h, rolling, 2) == [1, 0]
    clock.advance(30)
    assert await grants(h, rolling, 2) == [1, 0]
    missing = await h.handle_quota(quota(name="nope"), QuotaArgs("", 1))
    assert missing.status.code is Code.INTERNAL


async def test_quota_dedup_replays_on_another_replica(shared: Handlers) -> None:
    one, two = shared(), shared()
    instance = quota({"destination": "ratings"})
    args = QuotaArgs("check-1requestcountquota", 2)
    assert (await one.handle_quota(instance, args)).granted_amount == 2
    assert (await two.handle_quota(instance, args)).granted_amount == 2  # the retry spends nothing
    assert await grants(two, instance, 2) == [1, 0]
    assert two.stats()["dedup_hits"] == 1


# -- plancheck ------------------------------------------------------------------------------------


async def test_plancheck_counts_every_limit_in_redis(shared: Handlers) -> None:
    clock = FakeClock(6000.0)
    h = shared(clock=clock)
    ok = await h.handle_check(plancheck(api_key="k-free"))
    assert ok.status.code is Code.OK
    assert ok.headers == {"x-mixer-plan": "free", "x-mixer-subject": "alice"}
    assert [(rl.name, rl.remaining) for rl in ok.rate_limits] == [("per_minute", 1), ("per_hour", 99)]
    assert (ok.valid_duration, ok.valid_use_count) == (timedelta(0), 1)
    denied = await h.handle_check(plancheck(api_key="k-free"))
    denied = await h.handle_check(plancheck(api_key="k-free"))
    assert denied.status.code is Code.RESOURCE_EXHAUSTED
    assert 'limit "per_minute" exceeded' in denied.status.message
    # Nothing was spent on the hourly limit by the refused check.
    assert [(rl.name, rl.remaining) for rl in denied.rate_limits] == [("per_minute", 0), ("per_hour", 98)]
    assert await codes(h, 4, api_key="k-pro") == [Code.OK] * 3 + [Code.RESOURCE_EXHAUSTED]
    assert await codes(h, 1, api_key="stolen") == [Code.UNAUTHENTICATED]
    clock.advance(60)
    assert await codes(h, 1, api_key="k-free") == [Code.OK]
    stats = h.stats()
    assert stats["allocations"] == 8
    assert stats["denials"] == 2
    assert stats["store_failures"] == 0


async def test_replicas_share_plan_counters_and_retries(shared: Handlers) -> None:
    one, two = shared(), shared()
    assert (await one.handle_check(plancheck(api_key="k-free", deduplication_id="r1"))).status.ok
    # The same Check retried on the other replica: the same answer, nothing spent.
    retried = await two.handle_check(plancheck(api_key="k-free", deduplication_id="r1"))
    assert retried.status.ok
    assert retried.rate_limits[0].remaining == 1
    assert await codes(two, 1, api_key="k-free") == [Code.OK]
    assert await codes(one, 1, api_key="k-free") == [Code.RESOURCE_EXHAUSTED]


async def test_handlers_with_other_names_keep_their_own_dedup_records(shared: Handlers) -> None:
    a, b = shared(name="a"), shared(name="b")
    assert (await a.handle_check(plancheck(api_key="k-free", deduplication_id="same"))).status.ok
    answer = await b.handle_check(plancheck(api_key="k-free", deduplication_id="same"))
    assert answer.rate_limits[0].remaining == 0  # counted again: not a replay of a's answer


# -- Redis down, hung, back, flushed --------------------------------------------------------------


#: Healthy round trips get this long in the failure tests: a busy machine must not fail them.
RELAXED = 5.0


async def test_fail_closed_answers_unavailable_within_the_timeout(
    own: Handlers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOG.name)
    h = own({"timeout": "50ms"})
    assert h.store.timeout == 0.05
    h.store.timeout = RELAXED
    assert await codes(h, 1, api_key="k-free") == [Code.OK]

    own.server.stop()
    started = time.monotonic()
    refused = await h.handle_check(plancheck(api_key="k-free"))
    assert time.monotonic() - started < 1.0  # refused at once, whatever the timeout
    assert refused.status.code is Code.UNAVAILABLE
    assert refused.status.message == STORE_UNAVAILABLE
    assert (refused.valid_duration, refused.valid_use_count) == (timedelta(0), 1)
    quota_refused = await h.handle_quota(quota(), QuotaArgs("", 1))
    assert (quota_refused.granted_amount, quota_refused.status.code) == (0, Code.UNAVAILABLE)

    own.server.start()
    own.server.pause()
    h.store.timeout = 0.05
    started = time.monotonic()
    hung = await h.handle_check(plancheck(api_key="k-free"))
    elapsed = time.monotonic() - started
    own.server.resume()
    h.store.timeout = RELAXED
    assert hung.status.code is Code.UNAVAILABLE
    assert 0.05 <= elapsed < 1.0

    # Back: a fresh (empty) Redis, the script loaded again, counting from zero.
    assert await codes(h, 3, api_key="k-free") == [Code.OK, Code.OK, Code.RESOURCE_EXHAUSTED]
    stats = h.stats()
    assert stats["store_failures"] == 3
    assert stats["store_timeouts"] == 1
    assert stats["fail_open_grants"] == 0
    # One warning for the outage and one for the recovery, not one per refused request.
    messages = [r.getMessage() for r in caplog.records if r.name == LOG.name]
    assert len(messages) == 2, messages
    assert "quota store unavailable, refusing" in messages[0]
    assert "answers again (3 failed allocations" in messages[1]


async def test_fail_open_grants_and_counts(own: Handlers) -> None:
    h = own({"failure_policy": "fail_open", "timeout": "5s"})
    assert await codes(h, 2, api_key="k-free") == [Code.OK, Code.OK]
    own.server.stop()
    granted = await h.handle_check(plancheck(api_key="k-free"))
    assert granted.status.code is Code.OK
    assert granted.headers == {"x-mixer-plan": "free", "x-mixer-subject": "alice"}
    assert granted.rate_limits == ()  # nothing is known about the limits
    assert (await h.handle_quota(quota(), QuotaArgs("", 2))).granted_amount == 2
    # An unknown caller is still refused: fail_open is about counting, not about who may call.
    assert await codes(h, 1, api_key="stolen") == [Code.UNAUTHENTICATED]
    assert h.stats()["fail_open_grants"] == 2
    assert h.stats()["store_failures"] == 2
    own.server.start()
    assert await codes(h, 3, api_key="k-free") == [Code.OK, Code.OK, Code.RESOURCE_EXHAUSTED]


async def test_script_flush_is_survived(own: Handlers) -> None:
    h = own()
    assert await codes(h, 1, api_key="k-free") == [Code.OK]
    own.server.command("SCRIPT", "FLUSH")
    assert await codes(h, 2, api_key="k-free") == [Code.OK, Code.RESOURCE_EXHAUSTED]
    assert h.stats()["script_loads"] == 2
    assert h.stats()["store_failures"] == 0


async def test_plan_keys_carry_ttls(own: Handlers) -> None:
    h = own({"key_expiry_slack": "3s"}, clock=FakeClock(6000.0))
    assert await codes(h, 1, api_key="k-free", deduplication_id="d") == [Code.OK]
    keys = own.server.command("KEYS", f"{own.prefix}*")
    assert isinstance(keys, list)
    names = sorted(k.decode() for k in keys)
    assert names == sorted(
        [
            f"{own.prefix}plan/free/per_minute/subject=alice",
            f"{own.prefix}plan/free/per_hour/subject=alice",
            f"{own.prefix}dedup/quota.{NS}/dplancheck.istio-system",
        ]
    )
    for name in names:
        ttl = own.server.command("PTTL", name)
        assert isinstance(ttl, int)
        assert 0 < ttl <= 3_600_000 + 3_000, name


# -- reloads --------------------------------------------------------------------------------------


async def test_a_reload_keeps_the_store_while_the_redis_settings_stay(shared: Handlers) -> None:
    first = shared()
    await first.start()
    assert await codes(first, 1, api_key="k-free") == [Code.OK]
    second = shared({"failure_policy": "fail_open"}, previous=first)
    assert second.store is first.store
    await second.start()
    await first.shutdown(1.0)  # the old handler goes once the new one serves
    assert await codes(second, 2, api_key="k-free") == [Code.OK, Code.RESOURCE_EXHAUSTED]
    third = shared({"connection_pool_size": 2}, previous=second)
    assert third.store is not second.store
    await second.shutdown(1.0)
    with pytest.raises(RuntimeError, match="closed"):
        await second.store.allocate([])
    assert await codes(third, 1, api_key="k-free") == [Code.RESOURCE_EXHAUSTED]  # the counters are in Redis


async def test_a_failed_rebuild_leaves_the_running_store_alone(shared: Handlers) -> None:
    first = shared()
    with pytest.raises(ValueError, match="gold"):
        shared({"subjects": {"default_plan": "gold"}}, previous=first)
    assert await codes(first, 1, api_key="k-free") == [Code.OK]


# -- the redis key store --------------------------------------------------------------------------


def redis_keys(server: RedisServer, hash_name: str, **params: Any) -> dict[str, Any]:
    return {
        "subjects": {
            "keys": {"store": {"name": "redis", "params": {"url": server.url, "hash": hash_name, **params}}}
        }
    }


async def test_a_revoked_key_stops_working_on_every_replica_within_a_second(shared: Handlers) -> None:
    server = shared.server
    hash_name = unique_prefix("keys")
    server.command("HSET", hash_name, "k-live", json.dumps({"subject": "dora", "plan": "big"}))
    replicas = [shared(redis_keys(server, hash_name)), shared(redis_keys(server, hash_name))]
    for h in replicas:
        await h.start()
        answer = await h.handle_check(plancheck(api_key="k-live"))
        assert answer.status.ok
        assert answer.headers["x-mixer-subject"] == "dora"
        assert (await h.handle_check(plancheck(api_key="k-unknown"))).status.code is Code.UNAUTHENTICATED

    server.command("HDEL", hash_name, "k-live")
    revoked_at = time.monotonic()
    seen: dict[int, float] = {}
    while len(seen) < len(replicas) and time.monotonic() - revoked_at < 3:
        for i, h in enumerate(replicas):
            if (
                i not in seen
                and (await h.handle_check(plancheck(api_key="k-live"))).status.code is Code.UNAUTHENTICATED
            ):
                seen[i] = time.monotonic() - revoked_at
        await asyncio.sleep(0.02)
    assert len(seen) == 2, seen
    assert max(seen.values()) < 1.0, seen

    # A new key works as soon as the (brief) negative answer has gone.
    server.command("HSET", hash_name, "k-unknown", json.dumps({"subject": "erin", "plan": "free"}))
    await asyncio.sleep(0.6)
    assert all([(await h.handle_check(plancheck(api_key="k-unknown"))).status.ok for h in replicas])


async def test_the_key_cache_is_held_to_refresh(shared: Handlers) -> None:
    params = redis_keys(shared.server, "h", refresh="200ms")
    params["subjects"]["keys"]["cache"] = {"ttl": "30s", "negative_ttl": "5s", "max_entries": 10}
    h = shared(params)
    cached = [s for s in h.resolver.stores if isinstance(s, CachedKeyStore)]
    assert len(cached) == 1
    assert (cached[0].ttl, cached[0].negative_ttl, cached[0].max_entries) == (0.2, 0.2, 10)
    assert isinstance(cached[0].inner, RedisKeyStore)


async def test_key_records_that_are_not_records_are_unknown_keys(shared: Handlers) -> None:
    server = shared.server
    hash_name = unique_prefix("keys")
    server.command("HSET", hash_name, "k-plain", "pro")
    server.command("HSET", hash_name, "k-partial", json.dumps({"plan": "pro"}))
    server.command("HSET", hash_name, "k-huge", json.dumps({"subject": "x" * 5000, "plan": "pro"}))
    h = shared(redis_keys(server, hash_name))
    for key in ("k-plain", "k-partial", "k-huge"):
        assert (await h.handle_check(plancheck(api_key=key))).status.code is Code.UNAUTHENTICATED
    store = next(s for s in h.resolver.stores if isinstance(s, CachedKeyStore)).inner
    assert isinstance(store, RedisKeyStore)
    assert store.stats.invalid_records == 3


async def test_a_key_store_that_cannot_answer_is_unavailable(own: Handlers) -> None:
    h = own({**redis_keys(own.server, "keys", timeout="50ms"), "failure_policy": "fail_open"})
    own.server.stop()
    started = time.monotonic()
    answer = await h.handle_check(plancheck(api_key="k-anything"))
    assert time.monotonic() - started < 1.0
    assert answer.status.code is Code.UNAVAILABLE
    assert "key store unavailable" in answer.status.message
    assert h.fail_open_grants == 0


# -- through the runtime: the embedded default's plans, counted in Redis --------------------------


@pytest.fixture(scope="module")
def real_registry() -> Registry:
    return create_plugin_manager(load_entry_points=False, blocked=()).registry()


@pytest.fixture
async def embedded_in_redis(real_registry: Registry, redis_session: RedisServer) -> AsyncIterator[Runtime]:
    prefix = unique_prefix("embedded")
    text = embedded_config_text().replace(
        "  compiledAdapter: memquota\n  params:\n",
        f"  compiledAdapter: redisquota\n  params:\n    redis_server_url: {redis_session.url}\n"
        f"    key_prefix: '{prefix}'\n    timeout: 1s\n",
    )
    assert "redisquota" in text
    # Its Prometheus handler on a free port: the embedded default's fixed one may be taken.
    config = load_config_text(
        text,
        real_registry,
        source_name="<embedded default, redis>",
        environ={"MIXER_PROMETHEUS_LISTEN": "127.0.0.1:0"},
    )
    runtime = build_runtime(config, real_registry)
    await runtime.start()
    yield runtime
    await runtime.shutdown(1.0)


def keyed(key: str) -> AttributeBag:
    return AttributeBag({"context.protocol": "http", "request.headers": {"x-api-key": key}})


async def test_embedded_plans_counted_in_redis(embedded_in_redis: Runtime) -> None:
    h = embedded_in_redis.handlers[f"plans.{NS}"]
    assert isinstance(h, RedisquotaHandler)
    # A fixed clock: the per_minute window cannot roll over mid-test.
    h.store.clock = h.enforcer.clock = FakeClock()
    outcomes = [await embedded_in_redis.check(keyed("demo-free-key")) for _ in range(11)]
    assert [o.status.code for o in outcomes] == [Code.OK] * 10 + [Code.RESOURCE_EXHAUSTED]
    assert 'plan "free": limit "per_minute" exceeded' in outcomes[-1].status.message
    assert [rl.name for rl in outcomes[-1].rate_limits] == ["per_minute", "per_day"]
    assert (await embedded_in_redis.check(keyed("demo-pro-key"))).status.ok
    assert (await embedded_in_redis.check(keyed("guess"))).status.code is Code.UNAUTHENTICATED


# -- self-metrics ---------------------------------------------------------------------------------


def exposition() -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(RedisQuotaCollector())
    return generate_latest(registry).decode()


async def test_store_counters_are_exported_and_survive_a_store_change(own: Handlers) -> None:
    name = unique_prefix("metrics")
    first = own({"failure_policy": "fail_open", "timeout": "5s"}, name=name)
    await first.start()
    assert await codes(first, 3, api_key="k-free") == [Code.OK, Code.OK, Code.RESOURCE_EXHAUSTED]
    own.server.stop()
    assert await codes(first, 1, api_key="k-free") == [Code.OK]
    text = exposition()
    assert metric_value(text, "mixer_redisquota_allocations_total", handler=name) == 3
    assert metric_value(text, "mixer_redisquota_denials_total", handler=name) == 1
    assert metric_value(text, "mixer_redisquota_store_failures_total", handler=name) == 1
    assert metric_value(text, "mixer_redisquota_fail_open_grants_total", handler=name) == 1
    # A reload with other Redis settings gets a new store; the old one's counts are kept.
    own.server.start()
    second = own({"failure_policy": "fail_open", "connection_pool_size": 3}, name=name, previous=first)
    await second.start()
    await first.shutdown(1.0)
    assert await codes(second, 1, api_key="k-free") == [Code.OK]
    text = exposition()
    assert metric_value(text, "mixer_redisquota_allocations_total", handler=name) == 4
    assert metric_value(text, "mixer_redisquota_script_loads_total", handler=name) == 2
    assert totals()[name]["fail_open_grants"] == 1
