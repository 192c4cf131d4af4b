"""Report dispatch: batching per handler, errors, overload and sampling."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from mixer.attributes import AttributeBag
from mixer.config import SamplingConfig, ValidatedConfig
from mixer.runtime import Runtime, build_runtime
from mixer.runtime._runtime import MAX_REPORT_ERRORS
from mixer.status import Code
from mixer.templates import LogEntryInstance, MetricInstance
from tests.runtime.support import RecordingHandler, config, fq, handler, instance, registry, rule


def recording(rt: Runtime, name: str) -> RecordingHandler:
    h = rt.handlers[fq(name)]
    assert isinstance(h, RecordingHandler)
    return h


def bags(*paths: str, **common: Any) -> list[AttributeBag]:
    return [AttributeBag({"request.path": p, **common}) for p in paths]


def telemetry_config(
    prom: dict[str, Any] | None = None, log: dict[str, Any] | None = None
) -> ValidatedConfig:
    return config(
        [handler("prom", **(prom or {})), handler("log", **(log or {}))],
        [
            instance("count", "metric", value="1", dimensions={"path": "request.path"}),
            instance("size", "metric", value="request.size | 0"),
            instance("access", "logentry", variables={"path": "request.path"}),
        ],
        [
            rule("metrics", 'context.protocol == "http"', (fq("prom"), [fq("count"), fq("size")])),
            rule("logs", None, (fq("log"), [fq("access")]), (fq("prom"), [fq("count")])),
        ],
    )


def test_one_batch_per_handler_with_every_instance_in_bag_then_rule_order() -> None:
    rt = build_runtime(telemetry_config(), registry())
    outcome = rt.report(bags("/a", "/b", **{"context.protocol": "http"}))
    assert outcome.status.ok
    assert outcome.records == 2
    assert outcome.instances == 8

    (prom_batch,) = recording(rt, "prom").batches
    assert prom_batch.handler == fq("prom")

    def metric(name: str, value: int, path: str | None = None) -> MetricInstance:
        return MetricInstance(fq(name), value=value, dimensions={} if path is None else {"path": path})

    assert prom_batch.instances == [
        metric("count", 1, "/a"),
        metric("size", 0),
        metric("count", 1, "/a"),
        metric("count", 1, "/b"),
        metric("size", 0),
        metric("count", 1, "/b"),
    ]
    (log_batch,) = recording(rt, "log").batches
    assert log_batch.instances == [
        LogEntryInstance(fq("access"), variables={"path": "/a"}),
        LogEntryInstance(fq("access"), variables={"path": "/b"}),
    ]


def test_no_call_for_a_handler_without_instances() -> None:
    rt = build_runtime(
        config(
            [handler("prom")],
            [instance("count", "metric", value="1")],
            [rule("m", 'context.protocol == "tcp"', (fq("prom"), [fq("count")]))],
        ),
        registry(),
    )
    outcome = rt.report(bags("/a"))
    assert outcome.instances == 0
    assert recording(rt, "prom").batches == []


def test_match_errors_count_as_false_and_are_listed() -> None:
    rt = build_runtime(telemetry_config(), registry())
    # context.protocol is absent: the metrics rule's match fails for every bag.
    outcome = rt.report(bags("/a", "/b"))
    assert outcome.match_errors == 2
    assert len(outcome.errors) == 2
    assert outcome.errors[0].startswith("rule metrics.istio-system: match: ")
    # Match errors alone do not fail a Report.
    assert outcome.status.ok
    assert rt.stats.match_errors == 2
    assert len(recording(rt, "prom").batches[0].instances) == 2


def test_instance_build_errors_skip_the_instance_and_fail_the_report() -> None:
    rt = build_runtime(telemetry_config(), registry())
    records = [AttributeBag({"context.protocol": "http"}), *bags("/ok", **{"context.protocol": "http"})]
    outcome = rt.report(records)
    assert outcome.instance_errors == 3
    assert outcome.errors[0].startswith("instance count.istio-system: ")
    assert outcome.status.code is Code.UNKNOWN
    assert rt.stats.instance_errors == 3
    assert [i.name for i in recording(rt, "prom").batches[0].instances] == [
        fq("size"),
        fq("count"),
        fq("size"),
        fq("count"),
    ]


def test_error_messages_are_bounded_but_counts_complete() -> None:
    rt = build_runtime(telemetry_config(), registry())
    outcome = rt.report([AttributeBag({"context.protocol": "http"})] * 50)
    assert outcome.instance_errors == 150
    assert len(outcome.errors) == MAX_REPORT_ERRORS


def test_overloaded_handler_is_reported_and_others_still_get_their_batch() -> None:
    rt = build_runtime(telemetry_config(prom={"overloaded": True}), registry())
    outcome = rt.report(bags("/a", **{"context.protocol": "http"}))
    assert outcome.overloaded == (fq("prom"),)
    assert outcome.status.code is Code.UNAVAILABLE
    assert outcome.instances == 1
    assert len(recording(rt, "log").batches) == 1
    assert rt.stats.overloaded == {fq("prom"): 1}


def test_handler_exception_is_a_failure_not_a_crash() -> None:
    rt = build_runtime(telemetry_config(log={"raise_message": "disk full"}), registry())
    outcome = rt.report(bags("/a", **{"context.protocol": "http"}))
    assert outcome.failed == (fq("log"),)
    assert outcome.status.code is Code.UNKNOWN
    assert "log.istio-system: disk full" in outcome.status.message
    assert rt.stats.handler_errors == {fq("log"): 1}


def test_stats() -> None:
    rt = build_runtime(telemetry_config(), registry())
    rt.report(bags("/a", "/b", **{"context.protocol": "http"}))
    rt.report(bags("/c", **{"context.protocol": "http"}))
    assert (rt.stats.report_calls, rt.stats.report_records, rt.stats.report_instances) == (2, 3, 12)


def sampled_config(sampling: SamplingConfig) -> ValidatedConfig:
    return config(
        [handler("prom")],
        [instance("count", "metric", value="1", dimensions={"path": "request.path"})],
        [rule("m", 'request.path != "/skip"', (fq("prom"), [fq("count")]), sampling=sampling)],
    )


def paths_reported(rt: Runtime) -> list[str]:
    batches = recording(rt, "prom").batches
    return [i.dimensions["path"] for b in batches for i in b.instances if isinstance(i, MetricInstance)]


def test_random_sampling_uses_the_injected_rng_without_request_ids() -> None:
    draws: Iterator[float] = iter([0.1, 0.5, 0.24, 0.9])
    rt = build_runtime(sampled_config(SamplingConfig(random_percent=25)), registry(), rng=lambda: next(draws))
    rt.report(bags("/1", "/2", "/skip", "/3", "/4"))
    # Only matching records draw: /skip consumes nothing.
    assert paths_reported(rt) == ["/1", "/3"]


def request_bags(count: int) -> list[AttributeBag]:
    return [AttributeBag({"request.path": f"/{i}", "request.id": f"req-{i}"}) for i in range(count)]


def never(*_: object) -> float:
    raise AssertionError("the request id decides")


def test_random_sampling_is_keyed_on_the_request_id() -> None:
    sampling = SamplingConfig(random_percent=30)
    first = build_runtime(sampled_config(sampling), registry(), rng=never)
    second = build_runtime(sampled_config(sampling), registry(), rng=never)
    first.report(request_bags(2000))
    second.report(request_bags(2000)[::-1])
    # Every report of one request is sampled alike, whatever the process or order.
    assert sorted(paths_reported(first)) == sorted(paths_reported(second))
    assert 500 < len(paths_reported(first)) < 700


def test_independent_randomness_ignores_the_request_id() -> None:
    draws: Iterator[float] = iter([0.9, 0.1, 0.9])
    sampling = SamplingConfig(random_percent=50, random_use_independent_randomness=True)
    rt = build_runtime(sampled_config(sampling), registry(), rng=lambda: next(draws))
    rt.report(request_bags(3))
    assert paths_reported(rt) == ["/1"]


def test_one_in_n_sampling_counts_matching_records() -> None:
    rt = build_runtime(sampled_config(SamplingConfig(rate_sampling_rate=3)), registry())
    rt.report(bags("/1", "/2", "/skip", "/3", "/4", "/5", "/6", "/7"))
    assert paths_reported(rt) == ["/1", "/4", "/7"]


def test_rate_limit_sampling_window() -> None:
    now = [100.0]
    sampling = SamplingConfig(
        rate_sampling_rate=3, rate_sampling_duration=timedelta(seconds=10), rate_max_unsampled_entries=2
    )
    rt = build_runtime(sampled_config(sampling), registry(), clock=lambda: now[0])
    rt.report(bags(*(f"/a{i}" for i in range(1, 9))))
    # Two unsampled entries, then the first of every three.
    assert paths_reported(rt) == ["/a1", "/a2", "/a3", "/a6"]
    now[0] += 10.0
    rt.report(bags("/b1", "/b2", "/b3", "/b4"))
    assert paths_reported(rt)[4:] == ["/b1", "/b2", "/b3"]


def test_random_and_rate_limit_must_both_select() -> None:
    draws: Iterator[float] = iter([0.1, 0.9, 0.1, 0.1])
    sampling = SamplingConfig(random_percent=50, random_use_independent_randomness=True, rate_sampling_rate=2)
    rt = build_runtime(sampled_config(sampling), registry(), rng=lambda: next(draws))
    rt.report(bags("/1", "/2", "/3", "/4"))
    # random keeps /1, /3, /4; 1-in-2 keeps /1, /3.
    assert paths_reported(rt) == ["/1", "/3"]


def test_zero_and_full_sampling() -> None:
    none = build_runtime(sampled_config(SamplingConfig(random_percent=0)), registry())
    none.report(bags("/1", "/2"))
    assert paths_reported(none) == []
    every = build_runtime(sampled_config(SamplingConfig(random_percent=100)), registry(), rng=never)
    every.report(bags("/1", "/2"))
    assert paths_reported(every) == ["/1", "/2"]


def test_namespaced_report_rules() -> None:
    rt = build_runtime(
        config(
            [handler("prom")],
            [instance("count", "metric", value="1", dimensions={"path": "request.path"})],
            [
                rule("shop", None, (fq("prom"), [fq("count")]), namespace="shop"),
                rule("all", 'request.path == "/all"', (fq("prom"), [fq("count")])),
            ],
        ),
        registry(),
    )
    rt.report(
        [
            AttributeBag({"request.path": "/shop", "destination.namespace": "shop"}),
            AttributeBag({"request.path": "/svc", "destination.service.namespace": "shop"}),
            AttributeBag({"request.path": "/other", "destination.namespace": "other"}),
            AttributeBag({"request.path": "/all", "destination.namespace": "shop"}),
            AttributeBag({"request.path": "/all"}),
        ]
    )
    # Rule order is kept: the namespaced rule comes first in config.
    assert paths_reported(rt) == ["/shop", "/svc", "/all", "/all", "/all"]


def test_an_instance_sent_to_several_handlers_is_built_once_per_bag() -> None:
    from mixer.config import InstanceConfig

    cfg = telemetry_config()
    access = cfg.instances[fq("access")]
    builds: list[str] = []
    inner = access.builder

    class Counting:
        name = inner.name
        template = inner.template

        def build(self, bag: AttributeBag) -> Any:
            builds.append(str(bag.get("request.path")))
            return inner.build(bag)

    shared = InstanceConfig(access.name, access.namespace, access.template, Counting(), access.source)
    cfg = ValidatedConfig(
        cfg.manifest,
        cfg.handlers,
        {**cfg.instances, access.name: shared},
        (*cfg.rules, rule("copy", None, (fq("prom"), [fq("access")]))),
    )
    rt = build_runtime(cfg, registry())
    outcome = rt.report(bags("/a", "/b"))
    assert outcome.status.ok
    assert builds == ["/a", "/b"]
    (log_batch,) = recording(rt, "log").batches
    (prom_batch,) = recording(rt, "prom").batches
    shared_in_prom = [i for i in prom_batch.instances if isinstance(i, LogEntryInstance)]
    assert [i.variables for i in shared_in_prom] == [{"path": "/a"}, {"path": "/b"}]
    assert all(a is b for a, b in zip(log_batch.instances, shared_in_prom, strict=True))


async def test_sliced_report_hands_over_what_report_does_and_yields_between_slices() -> None:
    paths = [f"/{i}" for i in range(2000)]
    whole = build_runtime(telemetry_config(), registry())
    expected = whole.report(bags(*paths, **{"context.protocol": "http"}))

    sliced = build_runtime(telemetry_config(), registry())
    turns = 0
    stop = False

    async def other_calls() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(other_calls())
    # A slice of 0 s still builds one step of bags, then yields: every step is its own slice.
    outcome = await sliced.report_in_slices(bags(*paths, **{"context.protocol": "http"}), slice_seconds=0.0)
    stop = True
    await other
    assert outcome == expected
    assert outcome.records == 2000
    assert outcome.instances == 8000
    for name in ("prom", "log"):
        batches = recording(sliced, name).batches
        assert len(batches) > 100
        flat = [i for batch in batches for i in batch.instances]
        assert flat == [i for batch in recording(whole, name).batches for i in batch.instances]
    assert turns > 100
    assert sliced.stats.report_calls == 1
    assert sliced.stats.report_records == 2000


async def test_sliced_report_names_an_overloaded_handler_once() -> None:
    rt = build_runtime(telemetry_config(prom={"overloaded": True}), registry())
    outcome = await rt.report_in_slices(bags(*[f"/{i}" for i in range(100)]), slice_seconds=0.0)
    assert outcome.overloaded == (fq("prom"),)
    assert outcome.status.code is Code.UNAVAILABLE
    assert rt.stats.overloaded[fq("prom")] > 1
