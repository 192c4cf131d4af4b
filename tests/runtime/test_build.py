"""Building runtimes: validation, handler reuse across reloads, lifecycle."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

import mixer.runtime
from mixer.config import ValidatedConfig
from mixer.runtime import Runtime, RuntimeBuildError, RuntimeDelta, RuntimeStats, build_runtime
from tests.runtime.support import RecordingHandler, config, fq, handler, instance, registry, rule


def recording(rt: Runtime, name: str) -> RecordingHandler:
    h = rt.handlers[fq(name)]
    assert isinstance(h, RecordingHandler)
    return h


def two_handlers(prom_tag: str = "", log_tag: str = "", *, with_log: bool = True) -> ValidatedConfig:
    handlers = [handler("prom", tag=prom_tag)]
    rules = [rule("m", None, (fq("prom"), [fq("count")]))]
    if with_log:
        handlers.append(handler("log", tag=log_tag))
        rules.append(rule("l", None, (fq("log"), [fq("access")])))
    return config(
        handlers,
        [instance("count", "metric", value="1"), instance("access", "logentry")],
        rules,
    )


def test_public_api() -> None:
    assert set(mixer.runtime.__all__) >= {
        "Runtime",
        "build_runtime",
        "CheckOutcome",
        "QuotaOutcome",
        "QuotaRequest",
        "ReportOutcome",
        "HeaderOperationResult",
        "RuntimeStats",
        "RuntimeBuildError",
    }
    for name in mixer.runtime.__all__:
        assert hasattr(mixer.runtime, name)


def test_generation_increases() -> None:
    first = build_runtime(two_handlers(), registry())
    second = build_runtime(two_handlers(), registry(), previous=first)
    assert second.generation > first.generation


def test_only_handlers_rules_use_are_built() -> None:
    cfg = two_handlers()
    cfg = config([*cfg.handlers.values(), handler("unused")], list(cfg.instances.values()), cfg.rules)
    rt = build_runtime(cfg, registry())
    assert sorted(rt.handlers) == [fq("log"), fq("prom")]


def test_handler_env(tmp_path: Path) -> None:
    logger = logging.getLogger("test.runtime")
    rt = build_runtime(two_handlers(), registry(), data_dir=tmp_path, logger=logger)
    env = recording(rt, "prom").env
    assert env.handler_name == fq("prom")
    assert env.data_dir == tmp_path / fq("prom")
    assert env.logger.name.startswith("test.runtime.")
    assert env.delivery_ack == "auto"
    # The server's --delivery-ack reaches every handler.
    spooled = build_runtime(two_handlers(), registry(), data_dir=tmp_path, delivery_ack="spool")
    assert recording(spooled, "prom").env.delivery_ack == "spool"


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (
            config(
                [], [instance("count", "metric", value="1")], [rule("m", None, (fq("nope"), [fq("count")]))]
            ),
            "rule m.istio-system (test.yaml: document 1): unknown handler 'nope.istio-system'",
        ),
        (
            config([handler("prom")], [], [rule("m", None, (fq("prom"), [fq("nope")]))]),
            "unknown instance 'nope.istio-system'",
        ),
        (
            config(
                [handler("deny", adapter="reportonly")],
                [instance("user", "listentry", value="source.name")],
                [rule("c", None, (fq("deny"), [fq("user")]))],
            ),
            "handler deny.istio-system (adapter 'reportonly') cannot take check instance user.istio-system "
            "of template 'listentry': it does not implement CheckHandler",
        ),
        (
            config(
                [handler("prom", adapter="metriconly")],
                [instance("access", "logentry")],
                [rule("l", None, (fq("prom"), [fq("access")]))],
            ),
            "does not support template 'logentry' of instance access.istio-system (supported: metric)",
        ),
        (
            config(
                [handler("b", adapter="broken")],
                [instance("count", "metric", value="1")],
                [rule("m", None, (fq("b"), [fq("count")]))],
            ),
            "handler b.istio-system (test.yaml: document 1): adapter 'broken' failed to build it: "
            "bad credentials file",
        ),
    ],
)
def test_build_errors(cfg: ValidatedConfig, message: str) -> None:
    with pytest.raises(RuntimeBuildError) as info:
        build_runtime(cfg, registry())
    assert message in str(info.value)


def test_unknown_adapter() -> None:
    cfg = two_handlers()
    prom = cfg.handlers[fq("prom")]
    bad = type(prom)(prom.name, prom.namespace, "gone", prom.params, prom.source)
    cfg = config([bad], list(cfg.instances.values()), cfg.rules[:1])
    with pytest.raises(RuntimeBuildError, match="unknown adapter 'gone'"):
        build_runtime(cfg, registry())


async def test_reload_reuses_unchanged_handlers_and_retires_the_rest() -> None:
    first = build_runtime(two_handlers(), registry())
    await first.start()
    prom, log = recording(first, "prom"), recording(first, "log")
    assert (prom.starts, log.starts) == (1, 1)
    assert first.delta == RuntimeDelta(new=(fq("prom"), fq("log")))

    # prom unchanged, log's params changed: a new log handler, the old one retired.
    second = build_runtime(two_handlers(log_tag="v2"), registry(), previous=first)
    assert second.delta == RuntimeDelta(new=(fq("log"),), reused=(fq("prom"),), retired=(fq("log"),))
    assert recording(second, "prom") is prom
    new_log = recording(second, "log")
    assert new_log is not log
    assert second.stats is first.stats

    await second.start()
    assert (prom.starts, new_log.starts) == (1, 1)

    await first.shutdown(1.0)
    assert (prom.shutdowns, log.shutdowns) == (0, 1)

    await second.shutdown(1.0)
    await second.shutdown(1.0)
    assert (prom.shutdowns, new_log.shutdowns) == (1, 1)


async def test_removed_handler_is_retired() -> None:
    first = build_runtime(two_handlers(), registry())
    await first.start()
    second = build_runtime(two_handlers(with_log=False), registry(), previous=first)
    assert second.delta == RuntimeDelta(reused=(fq("prom"),), retired=(fq("log"),))


async def test_failed_start_stops_what_it_started_and_keeps_the_previous_runtime_whole() -> None:
    first = build_runtime(two_handlers(), registry())
    await first.start()
    prom = recording(first, "prom")
    cfg = two_handlers()
    cfg = config(
        [*cfg.handlers.values(), handler("bad", fail_start=True), handler("good")],
        list(cfg.instances.values()),
        [
            *cfg.rules,
            rule("b", None, (fq("bad"), [fq("count")])),
            rule("g", None, (fq("good"), [fq("count")])),
        ],
    )
    second = build_runtime(cfg, registry(), previous=first)
    with pytest.raises(
        RuntimeBuildError, match=r"handlers failed to start: bad.istio-system: cannot connect"
    ):
        await second.start()
    assert recording(second, "good").shutdowns == 1
    await second.shutdown(1.0)
    assert prom.shutdowns == 0
    # The previous runtime still owns its handlers.
    await first.shutdown(1.0)
    assert prom.shutdowns == 1


async def test_no_reuse_from_a_shut_down_runtime() -> None:
    first = build_runtime(two_handlers(), registry())
    await first.start()
    await first.shutdown(1.0)
    second = build_runtime(two_handlers(), registry(), previous=first)
    assert second.delta.reused == ()
    assert recording(second, "prom") is not recording(first, "prom")


async def test_start_refuses_a_handler_shut_down_with_the_previous_runtime() -> None:
    first = build_runtime(two_handlers(), registry())
    await first.start()
    second = build_runtime(two_handlers(), registry(), previous=first)
    await first.shutdown(1.0)
    with pytest.raises(RuntimeBuildError, match="was shut down with a previous runtime"):
        await second.start()


async def test_shutdown_is_bounded_by_the_timeout() -> None:
    cfg = config(
        [handler("slow", slow_shutdown=10.0), handler("fast")],
        [instance("count", "metric", value="1")],
        [rule("m", None, (fq("slow"), [fq("count")]), (fq("fast"), [fq("count")]))],
    )
    rt = build_runtime(cfg, registry())
    await rt.start()
    started = time.monotonic()
    await rt.shutdown(0.05)
    assert time.monotonic() - started < 1.0
    assert recording(rt, "fast").shutdowns == 1
    assert rt.closed


async def test_shutdown_before_start_does_nothing() -> None:
    rt = build_runtime(two_handlers(), registry())
    await rt.shutdown(1.0)
    assert recording(rt, "prom").shutdowns == 0


def test_stats_start_empty() -> None:
    assert build_runtime(two_handlers(), registry()).stats == RuntimeStats()
