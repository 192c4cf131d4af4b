"""The cache of precondition answers: keys, validity, bounds, invalidation, and what it never holds."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from mixer.attributes import AttributeBag
from mixer.config import ValidatedConfig
from mixer.runtime import QuotaRequest, Runtime, build_runtime
from mixer.status import Code
from tests.runtime.support import RecordingHandler, config, fq, handler, header_op, instance, registry, rule

CACHE_BYTES = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def runtime(cfg: ValidatedConfig, clock: Clock | None = None, cache_bytes: int = CACHE_BYTES) -> Runtime:
    return build_runtime(cfg, registry(), clock=clock or Clock(), check_cache_bytes=cache_bytes)


def recording(rt: Runtime, name: str) -> RecordingHandler:
    h = rt.handlers[fq(name)]
    assert isinstance(h, RecordingHandler)
    return h


def bag(**values: Any) -> AttributeBag:
    return AttributeBag({k.replace("__", "."): v for k, v in values.items()})


def list_config(match: str | None = None, **params: Any) -> ValidatedConfig:
    """One checker on ``source.name``, with a header operation on ``request.path``."""
    return config(
        [handler("lists", **params)],
        [instance("who", "listentry", value='source.name | "anon"')],
        [
            rule(
                "allow",
                match,
                (fq("lists"), [fq("who")]),
                response_headers=[header_op("x-path", 'request.path | "/"')],
            )
        ],
    )


async def test_a_repeated_check_is_answered_from_the_cache() -> None:
    rt = runtime(list_config(valid_seconds=30, valid_use_count=100))
    first = await rt.check(bag(source__name="alice", request__path="/a"))
    second = await rt.check(bag(source__name="alice", request__path="/a"))
    assert len(recording(rt, "lists").checks) == 1
    assert (rt.stats.check_cache_hits, rt.stats.check_cache_misses) == (1, 1)
    assert second.status == first.status
    assert second.referenced == first.referenced
    assert second.response_header_operations == first.response_header_operations
    # What is left of the validity: the first answer was the first of its 100 uses.
    assert second.valid_duration == timedelta(seconds=30)
    assert second.valid_use_count == 99
    assert rt.stats.check_calls == 2


async def test_the_key_holds_every_referenced_attribute_and_nothing_else() -> None:
    rt = runtime(list_config('destination.service.host == "shop"'))
    checks = recording(rt, "lists").checks
    base = {"destination__service__host": "shop", "source__name": "alice", "request__path": "/a"}
    await rt.check(bag(**base))
    # Only attributes the answer did not read differ: same answer.
    await rt.check(bag(**base, request__method="POST", source__ip=b"\x01\x02\x03\x04"))
    assert len(checks) == 1
    # Each attribute the answer read (the match's, the instance's, the header's) tells answers apart.
    for name, value in (
        ("source__name", "bob"),
        ("request__path", "/b"),
        ("destination__service__host", "x"),
    ):
        before = rt.stats.check_cache_misses
        outcome = await rt.check(bag(**{**base, name: value}))
        assert rt.stats.check_cache_misses == before + 1, name
        if name == "request__path":
            assert outcome.response_header_operations[0].value == "/b"
    assert [c.value for c in checks] == ["alice", "bob", "alice"]  # type: ignore[attr-defined]
    # An attribute read as absent is part of the key too.
    await rt.check(bag(destination__service__host="shop", request__path="/a"))
    assert [c.value for c in checks][-1] == "anon"  # type: ignore[attr-defined]


async def test_values_of_different_types_are_different_keys() -> None:
    cfg = config(
        [handler("lists")],
        [instance("who", "listentry", value="request.size")],
        [rule("allow", None, (fq("lists"), [fq("who")]))],
    )
    rt = runtime(cfg)
    # Equal in Python (1 == 1.0 == True), not as attribute values a handler may tell apart.
    for value in (1, 1, 1.0, True):
        await rt.check(bag(request__size=value))
    assert [type(c.value) for c in recording(rt, "lists").checks] == [int, float, bool]  # type: ignore[attr-defined]


async def test_an_answer_expires_with_its_valid_duration_or_use_count() -> None:
    clock = Clock()
    rt = runtime(list_config(valid_seconds=5, valid_use_count=3), clock)
    checks = recording(rt, "lists").checks
    alice = bag(source__name="alice")
    await rt.check(alice)
    clock.now += 4
    later = await rt.check(alice)
    assert len(checks) == 1
    assert later.valid_duration == timedelta(seconds=1)
    clock.now += 1
    await rt.check(alice)
    assert len(checks) == 2
    # Three uses: the answer given when it was cached, then two from the cache.
    await rt.check(alice)
    await rt.check(alice)
    await rt.check(alice)
    assert len(checks) == 3
    assert rt.stats.check_cache_drops == 2


async def test_denials_are_cached_only_when_the_handler_allows() -> None:
    cacheable = runtime(list_config(code=Code.PERMISSION_DENIED, message="no", valid_seconds=10))
    for _ in range(3):
        outcome = await cacheable.check(bag(source__name="mallory"))
        assert outcome.status.code is Code.PERMISSION_DENIED
    assert len(recording(cacheable, "lists").checks) == 1
    settings: list[dict[str, Any]] = [{"valid_seconds": 0}, {"valid_use_count": 1}]
    for params in settings:
        uncached = runtime(list_config(code=Code.PERMISSION_DENIED, **params))
        await uncached.check(bag(source__name="mallory"))
        await uncached.check(bag(source__name="mallory"))
        assert len(recording(uncached, "lists").checks) == 2
        assert uncached.stats.check_cache_hits == 0


async def test_failures_the_runtime_makes_are_not_cached() -> None:
    rt = runtime(list_config(raise_message="backend down"))
    await rt.check(bag(source__name="alice"))
    outcome = await rt.check(bag(source__name="alice"))
    assert outcome.status.code is Code.INTERNAL
    assert len(recording(rt, "lists").checks) == 2


async def test_the_cache_is_bounded_in_bytes_and_counts_evictions() -> None:
    rt = runtime(list_config(), cache_bytes=16 * 1024)
    for i in range(200):
        await rt.check(bag(source__name=f"caller-{i}"))
    assert rt.stats.check_cache_evictions > 0
    assert 0 < rt.stats.check_cache_bytes <= 16 * 1024
    assert len(rt.check_cache) + rt.stats.check_cache_evictions == 200
    # The most recent callers are still there, the first ones not.
    before = len(recording(rt, "lists").checks)
    await rt.check(bag(source__name="caller-199"))
    await rt.check(bag(source__name="caller-0"))
    assert len(recording(rt, "lists").checks) == before + 1


async def test_an_entry_too_large_for_the_cache_is_dropped_and_counted() -> None:
    rt = runtime(list_config(), cache_bytes=2048)
    await rt.check(bag(source__name="x" * 4096))
    await rt.check(bag(source__name="x" * 4096))
    assert len(recording(rt, "lists").checks) == 2
    assert rt.stats.check_cache_drops == 2
    assert len(rt.check_cache) == 0


async def test_zero_bytes_turns_the_cache_off() -> None:
    rt = runtime(list_config(), cache_bytes=0)
    await rt.check(bag(source__name="alice"))
    await rt.check(bag(source__name="alice"))
    assert len(recording(rt, "lists").checks) == 2
    assert (rt.stats.check_cache_hits, rt.stats.check_cache_misses) == (0, 0)


async def test_a_reload_drops_the_cache() -> None:
    first = runtime(list_config())
    await first.start()
    await first.check(bag(source__name="alice"))
    second = build_runtime(list_config(), registry(), previous=first)
    assert second.check_cache is first.check_cache
    await second.start()
    assert len(second.check_cache) == 0
    await second.check(bag(source__name="alice"))
    # The handler was reused: the second answer was asked again, not taken from the cache.
    assert len(recording(second, "lists").checks) == 2
    # The runtime of the older config no longer reads or fills the cache.
    hits = second.stats.check_cache_hits
    await first.check(bag(source__name="alice"))
    assert second.stats.check_cache_hits == hits
    assert len(recording(second, "lists").checks) == 3
    await second.check(bag(source__name="alice"))
    assert second.stats.check_cache_hits == hits + 1
    await second.shutdown(1.0)
    await first.shutdown(1.0)


async def test_a_runtime_of_a_newer_config_never_sees_older_answers() -> None:
    first = runtime(list_config())
    await first.check(bag(source__name="alice"))
    # Not started (as in a test or a tool): its first Check still drops what the older config cached.
    second = build_runtime(list_config(code=Code.PERMISSION_DENIED), registry(), previous=first)
    outcome = await second.check(bag(source__name="alice"))
    assert outcome.status.code is Code.PERMISSION_DENIED
    assert second.stats.check_cache_hits == 0


async def test_a_handler_whose_answers_changed_drops_the_cache() -> None:
    rt = runtime(list_config())
    await rt.check(bag(source__name="alice"))
    recording(rt, "lists").env.answers_changed()
    assert len(rt.check_cache) == 0
    assert rt.stats.check_cache_drops == 1
    await rt.check(bag(source__name="alice"))
    assert len(recording(rt, "lists").checks) == 2


async def test_an_answer_worked_out_across_an_invalidation_is_not_cached() -> None:
    rt = runtime(list_config(delay=0.05))
    pending = asyncio.create_task(rt.check(bag(source__name="alice")))
    await asyncio.sleep(0.01)
    recording(rt, "lists").env.answers_changed()
    assert (await pending).status.code is Code.OK
    assert len(rt.check_cache) == 0
    await rt.check(bag(source__name="alice"))
    assert len(recording(rt, "lists").checks) == 2


def plan_and_quota_config(**lists: Any) -> ValidatedConfig:
    return config(
        [
            handler("lists", **lists),
            handler("plans", valid_seconds=60),
            handler("mq", valid_seconds=60),
        ],
        [
            instance("who", "listentry", value='source.name | "anon"'),
            instance("key", "apikey", api_key='request.api_key | ""'),
            instance("requestcount", "quota"),
        ],
        [
            rule("allow", None, (fq("lists"), [fq("who")])),
            rule("plans", None, (fq("plans"), [fq("key")])),
            rule("quota", None, (fq("mq"), [fq("requestcount")])),
        ],
    )


async def test_plan_checks_and_quotas_are_never_cached() -> None:
    rt = runtime(plan_and_quota_config())
    quotas = {"requestcount": QuotaRequest(1)}
    outcomes = [
        await rt.check(bag(source__name="alice", request__api_key=f"k{i % 2}"), quotas, f"d{i}")
        for i in range(4)
    ]
    assert len(recording(rt, "lists").checks) == 1
    assert len(recording(rt, "plans").checks) == 4
    assert [args.deduplication_id for _, args in recording(rt, "mq").quotas] == [
        f"d{i}requestcount" for i in range(4)
    ]
    assert all(o.quotas["requestcount"].granted_amount == 1 for o in outcomes)
    # The plan check's reads are referenced whether or not the rest came from the cache.
    assert outcomes[3].referenced == outcomes[1].referenced
    assert any(m.name == "request.api_key" for m in outcomes[3].referenced)
    assert any(m.name == "source.name" for m in outcomes[3].referenced)


async def test_a_denial_from_the_cache_still_skips_plan_checks_and_quotas() -> None:
    rt = runtime(plan_and_quota_config(code=Code.PERMISSION_DENIED, message="no"))
    for _ in range(3):
        outcome = await rt.check(bag(source__name="mallory"), {"requestcount": QuotaRequest(1)})
        assert outcome.status.code is Code.PERMISSION_DENIED
        assert outcome.quotas == {}
    assert len(recording(rt, "lists").checks) == 1
    assert recording(rt, "plans").checks == []
    assert recording(rt, "mq").quotas == []
