"""The HTTP port: health, readiness, the server's own metrics and the effective config."""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mixer.config import redacted
from mixer.server._holder import RuntimeHolder
from mixer.server._metrics import ServerMetrics
from mixer.server._status import install_status


class Phase(enum.Enum):
    """Where the process is in its life; only SERVING is ready."""

    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"


class AdminState:
    """What the HTTP endpoints read: the phase, the runtime holder once there is one, the metrics."""

    def __init__(self, metrics: ServerMetrics, *, worker_index: int | None = None) -> None:
        self.phase = Phase.STARTING
        self.holder: RuntimeHolder | None = None
        self.metrics = metrics
        self.worker_index = worker_index

    @property
    def ready(self) -> bool:
        return self.phase is Phase.SERVING and self.holder is not None

    def identity(self) -> dict[str, Any]:
        info: dict[str, Any] = {"status": self.phase.value, "pid": os.getpid()}
        if self.worker_index is not None:
            info["worker"] = self.worker_index
        if self.holder is not None:
            info["generation"] = self.holder.current.generation
        return info


def build_admin_app(
    state: AdminState, routes: Iterable[web.AbstractRouteDef] = (), *, client_max_size: int = 64 * 1024
) -> web.Application:
    """``/healthz``, ``/readyz``, ``/metrics``, ``/config`` (see docs/serving.md) and ``/status``
    (docs/status-page.md), plus ``routes``
    of the HTTP protocols (see :mod:`mixer.api._registry`)."""
    app = web.Application(client_max_size=client_max_size)
    app.router.add_routes(list(routes))
    app.router.add_get("/healthz", _handler(state, _healthz))
    app.router.add_get("/readyz", _handler(state, _readyz))
    app.router.add_get("/metrics", _handler(state, _metrics))
    app.router.add_get("/config", _handler(state, _config))
    install_status(app, state)
    return app


Endpoint = Callable[[AdminState, web.Request], web.Response]


def _handler(state: AdminState, endpoint: Endpoint) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        return endpoint(state, request)

    return handle


def _healthz(state: AdminState, request: web.Request) -> web.Response:
    # Alive means the event loop answers; a draining process is still alive.
    return web.json_response(state.identity())


def _readyz(state: AdminState, request: web.Request) -> web.Response:
    return web.json_response(state.identity(), status=200 if state.ready else 503)


def _metrics(state: AdminState, request: web.Request) -> web.Response:
    # Rendered on the loop: the registry is small, and RuntimeStats must not change mid-read.
    body = generate_latest(state.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _config(state: AdminState, request: web.Request) -> web.Response:
    holder = state.holder
    if holder is None:
        return web.json_response({"status": state.phase.value, "error": "no config loaded yet"}, status=503)
    info = holder.info
    runtime = holder.current
    body = {
        "embedded": info.embedded,
        "source": info.source,
        "note": (
            "the embedded default config (mixer serve was given no --config)"
            if info.embedded
            else f"loaded from {info.source}"
        ),
        "files": list(info.files),
        "generation": runtime.generation,
        "config": redacted(runtime.config),
    }
    text = json.dumps(body, indent=2, sort_keys=False, default=str)
    return web.Response(text=text, content_type="application/json")
