"""Whatever the backend answers, every accepted record is delivered once or dead-lettered."""

from __future__ import annotations

import asyncio
import base64
import bisect
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixer.adapter import HandlerOverloaded
from mixer.delivery import Delivery, DeliveryOptions, PermanentError, Record, RetryableError, SendResult

from .doubles import FakeBatchSender, Outcome, VirtualClock, eventually


def _partial(retry_every: int, reject_every: int) -> Outcome:
    def decide(batch: Sequence[Record]) -> SendResult:
        return SendResult(
            retry=tuple(i for i in range(len(batch)) if i % retry_every == 0),
            rejected=tuple((i, "refused") for i in range(len(batch)) if i % reject_every == 1),
        )

    return decide


outcomes = st.lists(
    st.one_of(
        st.none(),
        st.just(RetryableError("503")),
        st.just(PermanentError("400")),
        st.builds(_partial, st.integers(2, 5), st.integers(2, 5)),
    ),
    max_size=30,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=outcomes,
    offers=st.lists(st.integers(1, 12), min_size=1, max_size=15),
    concurrency=st.integers(1, 3),
    spool=st.booleans(),
    queue=st.sampled_from([16, 1000]),
    spool_max=st.sampled_from([1 << 20, 40]),
    policy=st.sampled_from(["reject", "drop_oldest"]),
)
def test_no_accepted_record_is_lost_or_sent_twice(
    script: list[Outcome],
    offers: list[int],
    concurrency: int,
    spool: bool,
    queue: int,
    spool_max: int,
    policy: str,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) if spool else None
        asyncio.run(
            _run(
                script, offers, concurrency, data_dir, queue, {"max_bytes": spool_max, "full_policy": policy}
            )
        )


async def _run(
    script: list[Outcome],
    offers: list[int],
    concurrency: int,
    data_dir: Path | None,
    queue: int,
    spool: dict[str, object],
) -> None:
    clock = VirtualClock(auto=True)
    sender = FakeBatchSender(*script)
    options = DeliveryOptions.model_validate(
        {
            "batch_timeout": 0,
            "batch_max_records": 4,
            "queue_max_records": queue,
            "max_concurrent_sends": concurrency,
            "retry_max_elapsed": "1s",
            "retry_initial_interval": "100ms",
            "spool": spool,
        }
    )
    delivery = Delivery(
        "property",
        sender,
        options,
        data_dir=data_dir,
        logger=logging.getLogger("t"),
        clock=clock,
        sleep=clock.sleep,
    )
    await delivery.start()
    accepted: list[bytes] = []
    n = 0
    for count in offers:
        batch = [Record(b"%d" % i) for i in range(n, n + count)]
        n += count
        try:
            delivery.offer(batch)
        except HandlerOverloaded:
            continue
        accepted.extend(r.payload for r in batch)
        await asyncio.sleep(0)

    def settled() -> bool:
        stats = delivery.stats
        done = stats.sent + stats.dead_lettered + sum(stats.dropped.values())
        return done == len(accepted) and stats.queued_records == 0 and stats.spool_records == 0

    await eventually(settled, timeout=10.0)
    await delivery.shutdown(1.0)
    stats = delivery.stats
    delivered = sender.accepted_payloads
    assert len(delivered) == len(set(delivered))
    refused: list[bytes] = []
    if data_dir is not None:
        letters = data_dir / "dead-letter.jsonl"
        if letters.exists():
            refused = [
                base64.b64decode(json.loads(line)["payload"]) for line in letters.read_text().splitlines()
            ]
        assert set(stats.dropped) <= {"spool_full"}
    else:
        assert set(stats.dropped) <= {"rejected", "queue_full"}
        refused = [b"?"] * stats.dropped.get("rejected", 0)
    dropped = stats.dropped.get("spool_full", 0) + stats.dropped.get("queue_full", 0)
    # Every accepted record is accounted for exactly once: delivered, refused or dropped by policy.
    assert len(delivered) + len(refused) + dropped == len(accepted)
    assert set(delivered) <= set(accepted)
    if data_dir is not None:
        assert set(refused) <= set(accepted)
        assert len(set(delivered) | set(refused)) == len(delivered) + len(refused)
    if concurrency == 1 and not any(callable(outcome) for outcome in script):
        # One batch at a time and whole-batch answers: what stays in memory goes out in offer
        # order, and so does the spool; only the two may interleave.
        order = [int(payload) for payload in delivered]
        if data_dir is None:
            assert order == sorted(order)
        else:
            assert _longest_decreasing(order) <= 2


def _longest_decreasing(values: list[int]) -> int:
    tails: list[int] = []
    for value in values:
        i = bisect.bisect_left(tails, -value)
        tails[i : i + 1] = [-value]
    return len(tails)
