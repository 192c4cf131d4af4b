"""A Check in process: decode, ``Runtime.check`` with the bench policy and memquota, the answer.

No transport: what the server's own code costs per Check (bench/config/check: an API key to plan,
an IP allow list, two rate limits per plan; 100 tenants in turn). The answer is written by the
compiled writer (mixer/wire/_cencode.pyx) and by the Python writer in alternating rounds, after
checking that both write the same bytes; the medians per Check are printed, then the answer writing
alone.

    .venv/bin/python bench/check_path.py [--seconds 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
import timeit
from collections.abc import Callable
from pathlib import Path

from check_throughput import requests

from mixer.api._details import rate_limit_details
from mixer.config import load_config
from mixer.decision import CheckOutcome
from mixer.runtime import Runtime, build_runtime
from mixer.wire import _check as check_writer
from mixer.wire import decode_check_request, encode_check_response, encode_check_response_python
from plugins.manager import create_plugin_manager

POLICY = Path(__file__).resolve().parent / "config" / "check"


async def checks(runtime: Runtime, calls: list[bytes], seconds: float) -> float:
    """Checks per second (of process CPU time) over ``seconds``."""
    manifest = runtime.config.manifest
    done = 0
    started = time.process_time()
    while (elapsed := time.process_time() - started) < seconds:
        for request in calls:
            decoded = decode_check_request(request, manifest)
            outcome = await runtime.check(decoded.bag, decoded.quotas, decoded.deduplication_id, timeout=1.0)
            encode_check_response(outcome, details=rate_limit_details(outcome))
        done += len(calls)
    return done / elapsed


async def run(args: argparse.Namespace) -> None:
    compiled = check_writer.compiled_encoder
    if compiled is None:
        raise SystemExit("the compiled CheckResponse writer is not built: nothing to compare")
    registry = create_plugin_manager().registry()
    config = load_config([POLICY / "policy.yaml", POLICY / "memquota.yaml"], registry)
    runtime = build_runtime(config, registry, check_cache_bytes=1 << 20)
    await runtime.start()
    try:
        calls = requests()
        decoded = decode_check_request(calls[3], runtime.config.manifest)
        outcome = await runtime.check(decoded.bag, decoded.quotas, decoded.deduplication_id, timeout=1.0)
        assert encode_check_response(outcome) == encode_check_response_python(outcome)
        await checks(runtime, calls, min(args.seconds, 0.5))  # warm-up: caches and counters
        variants = {"compiled answer writer": compiled, "Python answer writer": None}
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, writer in variants.items():
                check_writer._cencode = writer
                try:
                    rates[name].append(await checks(runtime, calls, args.seconds))
                finally:
                    check_writer._cencode = compiled
        for name, values in rates.items():
            print(
                f"{name}: {1e6 / statistics.median(values):.1f} us per Check (median of {args.rounds} rounds)"
            )
        number = 2000
        writers: dict[str, Callable[[CheckOutcome], bytes]] = {
            "compiled": encode_check_response,
            "Python": encode_check_response_python,
        }
        for name, encode in writers.items():
            best = min(timeit.repeat(functools.partial(encode, outcome), number=number, repeat=5)) / number
            print(f"answer writing ({name}): {best * 1e6:.2f} us")
    finally:
        await runtime.shutdown(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
