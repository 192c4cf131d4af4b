"""The Redis counter store: one table of cases run against it and the memory store (the reference),
a differential run of random traffic through both, and what only Redis has (one round trip,
expiries, the script cache, failures)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio

from mixer.quota import (
    Algorithm,
    Allocation,
    CalendarUnit,
    CalendarWindow,
    CounterRequest,
    CounterStore,
    EpochWindow,
    MemoryCounterStore,
)
from mixer.quota.redis_store import (
    RedisCounterStore,
    allocate_script,
    check_redis_url,
    normalize_redis_url,
    redact_redis_url,
)
from tests.backends.redis import RedisServer, redis_server, redis_session, unique_prefix
from tests.quota.support import FakeClock

__all__ = ["redis_server", "redis_session"]  # fixtures used by the tests below

EPOCH_MINUTE = 6000.0  # the start of an epoch minute (and of a 10-minute window)


def fixed(
    key: str,
    limit: int,
    amount: int = 1,
    seconds: float = 60,
    *,
    best_effort: bool = False,
    enforce: bool = True,
) -> CounterRequest:
    return CounterRequest(
        key,
        amount,
        limit,
        Algorithm.FIXED_WINDOW,
        window=EpochWindow(seconds),
        best_effort=best_effort,
        enforce=enforce,
    )


def calendar(key: str, limit: int, unit: CalendarUnit, zone: str = "UTC") -> CounterRequest:
    return CounterRequest(key, 1, limit, Algorithm.FIXED_WINDOW, window=CalendarWindow(unit, ZoneInfo(zone)))


def rolling(
    key: str, limit: int, amount: int = 1, seconds: float = 60, buckets: int = 6, *, best_effort: bool = False
) -> CounterRequest:
    return CounterRequest(
        key,
        amount,
        limit,
        Algorithm.ROLLING_WINDOW,
        period=seconds,
        bucket_seconds=seconds / buckets,
        best_effort=best_effort,
    )


def gcra(
    key: str, limit: int, burst: int, amount: int = 1, seconds: float = 60, *, best_effort: bool = False
) -> CounterRequest:
    return CounterRequest(
        key, amount, limit, Algorithm.GCRA, period=seconds, burst=burst, best_effort=best_effort
    )


# -- the stores under test ------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(EPOCH_MINUTE)


async def redis_store(server: RedisServer, clock: FakeClock, **kwargs: Any) -> RedisCounterStore:
    # A long slack: the fake clock jumps ahead while Redis expires keys in real time.
    kwargs.setdefault("expiry_slack", 300.0)
    kwargs.setdefault("timeout", 1.0)
    return RedisCounterStore(server.url, key_prefix=unique_prefix("store"), clock=clock, **kwargs)


@pytest.fixture(params=["memory", "redis"])
async def store(
    request: pytest.FixtureRequest, clock: FakeClock, redis_session: RedisServer
) -> AsyncIterator[CounterStore]:
    if request.param == "memory":
        yield MemoryCounterStore(clock=clock)
        return
    redis_store_ = await redis_store(redis_session, clock)
    try:
        yield redis_store_
    finally:
        await redis_store_.close()


# -- one table, both stores -----------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    requests: Sequence[CounterRequest]
    allowed: bool
    granted: tuple[int, ...]
    remaining: tuple[int, ...] | None = None
    #: None: not checked; per decision None means granted.
    retry_after: tuple[float | None, ...] | None = None
    reset_after: tuple[float, ...] | None = None
    advance: float = 0.0
    dedup: str = ""
    replayed: bool = False


@dataclass(frozen=True)
class Case:
    name: str
    steps: list[Step] = field(default_factory=list)
    start: float = EPOCH_MINUTE


def repeat(step: Step, n: int) -> list[Step]:
    return [step] * n


CASES = [
    Case(
        "fixed window: the limit, then denied until the window edge",
        [
            Step([fixed("k", 3)], True, (1,), (2,), (None,), (60.0,)),
            Step([fixed("k", 3)], True, (1,), (1,)),
            Step([fixed("k", 3)], True, (1,), (0,)),
            Step([fixed("k", 3)], False, (0,), (0,), (60.0,)),
            Step([fixed("k", 3)], False, (0,), (0,), (0.5,), advance=59.5),
            Step([fixed("k", 3)], True, (1,), (2,), (None,), (60.0,), advance=0.5),
        ],
    ),
    Case(
        "fixed window: the last instant of a window and the first of the next",
        [
            Step([fixed("k", 1)], True, (1,), advance=59.75),
            Step([fixed("k", 1)], False, (0,), retry_after=(0.25,)),
            Step([fixed("k", 1)], True, (1,), advance=0.25),
        ],
    ),
    Case(
        "fixed window: best effort grants what is left",
        [
            Step([fixed("k", 5, 3)], True, (3,), (2,)),
            Step([fixed("k", 5, 4, best_effort=True)], True, (2,), (0,)),
            Step([fixed("k", 5, 1, best_effort=True)], False, (0,), (0,)),
        ],
    ),
    Case(
        "calendar minute in a time zone: resets on the minute",
        [
            Step([calendar("k", 2, CalendarUnit.MINUTE, "Asia/Kolkata")], True, (1,)),
            Step([calendar("k", 2, CalendarUnit.MINUTE, "Asia/Kolkata")], True, (1,), (0,)),
            Step([calendar("k", 2, CalendarUnit.MINUTE, "Asia/Kolkata")], False, (0,), advance=59.5),
            Step([calendar("k", 2, CalendarUnit.MINUTE, "Asia/Kolkata")], True, (1,), (1,), advance=0.5),
        ],
    ),
    Case(
        "calendar day across a DST change: 23 hours long",
        [
            Step([calendar("d", 1, CalendarUnit.DAY, "Europe/Berlin")], True, (1,), reset_after=(82800.0,)),
            Step([calendar("d", 1, CalendarUnit.DAY, "Europe/Berlin")], False, (0,), advance=82799.0),
            Step([calendar("d", 1, CalendarUnit.DAY, "Europe/Berlin")], True, (1,), advance=1.0),
        ],
        start=datetime(2024, 3, 30, 23, 0, tzinfo=UTC).timestamp(),  # local midnight, 31 March
    ),
    Case(
        "rolling window: units come back as buckets slide out",
        [
            Step([rolling("k", 2)], True, (1,), (1,), (None,), (60.0,)),
            Step([rolling("k", 2)], True, (1,), (0,), (None,), (60.0,), advance=30),
            Step([rolling("k", 2)], False, (0,), (0,), (30.0,)),
            Step([rolling("k", 2)], True, (1,), (0,), advance=30),
            Step([rolling("k", 2)], False, (0,), (0,), (30.0,)),
            Step([rolling("k", 2)], True, (1,), advance=30),
        ],
    ),
    Case(
        "rolling window: a large request waits for enough buckets to leave",
        [
            Step([rolling("k", 6, 2)], True, (2,)),
            Step([rolling("k", 6, 2)], True, (2,), advance=10),
            Step([rolling("k", 6, 2)], True, (2,), advance=10),
            Step([rolling("k", 6, 4)], False, (0,), (0,), (45.0,), advance=5),
            Step([rolling("k", 6, 4, best_effort=True)], False, (0,), (0,)),
            Step([rolling("k", 6, 2)], True, (2,), advance=35),
        ],
    ),
    Case(
        "gcra: the burst at once, then the rate",
        [
            *repeat(Step([gcra("k", 60, burst=5)], True, (1,)), 5),
            Step([gcra("k", 60, burst=5)], False, (0,), (0,), (1.0,), (5.0,)),
            Step([gcra("k", 60, burst=5)], True, (1,), (0,), advance=1.0),
            Step([gcra("k", 60, burst=5)], False, (0,)),
            Step([gcra("k", 60, burst=5, amount=3, best_effort=True)], True, (1,), (0,), advance=1.5),
        ],
    ),
    Case(
        "gcra: more than the burst can never pass",
        [Step([gcra("k", 10, burst=2, amount=3)], False, (0,), (2,), (float("inf"),))],
    ),
    Case(
        "all or nothing: one denied limit spends nothing anywhere",
        [
            Step([fixed("b", 1)], True, (1,)),
            Step(
                [fixed("a", 5), fixed("b", 1), gcra("c", 10, burst=10), rolling("d", 3)],
                False,
                (0, 0, 0, 0),
                (5, 0, 10, 3),
                (None, 60.0, None, None),
            ),
            Step([fixed("a", 1)], True, (1,), (0,)),
            Step([gcra("c", 10, burst=10, amount=10)], True, (10,), (0,)),
            Step([rolling("d", 3, 3)], True, (3,), (0,)),
        ],
    ),
    Case(
        "a shadow limit is counted but never blocks",
        [
            Step([fixed("shadow", 1)], True, (1,)),
            Step([fixed("a", 2), fixed("shadow", 1, enforce=False)], True, (1, 0), (1, 0), (None, 60.0)),
            Step([fixed("a", 2)], True, (1,), (0,)),
        ],
    ),
    Case(
        "the same counter twice in one allocation",
        [
            Step([fixed("k", 3), fixed("k", 3)], True, (1, 1), (2, 1)),
            # The first was granted, then taken back: reported as the counter stands.
            Step([fixed("k", 3), fixed("k", 3)], False, (0, 0), (1, 0), (None, 60.0)),
            Step([fixed("k", 3)], True, (1,), (0,)),
        ],
    ),
    Case(
        "a changed window starts the counter afresh",
        [
            Step([fixed("k", 1, seconds=60)], True, (1,)),
            Step([fixed("k", 1, seconds=60)], False, (0,)),
            Step([fixed("k", 1, seconds=600)], True, (1,)),
            Step([rolling("k", 1)], True, (1,)),
            Step([gcra("k", 1, burst=1)], True, (1,)),
        ],
    ),
    Case(
        "a retry with the same deduplication id replays without spending",
        [
            Step([fixed("k", 2)], True, (1,), (1,), dedup="req-1"),
            Step([fixed("k", 2)], True, (1,), (1,), dedup="req-1", replayed=True),
            Step([fixed("k", 2)], True, (1,), (0,), dedup="req-2"),
            Step([fixed("k", 2)], False, (0,), dedup="req-3"),
            Step([fixed("k", 2)], False, (0,), dedup="req-3", replayed=True),
            # Past the deduplication time the same id is a new request.
            Step([fixed("k", 2)], False, (0,), dedup="req-1", advance=1.0),
        ],
    ),
    Case(
        "a zero amount reports the counter and spends nothing",
        [
            Step([fixed("k", 1, 0), gcra("g", 10, burst=2, amount=0)], True, (0, 0), (1, 2), (None, None)),
            Step([fixed("k", 1)], True, (1,)),
        ],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_case(case: Case, store: CounterStore, clock: FakeClock) -> None:
    clock.now = case.start
    for number, step in enumerate(case.steps, start=1):
        clock.advance(step.advance)
        answer = await store.allocate(step.requests, deduplication_id=step.dedup, dedup_seconds=1.0)
        where = f"step {number}: {answer}"
        assert answer.allowed is step.allowed, where
        assert answer.replayed is step.replayed, where
        assert tuple(d.granted for d in answer.decisions) == step.granted, where
        if step.remaining is not None:
            assert tuple(d.remaining for d in answer.decisions) == step.remaining, where
        if step.retry_after is not None:
            assert tuple(d.retry_after for d in answer.decisions) == step.retry_after, where
        if step.reset_after is not None:
            assert tuple(d.reset_after for d in answer.decisions) == step.reset_after, where


async def test_invalid_requests_are_refused_by_both(store: CounterStore) -> None:
    with pytest.raises(ValueError, match="bucket"):
        await store.allocate(
            [CounterRequest("k", 1, 1, Algorithm.ROLLING_WINDOW, period=10, bucket_seconds=20)]
        )
    with pytest.raises(ValueError, match="positive"):
        await store.allocate([CounterRequest("k", 1, 1, Algorithm.GCRA, period=10, burst=0)])


# -- random traffic: the Redis store answers exactly as the memory store ---------------------------


def random_requests(rng: random.Random) -> list[CounterRequest]:
    requests = []
    # Each key keeps one shape, but now and then another (which starts it afresh); one shape
    # per key within an allocation (the memory store assumes that of its callers).
    kinds: dict[str, int] = {}
    for _ in range(rng.randint(1, 4)):
        key = f"k{rng.randint(0, 4)}"
        amount = rng.choice([0, 1, 1, 1, 2, 5])
        best_effort = rng.random() < 0.2
        kind = kinds.setdefault(key, int(key[1]) if rng.random() < 0.95 else rng.randrange(5))
        if kind == 0:
            request = fixed(key, 3, amount, seconds=10, best_effort=best_effort)
        elif kind == 1:
            request = fixed(key, 10, amount, seconds=30, best_effort=best_effort)
        elif kind == 2:
            request = rolling(key, 8, amount, seconds=20, buckets=4, best_effort=best_effort)
        elif kind == 3:
            request = gcra(key, 12, burst=4, amount=amount, seconds=6, best_effort=best_effort)
        else:
            request = calendar(key, 7, CalendarUnit.MINUTE, "America/St_Johns")
        if rng.random() < 0.1:
            request = dataclasses.replace(request, enforce=False)
        requests.append(request)
    return requests


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_traffic_gets_the_same_answers_from_both_stores(
    seed: int, redis_session: RedisServer
) -> None:
    rng = random.Random(seed)
    clock = FakeClock(EPOCH_MINUTE - 0.5)
    memory = MemoryCounterStore(clock=clock)
    redis_store_ = await redis_store(redis_session, clock)
    try:
        for step in range(250):
            # Small steps, exact bucket and window edges among them.
            clock.advance(rng.choice([0.0, 0.0, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0 - clock.now % 10.0]))
            requests = random_requests(rng)
            dedup = f"id{rng.randint(0, 5)}" if rng.random() < 0.3 else ""
            expected = memory.allocate_now(requests, deduplication_id=dedup, dedup_seconds=3.0)
            got = await redis_store_.allocate(requests, deduplication_id=dedup, dedup_seconds=3.0)
            assert got == expected, f"step {step} at {clock.now}: {requests}"
        assert redis_store_.stats.allocations == memory.stats.allocations
        assert redis_store_.stats.dedup_hits == memory.stats.dedup_hits > 0
        assert redis_store_.stats.denials == memory.stats.denials > 0
    finally:
        await redis_store_.close()


# -- Redis only -----------------------------------------------------------------------------------


class CountingRedis(redis.asyncio.Redis):
    """A client that counts the commands it sends, and the round trips (a pipeline is one)."""

    sent: list[str]
    round_trips: int

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]).upper())
        self.round_trips += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def counted(raise_on_error: bool = True) -> Any:
            self.sent.extend(str(args[0]).upper() for args, _ in pipe.command_stack)
            self.round_trips += 1
            return await execute(raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


def counting_client(server: RedisServer) -> CountingRedis:
    client = CountingRedis(host="127.0.0.1", port=server.port)
    client.sent = []
    client.round_trips = 0
    return client


async def test_one_round_trip_per_allocation_whatever_the_number_of_limits(
    redis_session: RedisServer, clock: FakeClock
) -> None:
    client = counting_client(redis_session)
    store = RedisCounterStore(client=client, key_prefix=unique_prefix(), clock=clock, timeout=1.0)
    try:
        await store.allocate([fixed("warm", 1)])  # loads the script if this server has not seen it
        client.sent.clear()
        limits = [fixed("a", 5), rolling("b", 5), gcra("c", 5, burst=5), fixed("d", 5, seconds=3600)]
        for _ in range(3):
            assert (await store.allocate(limits, deduplication_id=f"x{_}", dedup_seconds=1)).allowed
        assert client.sent == ["EVALSHA"] * 3
    finally:
        await client.aclose()


async def test_the_allocations_of_one_tick_share_one_round_trip(
    redis_session: RedisServer, clock: FakeClock
) -> None:
    client = counting_client(redis_session)
    store = RedisCounterStore(client=client, key_prefix=unique_prefix(), clock=clock, timeout=5.0)
    try:
        await store.allocate([fixed("warm", 1)])  # loads the script if this server has not seen it
        client.sent.clear()
        client.round_trips = 0
        # Twelve allocations of one counter with room for ten: each script still runs on its own.
        answers = await asyncio.gather(*(store.allocate([fixed("shared", 10)]) for _ in range(12)))
        assert client.sent == ["EVALSHA"] * 12
        assert client.round_trips == 1
        assert [a.allowed for a in answers] == [True] * 10 + [False] * 2
        assert [a.decisions[0].remaining for a in answers[:10]] == list(range(9, -1, -1))
    finally:
        await client.aclose()


async def test_every_key_expires(redis_session: RedisServer, clock: FakeClock) -> None:
    prefix = unique_prefix()
    store = RedisCounterStore(
        redis_session.url, key_prefix=prefix, clock=clock, timeout=1.0, expiry_slack=2.0
    )
    try:
        clock.advance(15)
        requests = [fixed("f", 5), rolling("r", 5, seconds=60, buckets=6), gcra("g", 60, burst=10, amount=4)]
        await store.allocate(requests, deduplication_id="d1", dedup_seconds=3)
        ttl = {name: redis_session.command("PTTL", f"{prefix}{name}") for name in ("f", "r", "g", "dedup/d1")}
        # The state's remaining life plus the 2 s slack, give or take the time the test took.
        assert 45_000 + 1_900 <= _int(ttl["f"]) <= 45_000 + 2_000
        assert 55_000 + 1_900 <= _int(ttl["r"]) <= 55_000 + 2_000
        assert 4_000 + 1_900 <= _int(ttl["g"]) <= 4_000 + 2_000
        assert 3_000 + 1_900 <= _int(ttl["dedup/d1"]) <= 3_000 + 2_000
        # A denied allocation writes nothing, so it cannot leave a key without an expiry.
        keys = redis_session.command("KEYS", f"{prefix}*")
        assert isinstance(keys, list)
        assert len(keys) == 4
    finally:
        await store.close()


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


async def test_script_flush_reloads_the_script_once(redis_server: RedisServer, clock: FakeClock) -> None:
    client = counting_client(redis_server)
    store = RedisCounterStore(client=client, clock=clock, timeout=1.0)
    try:
        assert (await store.allocate([fixed("k", 3)])).allowed
        assert store.stats.script_loads == 1  # a new server has never seen it
        redis_server.command("SCRIPT", "FLUSH")
        client.sent.clear()
        answer = await store.allocate([fixed("k", 3)])
        assert answer.allowed
        assert answer.decisions[0].remaining == 1  # the counter survived the flush
        assert client.sent == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]
        assert store.stats.script_loads == 2
        assert redis_server.command("SCRIPT", "EXISTS", store.script_sha) == [1]
    finally:
        await client.aclose()


async def test_stopped_hung_and_restarted_redis(redis_server: RedisServer, clock: FakeClock) -> None:
    # Healthy round trips get long enough that a busy machine cannot fail them; the hung one 50 ms.
    store = RedisCounterStore(redis_server.url, clock=clock, timeout=5.0)
    try:
        assert (await store.allocate([fixed("k", 3)])).allowed

        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(Exception) as refused:  # whatever redis-py raises
            await store.allocate([fixed("k", 3)])
        assert time.monotonic() - started < 1.0
        assert not isinstance(refused.value, TimeoutError)

        redis_server.start()
        redis_server.pause()
        store.timeout = 0.05
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await store.allocate([fixed("k", 3)])
        assert 0.05 <= time.monotonic() - started < 1.0
        redis_server.resume()
        store.timeout = 5.0

        # A restarted Redis is empty: the script is loaded again and the counter starts afresh.
        answer = await store.allocate([fixed("k", 3)])
        assert answer.allowed
        assert answer.decisions[0].remaining == 2
        assert store.stats.failures == 2
        assert store.stats.timeouts == 1
        assert store.stats.script_loads == 2
    finally:
        await store.close()


async def test_two_stores_share_counters_and_deduplication(
    redis_session: RedisServer, clock: FakeClock
) -> None:
    prefix = unique_prefix()
    one = RedisCounterStore(redis_session.url, key_prefix=prefix, clock=clock, timeout=1.0)
    two = RedisCounterStore(redis_session.url, key_prefix=prefix, clock=clock, timeout=1.0)
    try:
        first = await one.allocate([fixed("k", 2)], deduplication_id="retry-me", dedup_seconds=1)
        again = await two.allocate([fixed("k", 2)], deduplication_id="retry-me", dedup_seconds=1)
        assert again.replayed
        assert again.decisions == first.decisions
        assert (await two.allocate([fixed("k", 2)])).allowed
        assert not (await one.allocate([fixed("k", 2)])).allowed
    finally:
        await one.close()
        await two.close()


async def test_concurrent_allocations_are_exact(redis_session: RedisServer) -> None:
    prefix = unique_prefix()
    stores = [
        RedisCounterStore(redis_session.url, key_prefix=prefix, pool_size=4, timeout=2.0) for _ in range(3)
    ]
    try:
        limits = [fixed("k", 37, seconds=3600), rolling("r", 1000, seconds=3600)]
        answers: list[Allocation] = await asyncio.gather(
            *(stores[i % 3].allocate(limits) for i in range(150))
        )
        assert sum(a.allowed for a in answers) == 37
        assert sorted(a.decisions[1].remaining for a in answers if a.allowed) == list(range(1000 - 37, 1000))
    finally:
        for store in stores:
            await store.close()


async def test_a_closed_store_refuses_work(redis_session: RedisServer) -> None:
    store = RedisCounterStore(redis_session.url, key_prefix=unique_prefix())
    await store.close()
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.allocate([fixed("k", 1)])


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        RedisCounterStore(pool_size=0)
    with pytest.raises(ValueError, match="timeout"):
        RedisCounterStore(timeout=0)


def test_urls() -> None:
    assert normalize_redis_url("redis-master:6379") == "redis://redis-master:6379"
    assert normalize_redis_url("rediss://h:1/2") == "rediss://h:1/2"
    assert check_redis_url("unix:///run/redis.sock?db=1") == "unix:///run/redis.sock?db=1"
    with pytest.raises(ValueError, match="scheme"):
        check_redis_url("http://h:1")
    with pytest.raises(ValueError, match="host"):
        check_redis_url("redis://:6379")
    assert redact_redis_url("redis://user:s3cret@h:6379/0") == "redis://user:***@h:6379/0"
    assert redact_redis_url("redis://:s3cret@h:6379") == "redis://:***@h:6379"
    assert redact_redis_url("h:6379") == "h:6379"


def test_the_script_is_package_data() -> None:
    text = allocate_script()
    assert "EVALSHA" not in text  # sanity: it is the script, not a caller
    assert "redis.call('SET', req.key" in text
