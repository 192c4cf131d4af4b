"""The collecting-metrics task end to end: Istio's metrics.yaml handler, scraped by a real Prometheus,
answers the task's query for ``istio_double_request_count``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from adapters.prometheus import PrometheusConfig, PrometheusHandler
from mixer.adapter import HandlerEnv, ReportBatch
from mixer.attributes import AttributeBag
from mixer.templates import MetricInstance
from tests.backends.prometheus import PrometheusServer, value_of
from tests.conformance.support import load_istio
from tests.server.support import free_port


async def test_the_tasks_query_finds_the_double_request_count(tmp_path: Path) -> None:
    config = load_istio("telemetry/metrics.yaml")
    (handler_config,) = config.handlers.values()
    assert isinstance(handler_config.params, PrometheusConfig)
    address = f"127.0.0.1:{free_port()}"
    # Istio's handler as configured, on a free port instead of Mixer's fixed 42422.
    params = handler_config.params.model_copy(update={"listen": address})
    handler = PrometheusHandler(params, HandlerEnv(handler_config.name, logging.getLogger("test.istio")))
    await handler.start()
    try:
        (name,) = config.instances
        request = AttributeBag(
            {"source.workload.name": "productpage-v1", "destination.workload.name": "reviews-v2"}
        )
        instance = config.instances[name].builder.build(request)
        assert isinstance(instance, MetricInstance)
        for _ in range(3):
            handler.handle_report(ReportBatch(handler_config.name, [instance]))
        # The handler serves /metrics on this loop: Prometheus is waited for from a thread.
        prometheus = await asyncio.to_thread(PrometheusServer(tmp_path, [address]).start)
        try:
            # The task: "istio_double_request_count" in Prometheus, 2 for every request.
            query = 'sum(istio_double_request_count{destination="reviews-v2", message="twice the fun!"})'
            result = await asyncio.to_thread(
                prometheus.wait_for, query, lambda r: value_of(r) == 6, what=f"{query} == 6"
            )
            assert value_of(result) == 6, result
            assert await asyncio.to_thread(prometheus.query, "istio_double_request_count_total") == []
        finally:
            await asyncio.to_thread(prometheus.stop)
    finally:
        await handler.shutdown(5.0)
