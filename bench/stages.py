"""Where a record's server CPU goes: py-spy's stacks of a ``mixer serve`` under load, by stage.

Each sample is counted in the innermost stage on its stack: a sample in orjson called from the
access-log encoder is the access-log line's, one in the event loop with no stage above it is the
loop's. Given the server's records per CPU-second (``bench/sidebyside.py`` prints it), each share
is also given in microseconds of server CPU per record, as in ../shared/perf-study.md.

    .venv/bin/python bench/stages.py STACKS.txt [--per-cpu-second N] [--unit record]

STACKS.txt is py-spy's ``--format raw`` output (collapsed stacks), as ``bench/sidebyside.py
--py-spy DIR`` keeps it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

#: Stages in the order the table lists them, each with the path prefixes (as py-spy prints a
#: frame's file, relative to its sys.path entry) or file names that place a frame in it.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("wire: decode requests, encode answers", ("mixer/wire/", "mixer/attributes/", "google/protobuf/")),
    (
        "instance building (generated functions, templates)",
        (
            "<mixer-generated-",
            "mixer/expr/",
            "mixer/templates/",
            "mixer/runtime/_build.py",
            "mixer/runtime/_generate.py",
        ),
    ),
    (
        "rule matching and dispatch",
        (
            "mixer/runtime/_report.py",
            "mixer/runtime/_select.py",
            "mixer/runtime/_index.py",
            "mixer/runtime/_runtime.py",
            "mixer/runtime/_calls.py",
        ),
    ),
    (
        "Check policy (quota, plans, lists, keys)",
        (
            "mixer/runtime/_check",
            "mixer/runtime/_quota.py",
            "mixer/quota/",
            "mixer/quotahandler/",
            "mixer/plans/",
            "mixer/decision.py",
            "adapters/memquota/",
            "adapters/redisquota/",
            "adapters/list/",
            "redis/",
        ),
    ),
    ("access-log line (shared encoder)", ("mixer/encoding.py", "orjson")),
    ("file write (stdio)", ("adapters/stdio/",)),
    ("span encoding (OTLP, Zipkin)", ("mixer/spans/", "adapters/zipkin/_encode.py")),
    ("Prometheus series update", ("adapters/prometheus/", "prometheus_client/")),
    ("sender: Kafka", ("adapters/kafka/", "aiokafka/")),
    ("sender: Elasticsearch", ("adapters/elasticsearch/", "elasticsearch/", "elastic_transport/")),
    ("sender: OTLP", ("adapters/otlp/",)),
    ("delivery helper (queue, batches, spool)", ("mixer/delivery/", "sqlite3/")),
    # Not mixer/server as a whole: run_server is the outermost frame of every event-loop stack.
    (
        "API envelope (servicers, admission, metrics)",
        (
            "mixer/api/",
            "mixer/server/_http.py",
            "mixer/server/_httpguard.py",
            "mixer/logcontext.py",
            "mixer/status.py",
        ),
    ),
    ("gRPC and HTTP transport", ("grpc/", "aiohttp/", "multidict/", "yarl/")),
)
OTHER = "event loop (with gRPC's compiled core), threads, logging (no stage on the stack)"
_FRAME_FILE = re.compile(r"\(([^():]+(?::[^():]+)?):\d+\)$|\(([^()]+)\)$")


def frame_file(frame: str) -> str:
    """The file part of a py-spy frame, ``"f (path/x.py:12)"`` -> ``"path/x.py"``."""
    match = _FRAME_FILE.search(frame)
    if match is None:
        return frame
    return match.group(1) or match.group(2)


def stage_of(frames: Sequence[str]) -> str:
    """The stage of the innermost frame that belongs to one, or :data:`OTHER`."""
    for frame in reversed(frames):
        path = frame_file(frame)
        for stage, prefixes in STAGES:
            if any(path.startswith(prefix) or prefix in path for prefix in prefixes):
                return stage
    return OTHER


def stage_samples(lines: Iterable[str]) -> dict[str, int]:
    """Samples per stage from py-spy's collapsed stacks (``frame;frame;... count`` per line)."""
    counts: dict[str, int] = {}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        stage = stage_of(stack.split(";"))
        counts[stage] = counts.get(stage, 0) + int(count_text)
    return counts


def table(counts: dict[str, int], per_cpu_second: float | None, unit: str = "record") -> str:
    """A Markdown table of the stages' shares, and microseconds per ``unit`` when the rate is known."""
    total = sum(counts.values())
    order = [stage for stage, _ in STAGES] + [OTHER]
    micros = None if not per_cpu_second else 1e6 / per_cpu_second
    head = f"| stage | share | us per {unit} |\n|---|---|---|\n"
    rows = []
    for stage in sorted(order, key=lambda s: -counts.get(s, 0)):
        share = counts.get(stage, 0) / total if total else 0.0
        if share == 0:
            continue
        us = "" if micros is None else f"{share * micros:.1f}"
        rows.append(f"| {stage} | {share:.1%} | {us} |")
    footer = "" if micros is None else f"\n| total | 100 % | {micros:.1f} |"
    return head + "\n".join(rows) + footer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stacks", type=Path, help="py-spy --format raw output")
    parser.add_argument(
        "--per-cpu-second", type=float, default=None, help="records (or calls) per server CPU-s"
    )
    parser.add_argument("--unit", default="record")
    args = parser.parse_args(argv)
    counts = stage_samples(args.stacks.read_text().splitlines())
    print(f"{sum(counts.values()):,} samples in {args.stacks}")
    print(table(counts, args.per_cpu_second, args.unit))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
