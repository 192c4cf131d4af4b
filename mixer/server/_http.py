"""The HTTP listeners: the data port (the HTTP protocols nginx and Envoy call, health and
readiness) and the admin port (health, readiness, the server's own metrics, the effective config),
optionally behind a bearer token."""

from __future__ import annotations

import enum
import hmac
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mixer.api import RuntimeHolder, ServerMetrics
from mixer.config import redacted
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


#: Answered on both ports and without a token: what Kubernetes probes and load balancers poll.
PROBE_PATHS: Final = frozenset({"/healthz", "/readyz"})

logger = logging.getLogger("mixer.server.admin")


def probe_routes(state: AdminState) -> list[web.RouteDef]:
    return [
        web.get("/healthz", _handler(state, _healthz)),
        web.get("/readyz", _handler(state, _readyz)),
    ]


def admin_routes(state: AdminState) -> list[web.RouteDef]:
    """Every route of the admin port (see docs/serving.md); the one place they are listed."""
    return [
        *probe_routes(state),
        web.get("/metrics", _handler(state, _metrics)),
        web.get("/config", _handler(state, _config)),
    ]


def build_data_app(
    state: AdminState, routes: Iterable[web.AbstractRouteDef] = (), *, client_max_size: int = 64 * 1024
) -> web.Application:
    """The data port: ``routes`` of the HTTP protocols (see :mod:`mixer.api._registry`), plus
    ``/healthz`` and ``/readyz``."""
    app = web.Application(client_max_size=client_max_size)
    app.router.add_routes(list(routes))
    app.router.add_routes(probe_routes(state))
    return app


def build_admin_app(state: AdminState, *, token: AdminToken | None = None) -> web.Application:
    """The admin port: :func:`admin_routes` and ``/status`` (docs/status-page.md), every one but
    the probes behind ``token`` if given."""
    app = web.Application(client_max_size=64 * 1024)
    if token is not None:
        app.middlewares.append(token.middleware)
    app.router.add_routes(admin_routes(state))
    # The status pages (docs/status-page.md) are for operators too.
    install_status(app, state)
    return app


class AdminToken:
    """The bearer token of ``--admin-token-file``, read again when the file changes (rotation).

    :raises ValueError: the file cannot be read or is empty at start.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._token = b""
        try:
            self._refresh()
        except OSError as exc:
            raise ValueError(f"--admin-token-file {path}: {exc.strerror or exc}") from exc
        if not self._token:
            raise ValueError(f"--admin-token-file {path} is empty")

    def _refresh(self) -> None:
        st = os.stat(self.path)
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            token = self.path.read_bytes().strip()
            if token:
                self._token = token
            self._stamp = stamp

    def accepts(self, header: str | None) -> bool:
        try:
            self._refresh()
        except OSError as exc:
            # Keep the token last read: a rotation that removes and writes the file is not a gap.
            logger.warning("admin token file %s: %s; keeping the token last read", self.path, exc)
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "replace"), self._token)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if request.path not in PROBE_PATHS and not self.accepts(request.headers.get("Authorization")):
            return web.json_response(
                {"error": "a valid bearer token is required"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="mixer-admin"'},
            )
        response: web.StreamResponse = await handler(request)
        return response


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
