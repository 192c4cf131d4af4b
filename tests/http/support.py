"""The HTTP check routes in process, on a real runtime built from YAML, behind an aiohttp test server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from mixer.api import Admission, ServiceLimits
from mixer.api.http_check import HttpCheckService
from mixer.config import load_config_text
from mixer.runtime import Runtime, build_runtime
from mixer.server import ConfigInfo, RuntimeHolder, ServerMetrics
from plugins.manager import create_plugin_manager
from tests.server.support import metric_value

INFO = ConfigInfo(embedded=False, source="test")


def plans_config(output: Path) -> str:
    """A two-per-hour plan (GCRA: no window edge to race), one key, a denier for /blocked, header
    operations of every kind, and every Report written as JSON lines to ``output``."""
    return f"""
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {{name: tiny}}
spec:
  limits:
  - {{name: per_hour, max: 2, per: 1h, algorithm: gcra}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: plans, namespace: istio-system}}
spec:
  compiledAdapter: memquota
  params:
    subjects:
      keys:
        inline:
          key-tiny: {{subject: alice, plan: tiny}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: plancheck, namespace: istio-system}}
spec:
  compiledTemplate: plancheck
  params:
    api_key: request.api_key | ""
    principal: source.principal | ""
    operation: request.method | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: plans, namespace: istio-system}}
spec:
  match: (request.url_path | "") != "/free"
  actions:
  - handler: plans
    instances: [plancheck]
  requestHeaderOperations:
  - {{name: x-added, values: ['"yes"']}}
  - {{name: x-appended, values: ['"one"', '"two"'], operation: APPEND}}
  - {{name: x-removed, operation: REMOVE}}
  - {{name: content-length, values: ['"5"']}}
  responseHeaderOperations:
  - {{name: x-path, values: ['request.url_path | "none"']}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: denyall, namespace: istio-system}}
spec:
  compiledAdapter: denier
  params:
    status: {{code: 7, message: not on the guest list}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: nothing, namespace: istio-system}}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: blocked, namespace: istio-system}}
spec:
  match: request.url_path == "/blocked"
  actions:
  - handler: denyall
    instances: [nothing]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: tofile, namespace: istio-system}}
spec:
  compiledAdapter: stdio
  params:
    outputPath: {output}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: entry, namespace: istio-system}}
spec:
  compiledTemplate: logentry
  params:
    severity: '"Info"'
    variables:
      code: response.code | 0
      path: request.path | ""
      source: source.ip | ip("0.0.0.0")
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: logall, namespace: istio-system}}
spec:
  actions:
  - handler: tofile
    instances: [entry]
"""


async def plans_runtime(output: Path) -> Runtime:
    registry = create_plugin_manager(load_entry_points=False, blocked=()).registry()
    config = load_config_text(plans_config(output), registry, source_name="plans.yaml", environ={})
    runtime = build_runtime(config, registry)
    await runtime.start()
    return runtime


@dataclass
class Served:
    client: TestClient[web.Request, web.Application]
    service: HttpCheckService
    metrics: ServerMetrics
    admission: Admission
    holder: RuntimeHolder | None
    #: Where the runtime's report handler writes, when it has one.
    output: Path | None = None

    def count(self, method: str, code: str) -> float:
        text = generate_latest(self.metrics.registry).decode()
        return metric_value(text, "mixer_requests_total", api="http", method=method, code=code) or 0.0

    def decode_errors(self, method: str) -> float:
        text = generate_latest(self.metrics.registry).decode()
        return metric_value(text, "mixer_decode_errors_total", api="http", method=method) or 0.0


@asynccontextmanager
async def serve(
    runtime: Runtime | None,
    *,
    limits: ServiceLimits | None = None,
    limit: int = 100,
    client_max_size: int = 64 * 1024,
    holder_ref: Callable[[], RuntimeHolder | None] | None = None,
) -> AsyncIterator[Served]:
    holder = RuntimeHolder(runtime, INFO) if runtime is not None else None
    metrics = ServerMetrics(lambda: holder.current.stats if holder is not None else None)
    admission = Admission(limit)
    service = HttpCheckService(
        holder_ref or (lambda: holder),
        metrics,
        admission,
        limits or ServiceLimits(),
        logger=logging.getLogger("tests.http"),
    )
    app = web.Application(client_max_size=client_max_size)
    app.router.add_routes(service.routes())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Served(client, service, metrics, admission, holder)
    if runtime is not None:
        await runtime.shutdown(5.0)
