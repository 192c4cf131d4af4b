"""The ``counting`` adapter keeps Mesh Mixer's adapter contract and counts what Reports send it.

Everything comes from ``mixer.testing``: the contract suite, run by subclassing it, and the
builders of a handler's environment and of report batches from request attributes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mixer_example_adapter import ADAPTER, CountingConfig, CountingHandler

from mixer.testing import AdapterContract, handler_env, report_batch

REQUESTCOUNT = {"value": "1", "dimensions": {"path": "request.path", "code": "response.code"}}
ACCESSLOG = {"severity": '"Info"', "variables": {"path": "request.path"}}
REQUESTS = [{"request.path": "/a", "response.code": 200}, {"request.path": "/b", "response.code": 404}]


class TestCountingContract(AdapterContract):
    adapter = ADAPTER


def counting(**params: Any) -> CountingHandler:
    handler = ADAPTER.build(CountingConfig(**params), handler_env("counter.istio-system"))
    assert isinstance(handler, CountingHandler)
    return handler


def test_counts_the_instances_of_each_template() -> None:
    handler = counting()
    handler.handle_report(report_batch("metric", REQUESTCOUNT, REQUESTS, name="requestcount.istio-system"))
    handler.handle_report(report_batch("logentry", ACCESSLOG, REQUESTS[:1], name="accesslog.istio-system"))
    assert handler.by_template == {"metric": 2, "logentry": 1}
    assert not handler.by_name


def test_counts_per_instance_name_when_asked() -> None:
    handler = counting(by_instance=True)
    handler.handle_report(report_batch("metric", REQUESTCOUNT, REQUESTS, name="requestcount.istio-system"))
    handler.handle_report(report_batch("reportnothing", {}, REQUESTS, name="nothing.istio-system"))
    assert handler.by_name == {"requestcount.istio-system": 2, "nothing.istio-system": 2}


def test_an_empty_batch_counts_nothing() -> None:
    handler = counting(by_instance=True)
    handler.handle_report(report_batch("metric", REQUESTCOUNT, []))
    assert not handler.by_template
    assert not handler.by_name


def test_shutdown_closes_the_handler() -> None:
    handler = counting()
    asyncio.run(handler.shutdown(1.0))
    assert handler.closed
