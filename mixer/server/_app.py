"""One server process: its lifecycle (start and stop in dependency order) on one event loop.

The ports are :class:`~mixer.server._listeners.Listeners`; running until a signal stops the
process is :func:`~mixer.server._signals.run_with_signals`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixer.api import Admission, ListenAddress, RuntimeHolder, ServerMetrics, ServiceContext, ServiceLimits
from mixer.api.mixer_v1 import SERVICE_NAME
from mixer.config import ConfigError, ValidatedConfig
from mixer.registry import Registry
from mixer.runtime import Runtime, RuntimeBuildError, RuntimeStats, build_runtime
from mixer.server._http import AdminState, Phase
from mixer.server._httpguard import HttpGuard
from mixer.server._introspection import GrpcIntrospection, api_service_names
from mixer.server._listeners import Listeners, StartupError
from mixer.server._malloc import trim_heaps_periodically, tune_malloc
from mixer.server._options import ServeOptions
from mixer.server._reload import ConfigSource, Reloader, log_config_error
from mixer.server._signals import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, run_with_signals
from plugins.manager import MixerPluginManager, create_plugin_manager

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "YOUNG_COLLECTION_THRESHOLD",
    "MixerServer",
    "StartupError",
    "event_loop_factory",
    "process_local_handlers",
    "run_server",
    "write_json_atomically",
]

logger = logging.getLogger("mixer.server")

#: Net allocations of tracked objects that start a collection of the youngest generation, once
#: serving (Python's default is 700; see :meth:`MixerServer.start`).
YOUNG_COLLECTION_THRESHOLD = 10_000


def process_local_handlers(config: ValidatedConfig, registry: Registry) -> list[str]:
    """The handlers whose adapter keeps state in process memory (``AdapterInfo.process_local_state``):
    with ``--workers``, each worker has its own."""
    names: list[str] = []
    for name, handler in config.handlers.items():
        info = registry.adapter(handler.adapter) or config.oop_adapters.get(handler.adapter)
        if info is not None and info.process_local_state:
            names.append(name)
    return sorted(names)


class MixerServer:
    """A Mesh Mixer server: runtime, gRPC API and HTTP endpoints, started and stopped in order.

    Start order: the HTTP endpoints (so ``/healthz`` answers and ``/readyz`` says 503 while
    starting), plugin start-up hooks, the config and its runtime with its handlers started, the
    gRPC server, and the syslog input when asked for. Stop order: ``/readyz`` 503, the syslog input
    closes and reports what it holds, the gRPC server stops taking calls and
    finishes those in flight, the runtime's handlers drain and close, plugin shut-down hooks,
    the HTTP endpoints. Both take one :class:`ServeOptions`; :meth:`run` adds signal handling.
    """

    def __init__(self, options: ServeOptions, *, plugin_manager: MixerPluginManager | None = None) -> None:
        self.options = options
        self._plugin_manager = plugin_manager
        self._holder: RuntimeHolder | None = None
        self.metrics = ServerMetrics(
            self._stats, worker_index=options.worker_index, worker_restarts=options.worker_restarts
        )
        self.admin = AdminState(self.metrics, worker_index=options.worker_index)
        self.introspection = GrpcIntrospection(api_service_names())
        # One admission count and one set of limits for every protocol on both ports.
        context = ServiceContext(
            lambda: self._holder,
            self.metrics,
            Admission(options.max_concurrent_requests),
            ServiceLimits(
                max_attributes=options.max_attributes,
                max_string_length=options.max_string_length,
                max_map_entries=options.max_map_entries,
                max_report_records=options.max_report_records,
                check_timeout=options.check_timeout,
            ),
            logging.getLogger("mixer.api"),
        )
        self.listeners = Listeners(options, self.admin, context, self.introspection)
        self.grpc_address: ListenAddress | None = None
        self.http_address: ListenAddress | None = None
        self.admin_address: ListenAddress | None = None
        self.syslog_address: ListenAddress | None = None
        self._reloader: Reloader | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._trimmer: asyncio.Task[None] | None = None
        self._plugins_started = False
        self.stop_requested = asyncio.Event()
        self._stopped = False

    def _stats(self) -> RuntimeStats | None:
        return self._holder.current.stats if self._holder is not None else None

    @property
    def holder(self) -> RuntimeHolder | None:
        return self._holder

    @property
    def reloader(self) -> Reloader | None:
        return self._reloader

    @property
    def http_guard(self) -> HttpGuard | None:
        return self.listeners.http_guard

    # -- start ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start everything; on failure, stop what was started and raise.

        :raises StartupError: the config is invalid, a handler or plugin failed to start, or a
            listen address could not be bound.
        """
        options = self.options
        listeners = self.listeners
        try:
            listeners.start_tls()
            self.http_address = await listeners.start_http(ListenAddress.parse(options.http_listen))
            self.admin_address = await listeners.start_admin(ListenAddress.parse(options.admin_listen))
            manager = self._plugin_manager or create_plugin_manager()
            self._plugin_manager = manager
            registry = manager.registry()
            await manager.startup(registry)
            self._plugins_started = True

            data_dir = options.data_dir
            if data_dir is not None:
                data_dir.mkdir(parents=True, exist_ok=True)
            source = ConfigSource(options.config_paths)
            fingerprint = await asyncio.to_thread(source.fingerprint)
            try:
                config, info = await asyncio.to_thread(source.load, registry)
            except ConfigError as err:
                log_config_error(logger, "cannot start", err)
                raise StartupError(f"invalid config: {len(err.issues)} error(s)") from err
            try:
                runtime = build_runtime(
                    config,
                    registry,
                    data_dir=data_dir,
                    delivery_ack=options.delivery_ack,
                    check_cache_bytes=options.check_cache_bytes,
                )
                await runtime.start()
            except RuntimeBuildError as err:
                # The message names the handler and what to change; a traceback would bury it.
                raise StartupError(str(err)) from err
            holder = RuntimeHolder(runtime, info)
            self._holder = holder
            self.admin.holder = holder
            self.metrics.loaded(runtime.generation)
            reloader = Reloader(
                source,
                registry,
                holder,
                self.metrics,
                data_dir=data_dir,
                shutdown_timeout=options.shutdown_timeout,
                logger=logging.getLogger("mixer.server.reload"),
                delivery_ack=options.delivery_ack,
            )
            reloader.fingerprint = fingerprint
            self._reloader = reloader

            self.grpc_address = await listeners.start_grpc(ListenAddress.parse(options.grpc_listen))
            if options.syslog_listen is not None:
                self.syslog_address = await listeners.start_syslog(ListenAddress.parse(options.syslog_listen))
        except StartupError:
            await self._stop_started(self.options.shutdown_timeout)
            raise
        except asyncio.CancelledError:
            await self._stop_started(self.options.shutdown_timeout)
            raise
        except Exception as exc:
            logger.exception("cannot start")
            await self._stop_started(self.options.shutdown_timeout)
            raise StartupError(str(exc) or type(exc).__name__) from exc

        if options.worker_index == 0:
            per_process = process_local_handlers(runtime.config, registry)
            if per_process:
                logger.warning(
                    "handlers %s keep their state in each worker's memory: with --workers, each "
                    "worker enforces its own quota (share it through Redis instead)",
                    ", ".join(per_process),
                )
        if options.reload_interval > 0 and not source.embedded:
            self._watcher = asyncio.get_running_loop().create_task(reloader.watch(options.reload_interval))
        # Everything built so far (modules, config, handlers) lives as long as the process: out of
        # the collector's sight, a full collection walks only what requests leave behind.
        gc.collect()
        gc.freeze()
        # A Report call's objects (its bags, instances, records) outnumber the default 700 and
        # are freed by their reference counts when it ends: at 700 the collector ran inside
        # nearly every call, for nothing, 7 % of a fan-out's CPU. Cycles still get collected.
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
        self._trimmer = asyncio.get_running_loop().create_task(trim_heaps_periodically())
        self.admin.phase = Phase.SERVING
        await self.introspection.serving()
        if options.ready_file is not None:
            write_json_atomically(options.ready_file, self.ready_info())
        logger.info(
            "serving %s gRPC on %s, HTTP on %s, admin on %s%s (pid %d, config %s, generation %d)",
            SERVICE_NAME,
            self.grpc_address,
            self.http_address,
            self.admin_address,
            " (TLS)" if self.listeners.tls is not None else "",
            os.getpid(),
            info.source,
            runtime.generation,
        )

    def ready_info(self) -> dict[str, Any]:
        """What the ready file holds: the bound addresses and who is serving."""
        holder = self._holder
        return {
            "pid": os.getpid(),
            "grpc": str(self.grpc_address),
            "http": str(self.http_address),
            "admin": str(self.admin_address),
            **({"syslog": str(self.syslog_address)} if self.syslog_address is not None else {}),
            "worker": self.options.worker_index,
            "generation": holder.current.generation if holder is not None else None,
        }

    # -- stop -----------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Graceful stop within ``options.shutdown_timeout`` seconds. Idempotent."""
        await self._stop_started(self.options.shutdown_timeout)

    async def _stop_started(self, timeout: float) -> None:
        if self._stopped:
            return
        self._stopped = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def left(share: float = 1.0) -> float:
            return max(0.0, (deadline - loop.time()) * share)

        was_serving = self.admin.phase is Phase.SERVING
        self.admin.phase = Phase.DRAINING
        await self.introspection.not_serving()
        if was_serving and self.options.drain_delay > 0:
            # Load balancers and Kubernetes take a while to see /readyz 503 or NOT_SERVING; calls
            # they still send meanwhile are served. The shutdown timeout starts after this.
            logger.info(
                "draining: not ready; still taking calls for %gs (--drain-delay)", self.options.drain_delay
            )
            await asyncio.sleep(self.options.drain_delay)
            deadline = loop.time() + timeout
        listeners = self.listeners
        # First: what the syslog input still holds goes to the runtime before the handlers drain.
        await listeners.stop_syslog()
        ready_file = self.options.ready_file
        if ready_file is not None:
            with contextlib.suppress(FileNotFoundError):
                ready_file.unlink()
        for task in (self._watcher, self._trimmer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await listeners.stop_tls_watcher()
        # New calls are refused at once; grace bounds how long calls in flight may finish.
        await listeners.stop_grpc(left(0.5))
        if self._reloader is not None:
            await self._reloader.close(left(0.25))
        if self._holder is not None:
            runtime: Runtime = self._holder.current
            # HTTP reports yield between slices and hold the runtime: let those in flight finish.
            await self._holder.drained(runtime, left(0.3))
            logger.info("stopping: draining handlers of generation %d", runtime.generation)
            # Keep a slice for the plugins' hooks and closing the HTTP port.
            await runtime.shutdown(left(0.9))
        if self._plugin_manager is not None and self._plugins_started:
            await self._plugin_manager.shutdown(left())
        await listeners.close_http()
        logger.info("stopped")

    # -- run with signals -----------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stop_requested.set()

    async def run(self) -> int:
        """Start, serve until SIGTERM or SIGINT (or the supervisor goes away), stop; the exit code.

        SIGHUP reloads the config. A second SIGTERM or SIGINT exits at once.
        """
        return await run_with_signals(self)


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` so that a reader sees the whole file or none of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (it is optional), else asyncio's default."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_server(options: ServeOptions) -> int:
    """Run one server process until it is told to stop; the process exit code."""
    tune_malloc()
    factory = event_loop_factory()
    logger.debug("event loop: %s", "uvloop" if factory is not None else "asyncio")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(MixerServer(options).run())
