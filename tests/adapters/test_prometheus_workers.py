"""Totals across `mixer serve --workers N`: the aggregator's arithmetic, the shared directory, two handlers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.prometheus import PrometheusConfig, PrometheusHandler
from adapters.prometheus._series import COUNTER, GAUGE, HISTOGRAM, SUM, FamilySnapshot
from adapters.prometheus._workers import (
    AGGREGATOR_FILE,
    WORKER_INDEX_ENV,
    WorkerAggregator,
    WorkerDirectory,
    WorkerSnapshot,
    worker_index,
)
from mixer import HandlerEnv, ReportBatch
from mixer.templates import MetricInstance
from tests.server.support import metric_value

A = ("a",)
B = ("b",)


def counter(values: dict[tuple[str, ...], float], name: str = "requests_total") -> FamilySnapshot:
    return FamilySnapshot(name, COUNTER, "help", ("k",), {k: (v,) for k, v in values.items()})


def gauge(values: dict[tuple[str, ...], tuple[float, float]], merge: str = "latest") -> FamilySnapshot:
    return FamilySnapshot("depth", GAUGE, "help", ("k",), dict(values), gauge_merge=merge)


def histogram(values: dict[tuple[str, ...], tuple[float, ...]]) -> FamilySnapshot:
    return FamilySnapshot("latency", HISTOGRAM, "help", ("k",), dict(values), (0.1, 1.0))


def worker(token: str, *families: FamilySnapshot, started: float = 50.0) -> WorkerSnapshot:
    return WorkerSnapshot(token, started, list(families))


def total(
    families: list[FamilySnapshot], name: str = "requests_total"
) -> dict[tuple[str, ...], tuple[float, ...]]:
    return next(f.series for f in families if f.name == name)


def aggregator(*, restarted: bool = False, max_series: int = 100) -> WorkerAggregator:
    return WorkerAggregator(started=100.0, offset_older_workers=restarted, max_series=max_series)


def test_counters_and_histograms_are_summed_by_label_set() -> None:
    agg = aggregator()
    own = [counter({A: 1}), histogram({A: (1, 0, 0, 0.05)})]
    merged = agg.merge(
        own,
        {
            1: worker("w1", counter({A: 2, B: 5}), histogram({A: (0, 1, 1, 3.5)})),
            2: worker("w2", counter({B: 1})),
        },
        now=1,
    )
    assert total(merged) == {A: (3,), B: (6,)}
    assert total(merged, "latency") == {A: (1, 1, 1, 3.55)}


def test_gauges_take_the_latest_value_or_the_sum_when_marked() -> None:
    agg = aggregator()
    latest = agg.merge([gauge({A: (7, 10)})], {1: worker("w1", gauge({A: (3, 20), B: (1, 5)}))}, now=1)
    assert total(latest, "depth") == {A: (3, 20), B: (1, 5)}
    summed = aggregator().merge([gauge({A: (7, 10)}, SUM)], {1: worker("w1", gauge({A: (3, 5)}, SUM))}, now=1)
    assert total(summed, "depth") == {A: (10, 10)}


def test_a_restarted_worker_never_makes_the_total_go_down() -> None:
    agg = aggregator()
    own = [counter({A: 10})]
    assert total(agg.merge(own, {1: worker("old", counter({A: 4}))}, now=1)) == {A: (14,)}
    # Unreachable while it restarts: its last series still count.
    assert total(agg.merge(own, {1: None}, now=2)) == {A: (14,)}
    assert agg.stats.fetch_errors == 1
    # Back with a new handler that counts from zero: the old one's count is carried.
    assert total(agg.merge(own, {1: worker("new", counter({A: 1}))}, now=3)) == {A: (15,)}
    assert total(agg.merge(own, {1: worker("new", counter({A: 2}))}, now=4)) == {A: (16,)}


def test_a_worker_that_left_the_directory_keeps_its_count() -> None:
    agg = aggregator()
    own = [counter({A: 1})]
    agg.merge(own, {1: worker("w1", counter({A: 4}))}, now=1)
    assert total(agg.merge(own, {}, now=2)) == {A: (5,)}


def test_a_new_aggregator_offsets_older_workers_for_a_clean_reset() -> None:
    agg = aggregator(restarted=True)
    own = [counter({})]
    older = worker("w1", counter({A: 40}), started=10.0)
    younger = worker("w2", counter({A: 3}), started=150.0)
    assert total(agg.merge(own, {1: older, 2: younger}, now=1)) == {A: (3,)}
    older = worker("w1", counter({A: 45}), started=10.0)
    assert total(agg.merge(own, {1: older, 2: younger}, now=2)) == {A: (8,)}
    # A fresh aggregator (the supervisor's first worker 0) counts everything.
    assert total(aggregator().merge(own, {1: older}, now=1)) == {A: (45,)}


def test_a_series_that_expired_and_came_back_is_taken_as_it_is() -> None:
    agg = aggregator(restarted=True)
    own = [counter({})]
    agg.merge(own, {1: worker("w1", counter({A: 40}), started=10.0)}, now=1)
    assert total(agg.merge(own, {1: worker("w1", counter({}), started=10.0)}, now=2)) == {}
    assert total(agg.merge(own, {1: worker("w1", counter({A: 2}), started=10.0)}, now=3)) == {A: (2,)}


def test_families_of_another_config_are_skipped_and_counted() -> None:
    agg = aggregator()
    other = FamilySnapshot("requests_total", COUNTER, "help", ("k", "extra"), {("a", "x"): (9,)})
    merged = agg.merge([counter({A: 1})], {1: worker("w1", other)}, now=1)
    assert total(merged) == {A: (1,)}
    assert agg.stats.mismatched_families == 1


def test_carried_series_are_bounded_and_expire() -> None:
    agg = aggregator(max_series=1)
    own = [counter({})]
    agg.merge(own, {1: worker("old", counter({A: 1, B: 2}))}, now=1)
    assert len(total(agg.merge(own, {1: worker("new", counter({}))}, now=2))) == 1
    assert agg.stats.carried_dropped == 1
    assert total(agg.merge(own, {1: worker("new", counter({}))}, now=3, expire_before=2.5)) == {}


def test_snapshots_survive_json() -> None:
    snapshot = worker("t", counter({A: 1.5}), gauge({B: (float("nan"), 3)}), histogram({A: (1, 2, 3, 4.5)}))
    again = WorkerSnapshot.from_json(snapshot.to_json())
    assert again.token == "t"
    assert again.started == 50.0
    assert [f.identity for f in again.families] == [f.identity for f in snapshot.families]
    assert again.families[2].series == {A: (1, 2, 3, 4.5)}
    with pytest.raises(ValueError, match="not a worker snapshot"):
        WorkerSnapshot.from_json(b'{"token": 1}')


def test_worker_index_comes_from_the_supervisor() -> None:
    assert worker_index({WORKER_INDEX_ENV: "3"}) == 3
    assert worker_index({WORKER_INDEX_ENV: "x"}) is None
    assert worker_index({}) is None
    from mixer.server import WORKER_INDEX_ENV as SUPERVISOR_ENV

    assert SUPERVISOR_ENV == WORKER_INDEX_ENV


# -- the shared directory -------------------------------------------------------------------------


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_workers_publish_find_and_withdraw(temp_root: Path) -> None:
    zero, one = WorkerDirectory("prom.istio-system", 0), WorkerDirectory("prom.istio-system", 1)
    zero.open()
    one.open()
    assert zero.path == one.path
    assert oct(zero.path.stat().st_mode & 0o777) == oct(0o700)
    one.publish("http://127.0.0.1:1/metrics/worker")
    (zero.path / "worker-7.json").write_text("not json")
    [peer] = zero.peers()
    assert (peer.index, peer.pid, peer.url) == (1, os.getpid(), "http://127.0.0.1:1/metrics/worker")
    assert one.peers() == []
    assert zero.claim_aggregation() is False
    assert WorkerDirectory("prom.istio-system", 0).claim_aggregation() is True
    assert json.loads((zero.path / AGGREGATOR_FILE).read_text())["pid"] == os.getpid()
    # A successor's file is not removed by its predecessor's late shutdown.
    successor = WorkerDirectory("prom.istio-system", 1)
    successor.publish("http://127.0.0.1:2/metrics/worker")
    one.withdraw()
    assert [p.url for p in zero.peers()] == ["http://127.0.0.1:2/metrics/worker"]
    successor.withdraw()
    assert zero.peers() == []


def test_a_directory_others_can_write_is_refused(temp_root: Path) -> None:
    directory = WorkerDirectory("prom", 0)
    directory.base.mkdir(mode=0o777)
    directory.base.chmod(0o777)
    with pytest.raises(PermissionError, match="not a private directory"):
        directory.open()


def test_directories_of_departed_supervisors_are_removed(temp_root: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    stale = temp_root / f"mixer-prometheus-{os.getuid()}-{int(gone.stdout)}-1"
    (stale / "prom").mkdir(parents=True)
    directory = WorkerDirectory("prom", 0)
    directory.open()
    live = WorkerDirectory("prom", 0, supervisor=os.getpid())
    live.open()
    directory.remove_stale(logging.getLogger("test"))
    assert not stale.exists()
    assert directory.path.exists()
    assert live.path.exists()


# -- two handlers as two workers ------------------------------------------------------------------

PARAMS: dict[str, Any] = {
    "listen": "127.0.0.1:0",
    "metrics": [
        {
            "name": "requests_total",
            "instance_name": "requestcount",
            "kind": "COUNTER",
            "label_names": ["service"],
        },
        {
            "name": "latency_seconds",
            "instance_name": "latency",
            "kind": "DISTRIBUTION",
            "label_names": ["service"],
            "buckets": {"explicit_buckets": {"bounds": [0.1, 1]}},
        },
    ],
}


def report(handler: PrometheusHandler, service: str, count: int) -> None:
    instances: list[Any] = []
    for _ in range(count):
        instances.append(MetricInstance("requestcount.istio-system", 1, {"service": service}))
        instances.append(MetricInstance("latency.istio-system", 0.5, {"service": service}))
    handler.handle_report(ReportBatch("prom.istio-system", instances))


@pytest.fixture
async def two_workers(
    temp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[list[PrometheusHandler]]:
    handlers: list[PrometheusHandler] = []
    for index in (1, 0):
        monkeypatch.setenv(WORKER_INDEX_ENV, str(index))
        handler = PrometheusHandler(
            PrometheusConfig.model_validate(PARAMS),
            HandlerEnv("prom.istio-system", logging.getLogger("test.prom")),
        )
        await handler.start()
        handlers.insert(0, handler)
    try:
        yield handlers
    finally:
        for handler in handlers:
            await handler.shutdown(2.0)


async def scrape(handler: PrometheusHandler) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{handler.port}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


async def test_worker_zero_serves_the_sum_of_both(two_workers: list[PrometheusHandler]) -> None:
    zero, one = two_workers
    assert zero.aggregator is not None
    assert one.aggregator is None
    report(zero, "web", 3)
    report(one, "web", 4)
    report(one, "db", 2)
    text = await scrape(zero)
    assert metric_value(text, "istio_requests_total", service="web") == 7
    assert metric_value(text, "istio_requests_total", service="db") == 2
    assert metric_value(text, "istio_latency_seconds_bucket", service="web", le="1") == 7
    assert metric_value(text, "istio_latency_seconds_sum", service="web") == 3.5
    assert metric_value(text, "mixer_prometheus_workers", handler="prom.istio-system") == 2
    assert metric_value(text, "mixer_prometheus_series", handler="prom.istio-system") == 2 + 4
    # Each worker's own port still shows its own share.
    assert metric_value(await scrape(one), "istio_requests_total", service="web") == 4


async def test_a_worker_replaced_by_a_new_handler_keeps_the_total(
    two_workers: list[PrometheusHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    zero, one = two_workers
    report(one, "web", 4)
    assert metric_value(await scrape(zero), "istio_requests_total", service="web") == 4
    await one.shutdown(2.0)
    monkeypatch.setenv(WORKER_INDEX_ENV, "1")
    successor = PrometheusHandler(
        PrometheusConfig.model_validate(PARAMS),
        HandlerEnv("prom.istio-system", logging.getLogger("test.prom")),
    )
    await successor.start()
    try:
        report(successor, "web", 1)
        assert metric_value(await scrape(zero), "istio_requests_total", service="web") == 5
    finally:
        await successor.shutdown(2.0)


async def test_a_new_worker_zero_restarts_the_sum_from_zero(
    two_workers: list[PrometheusHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    zero, one = two_workers
    report(one, "web", 4)
    assert metric_value(await scrape(zero), "istio_requests_total", service="web") == 4
    await zero.shutdown(2.0)
    monkeypatch.setenv(WORKER_INDEX_ENV, "0")
    successor = PrometheusHandler(
        PrometheusConfig.model_validate(PARAMS),
        HandlerEnv("prom.istio-system", logging.getLogger("test.prom")),
    )
    await successor.start()
    try:
        # A clean reset (what worker 1 had is offset), which rate() reads exactly; not a partial drop.
        assert metric_value(await scrape(successor), "istio_requests_total", service="web") == 0
        report(one, "web", 2)
        report(successor, "web", 1)
        assert metric_value(await scrape(successor), "istio_requests_total", service="web") == 3
    finally:
        await successor.shutdown(2.0)
