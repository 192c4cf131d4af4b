"""The status page: its bounded recorders, its charts, and every view of a real `mixer serve`."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixer.server._status import SERIES_POINTS, StatusBoard, _Point, sparkline
from mixer.statusboard import DENIAL_CAPACITY, MAX_REASON, DenialRing, TopSubjects
from tests.backends.redis import RedisServer, redis_server
from tests.server.status_support import BLOCKED, Load, status_json
from tests.server.support import Launcher, check, metric_value, policy_config, wait_until, write_atomically

__all__ = ["redis_server"]

VIEWS = ("", "/config", "/handlers", "/quota", "/denials")


def test_top_subjects_keeps_the_heavy_hitters_under_churn_and_stays_bounded() -> None:
    top = TopSubjects(capacity=8)
    for i in range(5000):
        top.count("gold", "heavy", denied=i % 10 == 0)
        top.count("free", f"once-{i}", denied=False)
        if i % 2 == 0:
            top.count("silver", "medium", denied=False)
    entries = top.top(3)
    assert [e["subject"] for e in entries[:2]] == ["heavy", "medium"]
    assert entries[0]["checks"] >= 5000
    assert entries[0]["denied"] == 500
    # Space-Saving over-counts by at most the error bound, never under-counts.
    assert entries[0]["checks"] - entries[0]["error_bound"] <= 5000
    assert len(top.top(100)) == 8
    by_plan = top.top_by_plan(1)
    assert [e["subject"] for e in by_plan["gold"]] == ["heavy"]
    assert [e["subject"] for e in by_plan["silver"]] == ["medium"]
    assert len(by_plan["free"]) == 1
    assert top.evictions >= 4990


def test_top_subjects_redacts_and_cuts_subjects() -> None:
    top = TopSubjects(capacity=4)
    top.count("p", "token=abcdef123456" + "x" * 500, denied=False)
    (entry,) = top.top(1)
    assert "abcdef123456" not in entry["subject"]
    assert len(entry["subject"]) <= 80


def test_denial_ring_is_bounded_newest_first_and_redacted() -> None:
    ring = DenialRing()
    for i in range(DENIAL_CAPACITY + 25):
        ring.record(
            "check", "PERMISSION_DENIED", f"denied {i}: api_key=sk-live-{i} Authorization: Bearer tok{i}"
        )
    ring.record("check", "RESOURCE_EXHAUSTED", "y" * 10_000)
    recent = ring.recent()
    assert len(recent) == DENIAL_CAPACITY
    assert ring.total == DENIAL_CAPACITY + 26
    assert recent[0].code == "RESOURCE_EXHAUSTED"
    assert len(recent[0].reason) <= MAX_REASON
    assert recent[1].reason.startswith(f"denied {DENIAL_CAPACITY + 24}")
    assert not any("sk-live" in d.reason or "tok" in d.reason.split("Bearer")[-1][:4] for d in recent)


def test_sparkline_draws_one_vertex_per_point_and_scales_to_the_maximum() -> None:
    svg = sparkline([(float(t), float(t % 7)) for t in range(40)], title="queue")
    (points,) = re.findall(r"points='([^']+)'", svg)
    assert len(points.split()) == 40
    assert "max 6" in svg
    assert "<svg" in svg
    assert "queue" in svg
    assert "collecting" in sparkline([(0.0, 1.0)], title="one point")


def test_the_series_keep_a_bounded_number_of_points() -> None:
    board = StatusBoard(object())
    for i in range(SERIES_POINTS + 30):
        board.series.append(_Point(float(i), {"check_calls": float(i)}))
    assert len(board.series) == SERIES_POINTS
    assert board.chart("check_calls")[0] == (30.0, 30.0)


@pytest.fixture
def status_server(servers: Launcher, tmp_path: Path) -> tuple[Launcher, Path]:
    config = tmp_path / "config.yaml"
    config.write_text(policy_config(tmp_path / "reports.jsonl", blocked_host=BLOCKED), "utf-8")
    return servers, config


def test_every_view_renders_html_for_a_phone_and_json(status_server: tuple[Launcher, Path]) -> None:
    servers, config = status_server
    server = servers.start("--config", str(config), "--reload-interval", "0")
    for view in VIEWS:
        status, page = server.get(f"/status{view}")
        assert status == 200, page
        assert '<meta name="viewport" content="width=device-width,initial-scale=1">' in page
        assert '<meta http-equiv="refresh" content="5">' in page
        assert f'href="/status{view}.json"' in page
        status_json(server, view)
    assert '<meta http-equiv="refresh" content="30">' in server.get("/status?refresh=30")[1]
    assert '<meta http-equiv="refresh" content="5">' in server.get("/status?refresh=0;url=x")[1]
    assert server.get("/status/nothing")[0] == 404
    handlers = {h["name"]: h for h in status_json(server, "/handlers")["handlers"]}
    assert handlers["denyall.istio-system"]["adapter"] == "denier"
    assert handlers["tofile.istio-system"]["adapter"] == "stdio"
    assert {h["health"] for h in handlers.values()} == {"ok"}


def test_counts_and_denials_match_metrics_and_hold_no_key(status_server: tuple[Launcher, Path]) -> None:
    servers, config = status_server
    server = servers.start("--config", str(config), "--reload-interval", "0")
    load = Load(server.grpc_target, limit=60)
    load.start()
    try:
        wait_until(lambda: load.checks >= 40, 60, "40 Checks")
        load.pause()
        overview = status_json(server)
        metrics = server.metrics()
    finally:
        load.finish()
    assert overview["counters"]["check_calls"] == metric_value(metrics, "mixer_check_calls_total")
    assert overview["counters"]["report_calls"] == metric_value(metrics, "mixer_report_calls_total")
    assert overview["counters"]["check_calls"] == load.checks
    denials = status_json(server, "/denials")
    assert denials["total"] == load.checks // 4
    assert denials["recent"][0]["code"] == "PERMISSION_DENIED"
    assert "not on the guest list" in denials["recent"][0]["reason"]
    assert "sk-live-secret" not in server.get("/status/denials")[1]
    assert "sk-live-secret" not in server.get("/status/denials.json")[1]


def test_reload_history_shows_the_last_error_then_the_recovery(status_server: tuple[Launcher, Path]) -> None:
    servers, config = status_server
    good = config.read_text("utf-8")
    server = servers.start("--config", str(config), "--reload-interval", "0")
    write_atomically(
        config, good + "\n---\nkind: handler\nmetadata: {name: broken}\nspec: {compiledAdapter: nosuch}\n"
    )
    server.send(signal.SIGHUP)
    failed = wait_until(
        lambda: (c := status_json(server, "/config"))["last_error"] and c, 30, "a failed reload on the page"
    )
    assert failed["reloads"]["failure"] == 1
    assert failed["generation"] == 1
    assert failed["history"][0]["result"] == "failure"
    assert "nosuch" in failed["last_error"]["error"] or "broken" in failed["last_error"]["error"]
    page = server.get("/status/config")[1]
    assert 'data-key="last_error"' in page
    assert 'class="failure"' in page
    write_atomically(config, good)
    server.send(signal.SIGHUP)
    recovered = wait_until(
        lambda: (
            (c := status_json(server, "/config"))["generation"] == 2
            and c["history"][0]["result"] == "success"
            and c
        ),
        30,
        "the reload after the fix on the page",
    )
    assert [e["result"] for e in recovered["history"]][:3] == ["success", "failure", "loaded"]


PLANS_CONFIG = """
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {name: free}
spec:
  limits: [{name: per_minute, max: 5, per: minute}]
---
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {name: gold}
spec:
  limits: [{name: per_minute, max: 1000, per: minute}]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: plans, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    subjects:
      keys:
        inline:
          key-alice-0123456789: {subject: alice, plan: gold}
          key-bob-0123456789: {subject: bob, plan: free}
      unknown_key: UNAUTHENTICATED
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: plancheck, namespace: istio-system}
spec:
  compiledTemplate: plancheck
  params:
    api_key: request.api_key | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: plans, namespace: istio-system}
spec:
  actions:
  - handler: plans
    instances: [plancheck]
"""


async def test_quota_view_ranks_plan_subjects_and_shows_no_api_key(servers: Launcher, tmp_path: Path) -> None:
    config = tmp_path / "plans.yaml"
    config.write_text(PLANS_CONFIG, "utf-8")
    server = servers.start("--config", str(config), "--reload-interval", "0")
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        for _ in range(12):
            await check(channel, {"request.api_key": "key-alice-0123456789"})
        for _ in range(8):
            await check(channel, {"request.api_key": "key-bob-0123456789"})
        refused = await check(channel, {"request.api_key": "key-mallory-0123456789"})
    assert refused.precondition.status.code == 16
    top = status_json(server, "/quota")["top_subjects"]
    assert [(u["plan"], u["subject"], u["checks"], u["denied"]) for u in top] == [
        ("gold", "alice", 12, 0),
        ("free", "bob", 8, 3),
    ]
    by_plan = status_json(server, "/quota")["by_plan"]
    assert {plan: [u["subject"] for u in entries] for plan, entries in by_plan.items()} == {
        "free": ["bob"],
        "gold": ["alice"],
    }
    recent = status_json(server, "/denials")["recent"]
    assert [d["code"] for d in recent[:4]] == ["UNAUTHENTICATED"] + ["RESOURCE_EXHAUSTED"] * 3
    for view in ("/quota", "/quota.json", "/denials", "/denials.json", "", ".json"):
        assert "0123456789" not in server.get(f"/status{view}")[1]
    page = server.get("/status/quota")[1]
    assert "<td>alice</td>" in page
    assert "<td>bob</td>" in page


async def test_quota_view_shows_a_redis_store_failing_while_redis_is_down(
    servers: Launcher, redis_server: RedisServer, tmp_path: Path
) -> None:
    config = tmp_path / "plans.yaml"
    redis_params = (
        f"    redis_server_url: {redis_server.url}\n"
        "    key_prefix: status-test\n"
        "    failure_policy: fail_closed\n"
        "    timeout: 200ms\n"
        "    subjects:"
    )
    config.write_text(
        PLANS_CONFIG.replace("compiledAdapter: memquota", "compiledAdapter: redisquota").replace(
            "    subjects:", redis_params
        ),
        "utf-8",
    )
    server = servers.start("--config", str(config), "--reload-interval", "0")
    handler = "plans.istio-system"

    def store() -> dict[str, Any]:
        (row,) = [s for s in status_json(server, "/quota")["stores"] if s["name"] == handler]
        return dict(row)

    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        for _ in range(3):
            await check(channel, {"request.api_key": "key-alice-0123456789"})
        healthy = store()
        assert healthy["health"] == "ok"
        assert healthy["allocations"] == 3
        redis_server.stop()
        refused = await check(channel, {"request.api_key": "key-alice-0123456789"})
        assert refused.precondition.status.code != 0
        failing = wait_until(lambda: (row := store())["health"] == "failing" and row, 30, "a failing store")
    assert failing["store_failures"] >= 1
    assert failing["store_failures"] == metric_value(
        server.metrics(), "mixer_redisquota_store_failures_total", handler=handler
    )
    assert 'class="failing"' in server.get("/status/quota")[1]


@given(st.lists(st.integers(min_value=0, max_value=30), max_size=400), st.integers(min_value=1, max_value=8))
def test_top_subjects_never_under_counts_and_bounds_its_error(stream: list[int], capacity: int) -> None:
    top = TopSubjects(capacity=capacity)
    truth: dict[str, int] = {}
    for n in stream:
        top.count("p", f"s{n}", denied=False)
        truth[f"s{n}"] = truth.get(f"s{n}", 0) + 1
    entries = top.top(capacity)
    assert len(entries) == min(capacity, len(truth))
    assert sum(e["checks"] for e in entries) == len(stream)
    for entry in entries:
        true_count = truth[entry["subject"]]
        assert entry["checks"] - entry["error_bound"] <= true_count <= entry["checks"]
