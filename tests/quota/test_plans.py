"""Plan enforcement and subject resolution: limits, costs, dimensions, shadow limits, key stores."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixer.attributes import AttributeBag
from mixer.decision import RateLimitInfo, rate_limit_headers
from mixer.plans import (
    FileKeyStore,
    KeyRecord,
    PlanConfig,
    PlanEnforcer,
    SubjectResolver,
    SubjectsParams,
    parse_key_file,
)
from mixer.plans._enforce import _escape
from mixer.quota import Allocation, CounterRequest, MemoryCounterStore
from mixer.status import Code
from tests.quota.support import FakeClock, plan

LOG = logging.getLogger("test.plans")


def enforcer(clock: FakeClock) -> PlanEnforcer:
    return PlanEnforcer(MemoryCounterStore(clock=clock), clock=clock)


async def run(e: PlanEnforcer, p: PlanConfig, n: int, subject: str = "alice") -> list[Code]:
    return [(await e.enforce(p, subject)).status.code for _ in range(n)]


async def test_all_limits_of_a_plan_are_spent_together_or_not_at_all() -> None:
    clock = FakeClock()
    p = plan("free", "  - {name: burst, max: 2, per: 1s}\n  - {name: daily, max: 5, per: day}\n")
    e = enforcer(clock)
    assert await run(e, p, 3) == [Code.OK, Code.OK, Code.RESOURCE_EXHAUSTED]
    verdict = await e.enforce(p, "alice")
    assert 'limit "burst" exceeded (2 per 1s)' in verdict.status.message
    daily = next(rl for rl in verdict.rate_limits if rl.name == "daily")
    assert daily.remaining == 3  # the denied requests did not spend the daily limit
    assert daily.retry_after is None
    burst = next(rl for rl in verdict.rate_limits if rl.name == "burst")
    assert burst.retry_after is not None
    clock.advance(1)
    assert await run(e, p, 4) == [Code.OK, Code.OK, Code.RESOURCE_EXHAUSTED, Code.RESOURCE_EXHAUSTED]
    clock.advance(1)
    verdict = await e.enforce(p, "alice")
    assert verdict.status.code is Code.OK
    clock.advance(1)
    verdict = await e.enforce(p, "alice")
    assert verdict.status.message == 'plan "free": limit "daily" exceeded (5 per day)'


async def test_subjects_are_counted_separately_and_headers_name_plan_and_subject() -> None:
    clock = FakeClock()
    p = plan("free", "  - {name: m, max: 1, per: minute}\n")
    e = enforcer(clock)
    ok = await e.enforce(p, "alice")
    assert ok.headers == {"x-mixer-plan": "free", "x-mixer-subject": "alice"}
    assert (await e.enforce(p, "bob")).status.code is Code.OK
    assert (await e.enforce(p, "alice")).status.code is Code.RESOURCE_EXHAUSTED


async def test_calendar_day_resets_at_local_midnight_in_the_time_zone() -> None:
    zone = ZoneInfo("America/New_York")
    clock = FakeClock(datetime(2024, 7, 1, 23, 59, 0, tzinfo=zone).timestamp())
    p = plan("free", "  - {name: daily, max: 1, per: day, time_zone: America/New_York}\n")
    e = enforcer(clock)
    first = await e.enforce(p, "alice")
    assert first.rate_limits[0].reset == pytest.approx(60)
    assert first.rate_limits[0].window == 86400
    assert (await e.enforce(p, "alice")).status.code is Code.RESOURCE_EXHAUSTED
    clock.advance(59)  # 23:59:59 in New York, 03:59:59 UTC: still the same local day
    assert (await e.enforce(p, "alice")).status.code is Code.RESOURCE_EXHAUSTED
    clock.advance(1)  # local midnight
    assert (await e.enforce(p, "alice")).status.code is Code.OK


async def test_a_utc_day_would_not_have_reset_at_new_york_midnight() -> None:
    zone = ZoneInfo("America/New_York")
    clock = FakeClock(datetime(2024, 7, 1, 23, 59, 0, tzinfo=zone).timestamp())
    p = plan("free", "  - {name: daily, max: 1, per: day}\n")
    e = enforcer(clock)
    assert (await e.enforce(p, "alice")).status.code is Code.OK
    clock.advance(60)
    assert (await e.enforce(p, "alice")).status.code is Code.RESOURCE_EXHAUSTED


async def test_cost_expression_reads_the_request_size() -> None:
    clock = FakeClock()
    p = plan("data", "  - {name: kib, max: 10, per: minute, cost: 'request.size / 1024 | 1'}\n")
    e = enforcer(clock)
    big = AttributeBag({"request.size": 8 * 1024})
    verdict = await e.enforce(p, "alice", bag=big)
    assert verdict.rate_limits[0].remaining == 2
    assert (await e.enforce(p, "alice", bag=AttributeBag({}))).rate_limits[0].remaining == 1  # fallback 1
    denied = await e.enforce(p, "alice", bag=AttributeBag({"request.size": 2048}))
    assert denied.status.code is Code.RESOURCE_EXHAUSTED
    # A cost of 0 passes even on an exhausted limit.
    assert (await e.enforce(p, "alice", bag=AttributeBag({"request.size": 10}))).status.code is Code.OK


async def test_a_failing_cost_is_internal_and_spends_nothing() -> None:
    clock = FakeClock()
    p = plan("data", "  - {name: kib, max: 10, per: minute, cost: request.size}\n")
    e = enforcer(clock)
    verdict = await e.enforce(p, "alice", bag=AttributeBag({}))
    assert verdict.status.code is Code.INTERNAL
    assert "request.size" in verdict.status.message
    assert e.stats.evaluation_errors == 1


async def test_dimensions_count_apis_separately() -> None:
    clock = FakeClock()
    p = plan(
        "free",
        "  - {name: per_api, max: 1, per: minute, dimensions: [subject, api]}\n"
        "  - name: per_region\n    max: 100\n    per: minute\n"
        '    dimensions: [{region: \'request.headers["x-region"] | "none"\'}]\n',
    )
    e = enforcer(clock)
    bag = AttributeBag({"request.headers": {"x-region": "eu"}})
    assert (await e.enforce(p, "alice", api="orders", bag=bag)).status.code is Code.OK
    assert (await e.enforce(p, "alice", api="billing", bag=bag)).status.code is Code.OK
    assert (await e.enforce(p, "alice", api="orders", bag=bag)).status.code is Code.RESOURCE_EXHAUSTED
    region = await e.enforce(p, "bob", api="search", bag=bag)
    # per_region has no subject dimension: everyone in the region shares it.
    assert next(rl for rl in region.rate_limits if rl.name == "per_region").remaining == 97


async def test_counter_keys_cannot_collide() -> None:
    p = plan("free", "  - {name: m, max: 1, per: minute, dimensions: [subject, api]}\n")
    e = enforcer(FakeClock())
    one = e.counter_key(p, p.limits[0], [("subject", "a/api=b"), ("api", "")])
    two = e.counter_key(p, p.limits[0], [("subject", "a"), ("api", "b/api=")])
    assert one != two


class RecordingStore(MemoryCounterStore):
    """Keeps the requests each allocation was asked for."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.asked: list[list[CounterRequest]] = []

    async def allocate(
        self, requests: Sequence[CounterRequest], *, deduplication_id: str = "", dedup_seconds: float = 0.0
    ) -> Allocation:
        self.asked.append(list(requests))
        return await super().allocate(
            requests, deduplication_id=deduplication_id, dedup_seconds=dedup_seconds
        )


@pytest.mark.parametrize("subject", ["alice", "a/b=c", "", "é x"])
async def test_keys_and_group_as_counter_key_and_counter_group_spell_them(subject: str) -> None:
    clock = FakeClock()
    p = plan(
        "free.tier",
        "  - {name: per-api, max: 9, per: minute, dimensions: [subject, api]}\n"
        "  - name: per_region\n    max: 9\n    per: minute\n"
        '    dimensions: [subject, {re_gion: \'request.headers["x-region"] | "none"\'}]\n',
    )
    store = RecordingStore(clock)
    e = PlanEnforcer(store, key_prefix="plan/", clock=clock)
    bag = AttributeBag({"request.headers": {"x-region": "eu/west"}})
    assert (await e.enforce(p, subject, api="or ders", bag=bag)).status.code is Code.OK
    builtin = {"subject": subject, "api": "or ders", "operation": ""}
    first, second = store.asked[0]
    assert first.key == e.counter_key(p, p.limits[0], [("subject", subject), ("api", "or ders")])
    assert second.key == e.counter_key(p, p.limits[1], [("subject", subject), ("re_gion", "eu/west")])
    group = e.counter_group(p, builtin)
    assert first.group == second.group == group
    assert group == f"plan/free.tier/subject={quote(subject, safe='')}"


async def test_a_changed_plan_of_the_same_name_gets_new_keys() -> None:
    clock = FakeClock()
    store = RecordingStore(clock)
    e = PlanEnforcer(store, clock=clock)
    await e.enforce(plan("free", "  - {name: a, max: 9, per: minute}\n"), "alice")
    await e.enforce(plan("free", "  - {name: b, max: 9, per: minute, dimensions: [api]}\n"), "alice", api="x")
    assert [r.key for asked in store.asked for r in asked] == ["free/a/subject=alice", "free/b/api=x"]
    assert [r.group for asked in store.asked for r in asked] == ["free/subject=alice", "free/api=x"]


@given(st.text(alphabet=st.characters(max_codepoint=0x7F)) | st.text())
def test_counter_key_parts_escape_as_quote_does(text: str) -> None:
    # The unreserved-characters shortcut must give exactly what quote() gives, for any text.
    assert _escape(text) == quote(text, safe="")


@pytest.mark.parametrize("text", ["tenant-001", "a.b_c~d", "", "a/b", "é", "a b", "x=y", "%41"])
def test_counter_key_parts_escape_examples(text: str) -> None:
    assert _escape(text) == quote(text, safe="")


async def test_shadow_overage_is_allowed_counted_and_flagged() -> None:
    clock = FakeClock()
    p = plan(
        "free",
        "  - {name: trial, max: 1, per: minute, overage: shadow}\n  - {name: real, max: 10, per: minute}\n",
    )
    e = enforcer(clock)
    first = await e.enforce(p, "alice")
    assert "x-mixer-overage" not in first.headers
    second = await e.enforce(p, "alice")
    assert second.status.code is Code.OK
    assert second.headers["x-mixer-overage"] == "trial"
    assert second.overages == ("trial",)
    assert [rl.name for rl in second.rate_limits] == ["real"]  # a limit on trial is not advertised
    assert second.rate_limits[0].remaining == 8
    assert e.stats.shadow_overages == {"free/trial": 1}


async def test_gcra_limit_with_burst() -> None:
    clock = FakeClock()
    p = plan("pro", "  - {name: m, max: 60, per: 1m, algorithm: gcra, burst: 3}\n")
    e = enforcer(clock)
    assert await run(e, p, 4) == [Code.OK] * 3 + [Code.RESOURCE_EXHAUSTED]
    clock.advance(1)
    assert await run(e, p, 2) == [Code.OK, Code.RESOURCE_EXHAUSTED]


async def test_rolling_window_limit() -> None:
    clock = FakeClock()
    p = plan("pro", "  - {name: m, max: 2, per: 1m, algorithm: rolling_window, buckets: 2}\n")
    e = enforcer(clock)
    assert await run(e, p, 1) == [Code.OK]
    clock.advance(30)
    assert await run(e, p, 2) == [Code.OK, Code.RESOURCE_EXHAUSTED]
    clock.advance(30)
    assert await run(e, p, 2) == [Code.OK, Code.RESOURCE_EXHAUSTED]


async def test_a_retried_check_with_the_same_dedup_id_spends_once() -> None:
    clock = FakeClock()
    p = plan("free", "  - {name: m, max: 2, per: minute}\n")
    e = enforcer(clock)
    first = await e.enforce(p, "alice", deduplication_id="check-1")
    retry = await e.enforce(p, "alice", deduplication_id="check-1")
    assert retry.replayed
    assert retry.rate_limits == first.rate_limits
    assert (await e.enforce(p, "alice", deduplication_id="check-2")).status.code is Code.OK
    assert (await e.enforce(p, "alice", deduplication_id="check-3")).status.code is Code.RESOURCE_EXHAUSTED


# -- rate-limit headers ---------------------------------------------------------------------------


def test_rate_limit_headers_follow_the_draft() -> None:
    headers = rate_limit_headers(
        [
            RateLimitInfo("per_minute", 10, 3, 41.2, 60),
            RateLimitInfo("per_day", 1000, 990, 3600.0, 86400),
        ]
    )
    assert headers == {
        "RateLimit-Policy": '"per_minute";q=10;w=60, "per_day";q=1000;w=86400',
        "RateLimit": '"per_minute";r=3;t=42, "per_day";r=990;t=3600',
    }


def test_retry_after_is_the_longest_wait_of_the_denying_limits() -> None:
    headers = rate_limit_headers(
        [
            RateLimitInfo("a", 10, 0, 12.5, 60, retry_after=12.5),
            RateLimitInfo("b", 5, 0, 3.0, 60, retry_after=0.2),
            RateLimitInfo("c", 5, 5, 0.0, 60),
        ]
    )
    assert headers["Retry-After"] == "13"
    assert headers["RateLimit"] == '"a";r=0;t=13, "b";r=0;t=3, "c";r=5;t=0'
    assert "Retry-After" not in rate_limit_headers(
        [RateLimitInfo("g", 5, 0, 1, 60, retry_after=float("inf"))]
    )
    assert rate_limit_headers([]) == {}


def _reference_rate_limit_headers(limits: list[RateLimitInfo]) -> dict[str, str]:
    # The headers spelled out the slow way, limit by limit, as the draft defines them.
    def whole(seconds: float) -> int:
        return max(math.ceil(seconds - 1e-9), 0) if math.isfinite(seconds) else 0

    def sf(text: str) -> str:
        printable = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
        return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'

    if not limits:
        return {}
    headers = {
        "RateLimit-Policy": ", ".join(
            f"{sf(rl.name)};q={max(rl.limit, 0)};w={whole(rl.window)}" for rl in limits
        ),
        "RateLimit": ", ".join(
            f"{sf(rl.name)};r={max(rl.remaining, 0)};t={whole(rl.reset)}" for rl in limits
        ),
    }
    waits = [rl.retry_after for rl in limits if rl.retry_after is not None]
    if waits and all(math.isfinite(wait) for wait in waits):
        headers["Retry-After"] = str(max(whole(max(waits)), 1))
    return headers


_seconds = st.floats(allow_nan=True, allow_infinity=True, min_value=None, max_value=None) | st.integers(
    0, 10**6
)
_limits = st.lists(
    st.builds(
        RateLimitInfo,
        st.text(max_size=6),
        st.integers(-5, 10**6),
        st.integers(-5, 10**6),
        _seconds,
        _seconds,
        st.none() | _seconds,
    ),
    max_size=4,
)


@given(_limits)
def test_rate_limit_headers_match_the_draft_spelled_out(limits: list[RateLimitInfo]) -> None:
    assert rate_limit_headers(iter(limits)) == _reference_rate_limit_headers(limits)


def test_policy_names_are_structured_field_strings() -> None:
    headers = rate_limit_headers([RateLimitInfo('we"ird\\', 1, 0, 0.4, 1)])
    assert headers["RateLimit-Policy"] == '"we\\"ird\\\\";q=1;w=1'
    assert headers["RateLimit"].endswith(";r=0;t=1")


# -- subjects ----------------------------------------------------------------------------------------


def resolver(**params: object) -> SubjectResolver:
    return SubjectResolver.build(SubjectsParams.model_validate(params), LOG, {})


async def test_an_api_key_decides_alone() -> None:
    r = resolver(keys={"inline": {"k1": {"subject": "alice", "plan": "free"}}}, default_plan="free")
    found = await r.resolve("k1", "", "")
    assert (found.subject, found.plan) == ("alice", "free")
    unknown = await r.resolve("nope", "", "")
    assert unknown.status.code is Code.UNAUTHENTICATED
    assert "nope" not in unknown.status.message


async def test_an_unidentified_caller_is_unauthenticated_without_a_default_plan() -> None:
    r = resolver(keys={"inline": {"k1": {"subject": "alice", "plan": "free"}}})
    assert (await r.resolve("", "", "")).status.code is Code.UNAUTHENTICATED
    denied = resolver(unknown_key="PERMISSION_DENIED")
    assert (await denied.resolve("x", "", "")).status.code is Code.PERMISSION_DENIED


async def test_a_plan_claim_counts_only_when_trusted_verified_and_with_a_principal() -> None:
    trusting = resolver(trust_plan_claim=True, default_plan="free")
    verified = {"plan_verified": True, "principal_verified": True}
    claimed = await trusting.resolve("", "pro", "user-7", **verified)
    assert (claimed.subject, claimed.plan) == ("user-7", "pro")
    assert (await trusting.resolve("", "pro", "", **verified)).plan == "free"
    distrusting = resolver(default_plan="free")
    assert (await distrusting.resolve("", "pro", "user-7", **verified)).plan == "free"
    # Self-asserted: the claim is ignored, and the principal picks no counter of its own.
    asserted = await trusting.resolve("", "enterprise", "user-7")
    assert (asserted.subject, asserted.plan) == ("anonymous", "free")
    half = await trusting.resolve("", "enterprise", "user-7", principal_verified=True)
    assert (half.subject, half.plan) == ("user-7", "free")


async def test_principals_and_the_default_plan() -> None:
    r = resolver(principals={"spiffe://mesh/sa/batch": "enterprise"}, default_plan="free")
    mapped = await r.resolve("", "", "spiffe://mesh/sa/batch", principal_verified=True)
    assert (mapped.subject, mapped.plan) == ("spiffe://mesh/sa/batch", "enterprise")
    anonymous = await r.resolve("", "", "")
    assert (anonymous.subject, anonymous.plan) == ("anonymous", "free")
    # A principal the caller merely sent maps to nothing and shares the anonymous counters.
    unverified = await r.resolve("", "", "spiffe://mesh/sa/batch")
    assert (unverified.subject, unverified.plan) == ("anonymous", "free")


async def test_key_file_is_reloaded_on_change_and_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("k1: {subject: alice, plan: free}\n")
    clock = FakeClock()
    store = FileKeyStore(path, LOG, poll_interval=5, clock=clock)
    await store.start()
    assert await store.lookup("k1") == KeyRecord("alice", "free")
    path.write_text('{"k2": {"subject": "bob", "plan": "pro"}}')
    assert await store.lookup("k2") is None  # not polled yet
    clock.advance(5)
    assert await store.lookup("k2") == KeyRecord("bob", "pro")
    assert await store.lookup("k1") is None
    path.write_text("k3: [broken\n")
    clock.advance(5)
    assert await store.lookup("k2") == KeyRecord("bob", "pro")
    assert store.stats.errors == 1


async def test_a_missing_key_file_fails_the_start(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "absent.yaml", LOG)
    with pytest.raises(ValueError, match=r"absent\.yaml"):
        await store.start()


def test_key_file_errors_never_show_the_key() -> None:
    with pytest.raises(ValueError, match="entry 1") as info:
        parse_key_file("secret-key-123: {subject: alice}\n")
    assert "secret-key-123" not in str(info.value)
    with pytest.raises(ValueError, match="mapping"):
        parse_key_file("- a\n- b\n")
    assert parse_key_file("") == {}


def test_an_unknown_plugin_key_store_is_named() -> None:
    with pytest.raises(ValueError, match='unknown key store "redis_hash"'):
        resolver(keys={"store": {"name": "redis_hash"}})
