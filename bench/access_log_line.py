"""The access-log line: the json module's encoding (the reference), the shared orjson bytes and the
compiled line (mixer/_cline.pyx).

Entries are the stock access log's (deploy/config/istio-1.4) built from the bags of
bench/runtime_dispatch.py; each variant encodes fresh entries (no shared-line hits), alternating
in ``--rounds`` rounds in this process; the median per variant is printed.

    .venv/bin/python bench/access_log_line.py [--seconds 1] [--rounds 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

from runtime_dispatch import CONFIG, bench_registry, http_bag

from mixer import encoding
from mixer.config import load_config
from mixer.encoding import LineEncoder
from mixer.templates import LogEntryInstance


def entries(count: int) -> list[LogEntryInstance]:
    config = load_config([CONFIG], bench_registry())
    (name,) = [n for n in config.instances if n.startswith("accesslog.")]
    builder = config.instances[name].builder
    built = [builder.build(http_bag(i)) for i in range(count)]
    assert all(isinstance(entry, LogEntryInstance) for entry in built)
    return built  # type: ignore[return-value]


def rate(
    encode: Callable[[LogEntryInstance], object], sample: list[LogEntryInstance], seconds: float
) -> float:
    done = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for entry in sample:
            # A copy: a new identity, so the shared-line cache never answers.
            encode(dataclasses.replace(entry))
        done += len(sample)
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    sample = entries(100)
    encoder = LineEncoder(lambda: sample[0].timestamp)  # type: ignore[arg-type,return-value]
    for entry in sample:
        reference = encoder.encode_reference(entry)
        assert reference is not None
        assert encoder.encode_bytes(entry) == reference.encode()
    compiled = encoding.cline

    def python_path(entry: LogEntryInstance) -> object:
        encoding.cline = None
        try:
            return encoder.encode_bytes(entry)
        finally:
            encoding.cline = compiled

    variants: dict[str, Callable[[LogEntryInstance], object]] = {
        "json module (reference)": lambda e: (encoder.encode_reference(e) or "").encode(),
        "orjson bytes (shared)": python_path,
    }
    if compiled is not None:
        variants["compiled line (mixer._cline)"] = encoder.encode_bytes
    rates: dict[str, list[float]] = {name: [] for name in variants}
    copy_cost: list[float] = []
    for _ in range(args.rounds):
        for name, encode in variants.items():
            rates[name].append(rate(encode, sample, args.seconds))
        copy_cost.append(rate(lambda e: None, sample, args.seconds / 4))
    overhead = 1e6 / statistics.median(copy_cost)
    for name, values in rates.items():
        per_line = 1e6 / statistics.median(values) - overhead
        print(f"{name}: {per_line:.1f} us per line (median of {args.rounds} rounds)")
    medians = {name: 1e6 / statistics.median(values) - overhead for name, values in rates.items()}
    json_module = medians.pop("json module (reference)")
    for name, per_line in medians.items():
        print(f"{name}: x{json_module / per_line:.2f} against the json module")


if __name__ == "__main__":
    main()
