"""memquota: Mixer quota semantics, plan checks, and plans end to end through the runtime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from adapters.memquota import ADAPTER, MemquotaConfig
from adapters.memquota._handler import MemquotaHandler
from mixer import HandlerEnv, QuotaArgs
from mixer.attributes import AttributeBag, AttributeValue, Condition
from mixer.config import ValidatedConfig, load_config_text
from mixer.decision import CheckOutcome, HeaderOperationKind, QuotaRequest
from mixer.defaults import embedded_config_text
from mixer.plans import KeyRecord, KeyStore, KeyStoreInfo, PlanConfig
from mixer.registry import Registry
from mixer.runtime import Runtime, build_runtime
from mixer.status import Code
from mixer.templates import PlanCheckInstance, QuotaInstance
from plugins.manager import create_plugin_manager
from tests.quota.support import FakeClock, plans

LOG = logging.getLogger("test.memquota")
#: The embedded default's Prometheus listener on a free port, never the conventional 42422.
EPHEMERAL_PORTS = {"MIXER_PROMETHEUS_LISTEN": "127.0.0.1:0"}
NS = "istio-system"


def handler(
    params: Mapping[str, Any] | None = None,
    *,
    clock: FakeClock | None = None,
    plan_map: Mapping[str, PlanConfig] | None = None,
    key_stores: Mapping[str, KeyStoreInfo] | None = None,
) -> MemquotaHandler:
    config = MemquotaConfig.model_validate(params or {})
    env = HandlerEnv("quota.istio-system", LOG, plans=plan_map or {}, key_stores=key_stores or {})
    return MemquotaHandler(config, env, clock=clock or FakeClock(6000.0))


QUOTA_PARAMS = {
    "quotas": [
        {
            "name": "requestcountquota.instance.istio-system",
            "maxAmount": 3,
            "validDuration": "10s",
            "overrides": [
                {"dimensions": {"destination": "reviews"}, "maxAmount": 1, "validDuration": "5s"},
                {"dimensions": {"destination": "productpage", "source": "10.28.11.20"}, "maxAmount": 5},
                {"dimensions": {"destination": "productpage"}, "maxAmount": 2},
            ],
        },
        {
            "name": "rolling",
            "max_amount": 2,
            "valid_duration": "60s",
            "bucket_duration": "30s",
            "rate_limit_algorithm": "ROLLING_WINDOW",
        },
    ]
}


def quota(
    dimensions: Mapping[str, Any] | None = None, name: str = "requestcountquota.istio-system"
) -> QuotaInstance:
    return QuotaInstance(name, dict(dimensions or {}))


async def grants(h: MemquotaHandler, instance: QuotaInstance, n: int, amount: int = 1) -> list[int]:
    return [(await h.handle_quota(instance, QuotaArgs("", amount))).granted_amount for _ in range(n)]


# -- Mixer quotas ---------------------------------------------------------------------------------


def test_describes_itself() -> None:
    assert ADAPTER.templates == {"apikey", "plancheck", "quota"}
    assert ADAPTER.kinds() == ("memquota",)
    assert ADAPTER.uses_plans


async def test_quota_grants_max_amount_per_window() -> None:
    clock = FakeClock(6000.0)
    h = handler(QUOTA_PARAMS, clock=clock)
    instance = quota({"destination": "ratings"})
    granted = await h.handle_quota(instance, QuotaArgs("", 1))
    assert (granted.granted_amount, granted.valid_duration) == (1, timedelta(seconds=10))
    assert await grants(h, instance, 3) == [1, 1, 0]
    refused = await h.handle_quota(instance, QuotaArgs("", 1))
    # Mixer's memquota: a refusal is valid for no time (so the proxy does not cache it).
    assert (refused.granted_amount, refused.valid_duration) == (0, timedelta(0))
    assert refused.status.code is Code.OK
    clock.advance(10)
    assert await grants(h, instance, 1) == [1]


async def test_quota_window_slides_as_mixers_memquota() -> None:
    # The rate-limiting task's "sliding window of sub-second resolution": two grants late in one
    # epoch-aligned 5 s window still count 2 s later, where a fixed window would have reset.
    clock = FakeClock(6004.5)
    h = handler({"quotas": [{"name": "q", "maxAmount": 2, "validDuration": "5s"}]}, clock=clock)
    instance = quota(name="q.istio-system")
    assert await grants(h, instance, 2) == [1, 1]
    clock.advance(2)  # 6006.5: a new fixed window, the same sliding one
    assert await grants(h, instance, 1) == [0]
    clock.advance(2.9)  # 6009.4: the first two are 4.9 s old, still in the window
    assert await grants(h, instance, 1) == [0]
    clock.advance(0.2)  # 6009.6: 5.1 s old, slid out (100 ms ticks)
    assert await grants(h, instance, 2) == [1, 1]


async def test_fixed_window_when_a_quota_asks_for_it() -> None:
    clock = FakeClock(6004.5)
    params = {
        "quotas": [{"name": "q", "maxAmount": 2, "validDuration": "5s", "rateLimitAlgorithm": "FIXED_WINDOW"}]
    }
    h = handler(params, clock=clock)
    instance = quota(name="q.istio-system")
    assert await grants(h, instance, 3) == [1, 1, 0]
    clock.advance(2)  # 6006.5: the next epoch-aligned window
    assert await grants(h, instance, 1) == [1]


async def test_asking_for_nothing_gets_an_empty_answer() -> None:
    result = await handler(QUOTA_PARAMS).handle_quota(quota({"destination": "x"}), QuotaArgs("", 0))
    assert (result.granted_amount, result.valid_duration, result.status.ok) == (0, timedelta(0), True)


async def test_the_first_matching_override_applies() -> None:
    h = handler(QUOTA_PARAMS)
    assert await grants(h, quota({"destination": "reviews", "source": "x"}), 2) == [1, 0]
    assert await grants(h, quota({"destination": "productpage", "source": "10.28.11.20"}), 6) == [1] * 5 + [0]
    assert await grants(h, quota({"destination": "productpage", "source": "other"}), 3) == [1, 1, 0]
    # Different dimensions are different counters.
    assert await grants(h, quota({"destination": "details"}), 3) == [1, 1, 1]


async def test_an_override_valid_duration_replaces_the_window() -> None:
    h = handler(QUOTA_PARAMS)
    result = await h.handle_quota(quota({"destination": "reviews"}), QuotaArgs("", 1))
    assert result.valid_duration == timedelta(seconds=5)


async def test_best_effort_grants_what_is_left() -> None:
    h = handler(QUOTA_PARAMS)
    instance = quota({"destination": "ratings"})
    assert (await h.handle_quota(instance, QuotaArgs("", 2))).granted_amount == 2
    assert (await h.handle_quota(instance, QuotaArgs("", 5))).granted_amount == 0
    assert (await h.handle_quota(instance, QuotaArgs("", 5, best_effort=True))).granted_amount == 1


async def test_quota_dedup_replays_within_min_deduplication_duration() -> None:
    clock = FakeClock(6000.0)
    h = handler({**QUOTA_PARAMS, "min_deduplication_duration": "2s"}, clock=clock)
    instance = quota({"destination": "ratings"})
    args = QuotaArgs("check-1requestcountquota", 2)
    assert (await h.handle_quota(instance, args)).granted_amount == 2
    assert (await h.handle_quota(instance, args)).granted_amount == 2  # the retry spends nothing
    assert (await h.handle_quota(instance, QuotaArgs("check-2requestcountquota", 1))).granted_amount == 1
    clock.advance(2)
    assert (await h.handle_quota(instance, args)).granted_amount == 0


async def test_deduplication_records_are_bounded_by_bytes_across_reloads() -> None:
    h = handler({**QUOTA_PARAMS, "max_deduplication_bytes": 1000})
    instance = quota({"destination": "ratings"})
    for n in range(5):
        await h.handle_quota(instance, QuotaArgs(f"check-{n}requestcountquota", 1))
    stats = h.store.stats
    assert 0 < stats.dedup_bytes <= 1000
    assert stats.dedup_evictions > 0
    # A reload keeps the store and applies the new budget at the next record.
    config = MemquotaConfig.model_validate({**QUOTA_PARAMS, "max_deduplication_bytes": 0})
    env = HandlerEnv("quota.istio-system", LOG, previous=h)
    reloaded = MemquotaHandler(config, env, clock=FakeClock(6000.0))
    assert reloaded.store is h.store
    await reloaded.handle_quota(instance, QuotaArgs("check-9requestcountquota", 1))
    assert stats.dedup_rejected == 1


async def test_rolling_window_quota() -> None:
    clock = FakeClock(6000.0)
    h = handler(QUOTA_PARAMS, clock=clock)
    instance = quota(name="rolling.istio-system")
    assert await grants(h, instance, 1) == [1]
    clock.advance(30)
    assert await grants(h, instance, 2) == [1, 0]
    clock.advance(30)
    assert await grants(h, instance, 2) == [1, 0]


@pytest.mark.parametrize(
    "instance_name",
    [
        "requestcountquota.istio-system",
        "requestcountquota.quota.istio-system",
        "REQUESTCOUNTQUOTA.istio-system",
    ],
)
async def test_quota_names_match_both_config_forms(instance_name: str) -> None:
    h = handler(QUOTA_PARAMS)
    assert await grants(h, quota({"destination": "reviews"}, name=instance_name), 2) == [1, 0]


async def test_an_unconfigured_quota_is_an_error() -> None:
    result = await handler(QUOTA_PARAMS).handle_quota(quota(name="other.istio-system"), QuotaArgs("", 1))
    assert result.granted_amount == 0
    assert result.status.code is Code.INTERNAL


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="longer than the window"):
        MemquotaConfig.model_validate(
            {"quotas": [{"name": "q", "max_amount": 1, "valid_duration": "1s", "bucket_duration": "2s"}]}
        )
    with pytest.raises(ValueError, match="configured twice"):
        MemquotaConfig.model_validate(
            {"quotas": [{"name": "q", "max_amount": 1, "valid_duration": "1s"}] * 2}
        )
    with pytest.raises(ValueError, match="validDuration"):
        MemquotaConfig.model_validate({"quotas": [{"name": "q", "max_amount": 1}]})


def test_inline_keys_are_hidden_when_the_params_are_shown() -> None:
    config = MemquotaConfig.model_validate(
        {"subjects": {"keys": {"inline": {"secret-key": {"subject": "alice", "plan": "free"}}}}}
    )
    dumped = config.model_dump()
    assert "secret-key" not in str(dumped)
    assert dumped["subjects"]["keys"]["inline"] == {"***1": {"subject": "alice", "plan": "free"}}


# -- plancheck on the handler ---------------------------------------------------------------------

PLANS = plans(
    """
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {name: free}
spec:
  limits: [{name: per_minute, max: 2, per: minute}]
---
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {name: pro}
spec:
  limits: [{name: per_minute, max: 100, per: minute}]
"""
)
PLAN_PARAMS = {
    "subjects": {
        "keys": {"inline": {"k-free": {"subject": "alice", "plan": "free"}}},
        "trust_plan_claim": True,
    }
}


def plancheck(**fields: Any) -> PlanCheckInstance:
    return PlanCheckInstance("plancheck.istio-system", **fields)


async def test_plancheck_answers_are_never_cached_by_the_proxy() -> None:
    h = handler(PLAN_PARAMS, plan_map=PLANS)
    ok = await h.handle_check(plancheck(api_key="k-free"))
    assert ok.status.code is Code.OK
    assert (ok.valid_duration, ok.valid_use_count) == (timedelta(0), 1)
    assert ok.headers == {"x-mixer-plan": "free", "x-mixer-subject": "alice"}
    assert [rl.name for rl in ok.rate_limits] == ["per_minute"]
    await h.handle_check(plancheck(api_key="k-free"))
    denied = await h.handle_check(plancheck(api_key="k-free"))
    assert denied.status.code is Code.RESOURCE_EXHAUSTED
    assert "per_minute" in denied.status.message
    assert (denied.valid_duration, denied.valid_use_count) == (timedelta(0), 1)
    assert denied.rate_limits[0].retry_after is not None


async def test_unknown_or_missing_key_is_unauthenticated() -> None:
    h = handler(PLAN_PARAMS, plan_map=PLANS)
    assert (await h.handle_check(plancheck(api_key="stolen"))).status.code is Code.UNAUTHENTICATED
    assert (await h.handle_check(plancheck())).status.code is Code.UNAUTHENTICATED


def verified(**fields: Any) -> PlanCheckInstance:
    """A plancheck whose plan and principal came from a check handler's attributes."""
    claims = frozenset({"request.auth.claims", "request.auth.principal"})
    return plancheck(
        **fields,
        produced=claims,
        sources={
            "plan": frozenset({"request.auth.claims"}),
            "principal": frozenset({"request.auth.principal"}),
        },
    )


async def test_explicit_plan_claim() -> None:
    h = handler(PLAN_PARAMS, plan_map=PLANS)
    result = await h.handle_check(verified(plan="pro", principal="user-9"))
    assert result.status.code is Code.OK
    assert result.headers == {"x-mixer-plan": "pro", "x-mixer-subject": "user-9"}
    # The same fields, asserted by the caller: no plan, no identity.
    asserted = await h.handle_check(plancheck(plan="pro", principal="user-9"))
    assert asserted.status.code is Code.UNAUTHENTICATED
    unknown = await h.handle_check(verified(plan="platinum", principal="user-9"))
    assert unknown.status.code is Code.PERMISSION_DENIED
    assert 'plan "platinum" is not configured' in unknown.status.message


def test_a_plan_the_params_name_must_exist() -> None:
    with pytest.raises(ValueError, match="'gold'"):
        handler({"subjects": {"default_plan": "gold"}}, plan_map=PLANS)


class _Stub(KeyStore):
    def __init__(self) -> None:
        self.lookups = 0
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def lookup(self, api_key: str) -> KeyRecord | None:
        self.lookups += 1
        return KeyRecord("dave", "pro") if api_key == "remote" else None


class _StubParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    table: str = "keys"


async def test_a_plugin_key_store_behind_a_bounded_cache() -> None:
    stub = _Stub()
    info = KeyStoreInfo("stub", "test", _StubParams, lambda params, logger: stub)
    params = {"subjects": {"keys": {"store": {"name": "stub", "params": {"table": "t"}}}}}
    h = handler(params, plan_map=PLANS, key_stores={"stub": info})
    await h.start()
    assert stub.started
    for _ in range(3):
        assert (await h.handle_check(plancheck(api_key="remote"))).headers["x-mixer-subject"] == "dave"
    assert stub.lookups == 1
    with pytest.raises(ValueError, match="params"):
        handler(
            {"subjects": {"keys": {"store": {"name": "stub", "params": {"nope": 1}}}}},
            key_stores={"stub": info},
        )


async def test_lifecycle_is_idempotent() -> None:
    h = handler(PLAN_PARAMS, plan_map=PLANS)
    await h.start()
    await h.shutdown(1.0)
    await h.shutdown(1.0)


# -- through the runtime ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_registry() -> Registry:
    return create_plugin_manager(load_entry_points=False, blocked=()).registry()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def use_clock(runtime: Runtime, clock: FakeClock, name: str = f"plans.{NS}") -> MemquotaHandler:
    h = runtime.handlers[name]
    assert isinstance(h, MemquotaHandler)
    h.store.clock = clock
    h.enforcer.clock = clock
    return h


@pytest.fixture
async def embedded(real_registry: Registry, clock: FakeClock) -> AsyncIterator[Runtime]:
    config = load_config_text(
        embedded_config_text(), real_registry, source_name="<embedded default>", environ=EPHEMERAL_PORTS
    )
    runtime = build_runtime(config, real_registry)
    use_clock(runtime, clock)
    await runtime.start()
    yield runtime
    await runtime.shutdown(1.0)


def bag(**attributes: AttributeValue) -> AttributeBag:
    values: dict[str, AttributeValue] = {"context.protocol": "http", "request.method": "GET"}
    values.update({name.replace("__", "."): value for name, value in attributes.items()})
    return AttributeBag(values)


def keyed(key: str) -> AttributeBag:
    return AttributeBag({"context.protocol": "http", "request.headers": {"x-api-key": key}})


def response_headers(outcome: CheckOutcome) -> dict[str, str]:
    return {op.name: op.value for op in outcome.response_header_operations}


async def test_embedded_default_free_key_gets_exactly_its_per_minute_limit(
    embedded: Runtime, clock: FakeClock
) -> None:
    codes = [(await embedded.check(keyed("demo-free-key"))).status.code for _ in range(11)]
    assert codes == [Code.OK] * 10 + [Code.RESOURCE_EXHAUSTED]
    denied = await embedded.check(keyed("demo-free-key"))
    assert 'plan "free": limit "per_minute" exceeded' in denied.status.message
    headers = response_headers(denied)
    assert headers["RateLimit-Policy"] == '"per_minute";q=10;w=60, "per_day";q=1000;w=86400'
    assert headers["RateLimit"].startswith('"per_minute";r=0;t=60, "per_day";r=990;t=')
    assert headers["Retry-After"] == "60"
    # The pro key is unaffected.
    pro = [(await embedded.check(keyed("demo-pro-key"))).status.code for _ in range(20)]
    assert pro == [Code.OK] * 20
    clock.advance(60)
    assert (await embedded.check(keyed("demo-free-key"))).status.code is Code.OK


async def test_embedded_default_ok_adds_plan_headers_and_is_not_cacheable(embedded: Runtime) -> None:
    outcome = await embedded.check(bag(request__api_key="demo-enterprise-key"))
    assert outcome.status.code is Code.OK
    assert outcome.headers == {"x-mixer-plan": "enterprise", "x-mixer-subject": "carol"}
    request_ops = [(op.name, op.value, op.operation) for op in outcome.request_header_operations]
    assert ("x-mixer-plan", "enterprise", HeaderOperationKind.REPLACE) in request_ops
    assert (outcome.valid_duration, outcome.valid_use_count) == (timedelta(0), 1)
    assert [rl.name for rl in outcome.rate_limits] == ["per_second"]
    assert response_headers(outcome)["RateLimit-Policy"] == '"per_second";q=1000;w=1'


async def test_embedded_default_denies_unknown_and_missing_keys(embedded: Runtime) -> None:
    unknown = await embedded.check(keyed("guess"))
    assert unknown.status.code is Code.UNAUTHENTICATED
    assert (await embedded.check(bag())).status.code is Code.UNAUTHENTICATED
    assert unknown.rate_limits == ()
    assert response_headers(unknown) == {}
    # TCP connections are not plan-checked.
    assert (await embedded.check(AttributeBag({"context.protocol": "tcp"}))).status.code is Code.OK


async def test_embedded_default_ignores_a_self_asserted_plan_claim(embedded: Runtime) -> None:
    # No key and a plan claim nobody verified: a fresh principal per call must not buy a plan
    # or a fresh counter.
    for n in range(3):
        claims = bag(
            request__auth__principal=f"issuer/user-{n}", request__auth__claims={"plan": "enterprise"}
        )
        outcome = await embedded.check(claims)
        assert outcome.status.code is Code.UNAUTHENTICATED
        assert "x-mixer-plan" not in outcome.headers


async def test_a_plan_claim_in_an_attribute_the_operator_trusts_is_honoured(
    real_registry: Registry,
) -> None:
    # A proxy in front verifies tokens and sets request.auth.*; the operator says so.
    text = embedded_config_text().replace(
        "      trust_plan_claim: true\n",
        "      trust_plan_claim: true\n      trusted_attributes: [request.auth.claims, request.auth.principal]\n",
    )
    assert "trusted_attributes" in text
    config = load_config_text(text, real_registry, source_name="trusting.yaml", environ=EPHEMERAL_PORTS)
    runtime = build_runtime(config, real_registry)
    await runtime.start()
    try:
        claims = bag(request__auth__principal="issuer/user-1", request__auth__claims={"plan": "pro"})
        outcome = await runtime.check(claims)
        assert outcome.status.code is Code.OK, outcome.status
        assert (outcome.headers["x-mixer-plan"], outcome.headers["x-mixer-subject"]) == (
            "pro",
            "issuer/user-1",
        )
        # Only what the operator listed: a principal from source.principal (mTLS) is not in it.
        mtls = bag(source__principal="spiffe://mesh/sa/x", request__auth__claims={"plan": "pro"})
        assert (await runtime.check(mtls)).status.code is Code.UNAUTHENTICATED
    finally:
        await runtime.shutdown(1.0)


async def test_a_retried_check_does_not_spend_twice(embedded: Runtime) -> None:
    for _ in range(5):
        assert (await embedded.check(keyed("demo-free-key"), deduplication_id="retry-me")).status.ok
    remaining = [(await embedded.check(keyed("demo-free-key"))).status.code for _ in range(10)]
    assert remaining == [Code.OK] * 9 + [Code.RESOURCE_EXHAUSTED]


COST_CONFIG = """
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {name: data}
spec:
  limits:
  - {name: kib, max: 10, per: minute, cost: 'request.size / 1024 | 1', dimensions: [subject, api]}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: plans}
spec:
  compiledAdapter: memquota
  params:
    subjects:
      keys: {inline: {k1: {subject: alice, plan: data}}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: plancheck}
spec:
  compiledTemplate: plancheck
  params:
    api_key: request.api_key | ""
    api: api.service | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: plans}
spec:
  actions:
  - {handler: plans, instances: [plancheck]}
"""


def load(text: str, registry: Registry) -> ValidatedConfig:
    return load_config_text(text, registry, source_name="test.yaml")


async def test_attributes_read_by_cost_expressions_are_referenced(real_registry: Registry) -> None:
    runtime = build_runtime(load(COST_CONFIG, real_registry), real_registry)
    await runtime.start()
    outcome = await runtime.check(bag(request__api_key="k1", request__size=4096, api__service="orders"))
    assert outcome.status.code is Code.OK
    assert outcome.rate_limits[0].remaining == 6
    referenced = {(m.name, m.condition) for m in outcome.referenced}
    assert ("request.size", Condition.EXACT) in referenced
    assert ("request.api_key", Condition.EXACT) in referenced
    absent = await runtime.check(bag(request__api_key="k1", api__service="billing"))
    assert ("request.size", Condition.ABSENCE) in {(m.name, m.condition) for m in absent.referenced}
    assert absent.rate_limits[0].remaining == 9  # another API: another counter; cost 1 by fallback
    await runtime.shutdown(1.0)


async def test_reload_keeps_counters_and_a_plan_change_rebuilds_the_handler(real_registry: Registry) -> None:
    first = build_runtime(load(COST_CONFIG, real_registry), real_registry)
    await first.start()
    request = bag(request__api_key="k1", request__size=8192)
    assert (await first.check(request)).rate_limits[0].remaining == 2

    same = build_runtime(load(COST_CONFIG, real_registry), real_registry, previous=first)
    assert same.delta.reused == (f"plans.{NS}",)

    bigger = COST_CONFIG.replace("max: 10,", "max: 20,")
    second = build_runtime(load(bigger, real_registry), real_registry, previous=same)
    assert second.delta.new == (f"plans.{NS}",)
    await second.start()
    await first.shutdown(1.0)
    # The new handler took the counters over: 8 KiB were spent under the old plan.
    assert (await second.check(request)).rate_limits[0].remaining == 4
    await second.shutdown(1.0)


async def test_mixer_quota_through_the_runtime(real_registry: Registry) -> None:
    text = """
apiVersion: config.istio.io/v1alpha2
kind: memquota
metadata: {name: handler}
spec:
  quotas:
  - {name: requestcount.quota.istio-system, maxAmount: 2, validDuration: 60s}
---
apiVersion: config.istio.io/v1alpha2
kind: quota
metadata: {name: requestcount}
spec:
  dimensions:
    destination: destination.service.name | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: quota}
spec:
  actions:
  - {handler: handler.memquota, instances: [requestcount.quota]}
"""
    runtime = build_runtime(load(text, real_registry), real_registry)
    await runtime.start()
    ask = {"requestcount": QuotaRequest(1)}
    target = AttributeBag({"destination.service.name": "reviews"})
    granted = [(await runtime.check(target, ask, "d1")).quotas["requestcount"].granted_amount]
    granted.append((await runtime.check(target, ask, "d1")).quotas["requestcount"].granted_amount)  # a retry
    granted += [
        (await runtime.check(target, ask, f"d{i}")).quotas["requestcount"].granted_amount for i in (2, 3)
    ]
    assert granted == [1, 1, 1, 0]
    await runtime.shutdown(1.0)


def test_request_context_templates_need_the_two_fields() -> None:
    from mixer.templates import ListEntryInstance, TemplateSpec, Variety

    with pytest.raises(TypeError, match="attributes"):
        TemplateSpec("broken", Variety.CHECK, (), ListEntryInstance, request_context=True)


DENY_BLOCKED = """
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: blocked, namespace: istio-system}
spec:
  compiledAdapter: denier
  params: {status: {code: 7, message: blocked path}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: nothing, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: blocked, namespace: istio-system}
spec:
  match: request.path == "/blocked"
  actions: [{handler: blocked, instances: [nothing]}]
"""


async def test_a_request_another_precondition_refuses_spends_no_plan_quota(
    real_registry: Registry, clock: FakeClock
) -> None:
    config = load_config_text(
        embedded_config_text() + DENY_BLOCKED, real_registry, source_name="<test>", environ=EPHEMERAL_PORTS
    )
    runtime = build_runtime(config, real_registry)
    use_clock(runtime, clock)
    await runtime.start()
    try:
        blocked = AttributeBag(
            {"context.protocol": "http", "request.path": "/blocked", "request.api_key": "demo-free-key"}
        )
        for _ in range(15):
            outcome = await runtime.check(blocked)
            assert outcome.status.code is Code.PERMISSION_DENIED
            assert "blocked path" in outcome.status.message
            assert not outcome.rate_limits
        # The free plan's 10 per minute are all still there.
        codes = [(await runtime.check(keyed("demo-free-key"))).status.code for _ in range(11)]
        assert codes == [Code.OK] * 10 + [Code.RESOURCE_EXHAUSTED]
    finally:
        await runtime.shutdown(1.0)


ISTIO_APIKEY_CONFIG = """
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {name: basic}
spec:
  limits:
  - {name: per_minute, max: 3, per: minute, dimensions: [subject, api]}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: keys, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    subjects:
      keys:
        inline:
          k1: {subject: dana, plan: basic}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: apikey, namespace: istio-system}
spec:
  compiledTemplate: apikey
  params:
    api: api.service | destination.service.name | ""
    api_version: api.version | "v1"
    api_operation: api.operation | request.method | ""
    api_key: request.api_key | request.headers["x-api-key"] | ""
    timestamp: request.time | context.time | timestamp("2000-01-01T00:00:00Z")
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: keys, namespace: istio-system}
spec:
  actions: [{handler: keys, instances: [apikey]}]
"""


async def test_istio_apikey_template_enforces_the_key_plan(real_registry: Registry, clock: FakeClock) -> None:
    config = load_config_text(ISTIO_APIKEY_CONFIG, real_registry, source_name="<apikey>")
    runtime = build_runtime(config, real_registry)
    use_clock(runtime, clock, f"keys.{NS}")
    await runtime.start()
    try:

        def call(key: str, service: str) -> AttributeBag:
            return AttributeBag({"request.api_key": key, "destination.service.name": service})

        codes = [(await runtime.check(call("k1", "orders"))).status.code for _ in range(4)]
        assert codes == [Code.OK] * 3 + [Code.RESOURCE_EXHAUSTED]
        # Counted per API: another service has its own three.
        assert (await runtime.check(call("k1", "billing"))).status.code is Code.OK
        allowed = await runtime.check(call("k1", "billing"))
        assert {op.name: op.value for op in allowed.request_header_operations}["x-mixer-plan"] == "basic"
        assert (await runtime.check(call("nope", "orders"))).status.code is Code.UNAUTHENTICATED
        # A retried Check (same deduplication id) spends nothing.
        first = await runtime.check(call("k1", "search"), deduplication_id="retry-1")
        again = await runtime.check(call("k1", "search"), deduplication_id="retry-1")
        assert first.status.code is again.status.code is Code.OK
        remaining = [rl.remaining for rl in again.rate_limits]
        assert remaining == [2]
    finally:
        await runtime.shutdown(1.0)
