"""The benches that start `mixer serve` and real backends (Redis, Tansu) run in their short forms:
every variant is measured, none refuses a call and the fan-out delivers what it accepted. Their
timings are not asserted."""

from __future__ import annotations

import tests.backends.kafka
import tests.backends.redis
from tests.bench._run import FIGURE, figures, positive, run_bench

del tests.backends.kafka

ROW = rf"^\| ([^|]+?) \| ({FIGURE}) \| ({FIGURE})-({FIGURE}) \| ({FIGURE}) \| (\d+)% \| ([\d.]+) \|"


def test_side_by_side_runs_every_suite() -> None:
    out = run_bench("sidebyside.py", "--short", timeout=400)
    names = [row[0] for row in figures(ROW, out)]
    assert names == [
        "trivial Report servicer",
        "stock Istio 1.4 telemetry",
        "fan-out (Prometheus, Kafka, ES, OTLP)",
        "trivial Check servicer",
        "memquota policy",
        "redisquota policy",
        "trivial aiohttp handler",
        "/v1/auth, memquota policy",
    ], out
    assert all(positive(row[1]) > 0 for row in figures(ROW, out)), out
    # Alternating rounds: the second round visits the variants in reverse order.
    rounds = figures(r"^\[check\] round (\d)/2  (\S.*?)\s{2,}", out)
    assert [name for n, name in rounds if n == "2"][:3] == [
        "redisquota policy",
        "memquota policy",
        "trivial Check servicer",
    ], out
    assert len(figures(r"^\[check\] latency .* p99 [\d.]+ ms", out)) == 3, out
    assert "refused or failed calls over all rounds: 0" in out, out
    for handler in ("kafka", "elasticsearch", "otlp"):
        sent = figures(
            rf"fan-out .*: {handler}\.istio-system: sent ({FIGURE}), .* dropped 0, dead_lettered 0", out
        )
        assert sent, out
        assert positive(sent[0][0]) > 0, out


def test_side_by_side_compares_an_environment() -> None:
    out = run_bench(
        "sidebyside.py", "--short", "--suite", "auth", "--compare-env", "MIXER_MAX_REPORT_RECORDS=20000"
    )
    names = [row[0] for row in figures(ROW, out)]
    assert names == [
        "trivial aiohttp handler",
        "/v1/auth, memquota policy",
        "/v1/auth, memquota policy [MIXER_MAX_REPORT_RECORDS=20000]",
    ], out


def test_check_throughput() -> None:
    out = run_bench("check_throughput.py", "--seconds", "0.3", "--rounds", "1", "--concurrency", "8")
    rows = figures(rf"^\| ([^|]+?) \| ({FIGURE}) \| ([\d.]+) \|", out)
    assert [name for name, *_ in rows] == [
        "trivial servicer",
        "mixer serve, memquota",
        "mixer serve, redisquota",
    ]
    assert all(positive(rate) > 0 for _, rate, _ in rows)


def test_report_fanout() -> None:
    out = run_bench("report_fanout.py", "--seconds", "0.5", "--rounds", "1")
    rows = figures(rf"^\| (fan-out, 4 backends|metrics only|decode only) \| ({FIGURE}) \|", out)
    assert [name for name, _ in rows] == ["fan-out, 4 backends", "metrics only", "decode only"], out
    assert all(positive(rate) > 0 for _, rate in rows)


def test_workers_scaling() -> None:
    out = run_bench("workers_scaling.py", "--seconds", "1", "--clients", "1", "--concurrency", "8")
    rows = figures(rf"^\| (report|check) \| ({FIGURE}) \| ({FIGURE}) \| ([\d.]+) \|", out)
    assert [kind for kind, *_ in rows] == ["report", "check"], out
    assert all(positive(one) > 0 and positive(two) > 0 for _, one, two, _ in rows)
