"""bench/redis_cluster.py's short form runs and reports both stores (its figures are not asserted:
speed is measured by the bench itself, on a quiet machine)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tests.backends.redis_cluster  # noqa: F401 - starts Redis processes: a backends test

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "redis_cluster.py"


def test_the_cluster_bench_measures_both_stores() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--seconds", "0.3", "--rounds", "1", "--concurrency", "8"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = re.findall(
        r"^\| (redisquota, [^|]+) \| ([\d,]+) \| [\d.]+ ms \| [\d.]+ ms \| (\d+) \| ([\d,]+) \| ([\d.]+) \|$",
        done.stdout,
        re.M,
    )
    assert [name.strip() for name, *_ in rows] == [
        "redisquota, one Redis",
        "redisquota, Redis Cluster (3 masters)",
    ], done.stdout
    for _, rate, failed, direct, usec in rows:
        assert int(rate.replace(",", "")) > 0
        assert int(direct.replace(",", "")) > 0
        assert int(failed) == 0, done.stdout
        assert float(usec) > 0
