"""The Mesh Mixer server: ``mixer serve``.

One process runs one asyncio event loop (uvloop when installed) with:

- the gRPC server (grpc.aio) carrying the protocol servicers of :mod:`mixer.api`;
- the HTTP endpoints (aiohttp): ``/healthz``, ``/readyz``, ``/metrics`` (this server's own
  metrics, :class:`ServerMetrics`) and ``/config`` (the effective config, secrets redacted);
- the runtime in a :class:`RuntimeHolder`, swapped atomically by the :class:`Reloader` on SIGHUP
  or when the config files change; a request finishes on the runtime it started with.

:class:`MixerServer` is the lifecycle (start in dependency order, gRPC last; stop gRPC first,
drain, close adapters, plugin hooks) and :func:`run_server` runs one with signal handling.
:func:`run_workers` supervises N such processes sharing the ports (``--workers N``). Exit codes:
0 after a graceful stop, 1 when the server could not start, 1 or 130 (SIGINT) when a second
signal cut the shutdown short. See docs/serving.md.
"""

from __future__ import annotations

from mixer.api import (
    LATENCY_BUCKETS,
    ConfigInfo,
    ListenAddress,
    MethodMetrics,
    RuntimeHolder,
    RuntimeStatsCollector,
    ServerMetrics,
)
from mixer.server._app import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    MixerServer,
    StartupError,
    event_loop_factory,
    run_server,
)
from mixer.server._http import AdminState, AdminToken, Phase, build_admin_app, build_data_app
from mixer.server._httpguard import HttpGuard, HttpLimits
from mixer.server._logging import JsonFormatter, configure_logging, default_log_format
from mixer.server._net import reserve_shared_port
from mixer.server._options import (
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_CHECK_CACHE_BYTES,
    DEFAULT_CHECK_TIMEOUT,
    DEFAULT_DRAIN_DELAY,
    DEFAULT_GRPC_LISTEN,
    DEFAULT_HTTP_BODY_TIMEOUT,
    DEFAULT_HTTP_HEADER_TIMEOUT,
    DEFAULT_HTTP_LISTEN,
    DEFAULT_HTTP_MAX_CONNECTIONS,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_RELOAD_INTERVAL,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DELIVERY_ACKS,
    LOG_FORMATS,
    LOG_LEVELS,
    TLS_CLIENT_AUTH_MODES,
    ServeOptions,
)
from mixer.server._reload import ConfigSource, Reloader
from mixer.server._tls import ServerTls, TlsSettings
from mixer.server._workers import PROMETHEUS_LISTEN_ENV, WORKER_INDEX_ENV, WorkerSupervisor, run_workers
from mixer.wire import DEFAULT_MAX_REPORT_RECORDS

__all__ = [
    "DEFAULT_ADMIN_LISTEN",
    "DEFAULT_CHECK_CACHE_BYTES",
    "DEFAULT_CHECK_TIMEOUT",
    "DEFAULT_DRAIN_DELAY",
    "DEFAULT_GRPC_LISTEN",
    "DEFAULT_HTTP_BODY_TIMEOUT",
    "DEFAULT_HTTP_HEADER_TIMEOUT",
    "DEFAULT_HTTP_LISTEN",
    "DEFAULT_HTTP_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONCURRENT_REQUESTS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_REPORT_RECORDS",
    "DEFAULT_RELOAD_INTERVAL",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "DELIVERY_ACKS",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "LATENCY_BUCKETS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "PROMETHEUS_LISTEN_ENV",
    "TLS_CLIENT_AUTH_MODES",
    "WORKER_INDEX_ENV",
    "AdminState",
    "AdminToken",
    "ConfigInfo",
    "ConfigSource",
    "HttpGuard",
    "HttpLimits",
    "JsonFormatter",
    "ListenAddress",
    "MethodMetrics",
    "MixerServer",
    "Phase",
    "Reloader",
    "RuntimeHolder",
    "RuntimeStatsCollector",
    "ServeOptions",
    "ServerMetrics",
    "ServerTls",
    "StartupError",
    "TlsSettings",
    "WorkerSupervisor",
    "build_admin_app",
    "build_data_app",
    "configure_logging",
    "default_log_format",
    "event_loop_factory",
    "reserve_shared_port",
    "run_server",
    "run_workers",
]
