"""What acknowledging from the spool costs: Reports answered per second by ack mode, in one process.

``concurrency`` tasks play Report calls: each offers ``--records`` records (200 bytes each) to one
Delivery and, when the offer returns a commit future (``spool`` acknowledgement), awaits it
before the next call, as the Report answer does. Measured for a healthy backend (a sender that
accepts everything at once) and a backend that is down (every send fails, retries never end),
with ``ack: memory`` and ``ack: spool`` and SQLite ``synchronous`` normal and full. Printed:
calls/s, records/s and the median and 99th percentile of offer-to-answer latency, the median of
``--rounds`` rounds of ``--seconds`` each, on a spool in a temporary directory.

    .venv/bin/python bench/delivery_ack.py [--seconds 3] [--rounds 3] [--concurrency 64] [--records 100]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mixer.delivery import Delivery, DeliveryOptions, Record, RetryableError, SendResult


class NoopSender:
    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        return None

    async def close(self) -> None:
        return None


class DownSender:
    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        raise RetryableError("connection refused")

    async def close(self) -> None:
        return None


async def one_round(
    *, healthy: bool, ack: str, sync: str, seconds: float, concurrency: int, records: int
) -> tuple[float, float, float, float]:
    options = DeliveryOptions.model_validate(
        {
            "ack": ack,
            "batch_timeout": "5ms",
            "queue_max_records": 100_000,
            "queue_max_bytes": 64 * 1024 * 1024,
            # A down backend: retries never run out, so the circuit stays closed and every record
            # after the first failure is staged to the spool, the path a failing backend takes.
            "retry_max_elapsed": "1h",
            "retry_max_interval": "1s",
            "spool": {"synchronous": sync, "max_bytes": 8 * 1024**3},
        }
    )
    with tempfile.TemporaryDirectory(prefix="delivery-ack-") as tmp:
        sender = NoopSender() if healthy else DownSender()
        delivery = Delivery(
            "bench", sender, options, data_dir=Path(tmp), logger=logging.getLogger("bench.delivery")
        )
        await delivery.start()
        batch = [Record(b"x" * 200) for _ in range(records)]
        latencies: list[float] = []
        calls = 0
        if not healthy:
            # Let the first send fail, so that the measured calls see a failing backend.
            await _settle(delivery, batch)
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal calls
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                commit = delivery.offer(batch)
                if commit is not None:
                    await commit
                else:
                    # A memory acknowledgement answers at once; yield as a Report answer would.
                    await asyncio.sleep(0)
                latencies.append(time.perf_counter() - started)
                calls += 1

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        await delivery.shutdown(30.0)
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return calls / elapsed, calls * records / elapsed, p50, p99


async def _settle(delivery: Delivery, batch: list[Record]) -> None:
    commit = delivery.offer(batch)
    if commit is not None:
        await commit
    deadline = time.monotonic() + 5
    while delivery.stats.failed == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--records", type=int, default=100)
    args = parser.parse_args()
    cases = [
        (True, "memory", "normal"),
        (True, "spool", "normal"),
        (True, "spool", "full"),
        (False, "memory", "normal"),
        (False, "spool", "normal"),
        (False, "spool", "full"),
    ]
    print(f"{args.concurrency} concurrent calls of {args.records} records (200 B), median of {args.rounds}")
    print(f"{'backend':8} {'ack':7} {'sync':7} {'calls/s':>9} {'records/s':>10} {'p50 ms':>7} {'p99 ms':>7}")
    for healthy, ack, sync in cases:
        runs = [
            asyncio.run(
                one_round(
                    healthy=healthy,
                    ack=ack,
                    sync=sync,
                    seconds=args.seconds,
                    concurrency=args.concurrency,
                    records=args.records,
                )
            )
            for _ in range(args.rounds)
        ]
        calls, recs, p50, p99 = (statistics.median(run[i] for run in runs) for i in range(4))
        print(
            f"{'up' if healthy else 'down':8} {ack:7} {sync:7} {calls:9,.0f} {recs:10,.0f} "
            f"{p50 * 1000:7.2f} {p99 * 1000:7.2f}"
        )


if __name__ == "__main__":
    main()
