"""One server process: lifecycle, signals, and the two listeners on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import grpc
from aiohttp import web

from mixer.api import Admission, ServiceContext, ServiceLimits, grpc_services, http_routes
from mixer.api.mixer_v1 import SERVICE_NAME
from mixer.api.syslog import SyslogReceiver
from mixer.config import ConfigError
from mixer.runtime import Runtime, RuntimeBuildError, RuntimeStats, build_runtime
from mixer.server._holder import RuntimeHolder
from mixer.server._http import AdminState, AdminToken, Phase, build_admin_app, build_data_app
from mixer.server._httpguard import HttpGuard, HttpLimits
from mixer.server._introspection import GrpcIntrospection, api_service_names
from mixer.server._metrics import ServerMetrics
from mixer.server._net import ListenAddress
from mixer.server._options import ServeOptions
from mixer.server._reload import ConfigSource, Reloader, log_config_error
from mixer.server._tls import ServerTls
from plugins.manager import MixerPluginManager, create_plugin_manager

logger = logging.getLogger("mixer.server")

#: Exit codes: 0 after a graceful stop, 1 when the server could not start or a second signal cut
#: the shutdown short (130 when that signal was SIGINT, as shells report a Ctrl-C).
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_INTERRUPTED: Final = 130

#: How often a worker checks that its supervisor is still there.
_PARENT_POLL_SECONDS: Final = 1.0
#: Adapters that keep their state in process memory: with several workers each has its own.
_PER_PROCESS_STATE_ADAPTERS: Final = frozenset({"memquota"})
_MOVE_GRPC: Final = " (address in use? move it with --grpc-listen or MIXER_GRPC_LISTEN)"


class StartupError(Exception):
    """The server cannot start; the message says why (details were logged)."""


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
        # One admission count and one set of limits for every protocol on both ports.
        self._admission = Admission(options.max_concurrent_requests)
        self._limits = ServiceLimits(
            max_attributes=options.max_attributes,
            max_string_length=options.max_string_length,
            max_map_entries=options.max_map_entries,
            max_report_records=options.max_report_records,
            check_timeout=options.check_timeout,
        )
        self.grpc_address: ListenAddress | None = None
        self.http_address: ListenAddress | None = None
        self.admin_address: ListenAddress | None = None
        self._admin_runner: web.AppRunner | None = None
        self.syslog_address: ListenAddress | None = None
        self._syslog: SyslogReceiver | None = None
        self._grpc_server: Any = None
        self.introspection = GrpcIntrospection(api_service_names())
        self._http_runner: web.AppRunner | None = None
        self._http_server: asyncio.Server | None = None
        self.http_guard: HttpGuard | None = None
        self._reloader: Reloader | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._plugins_started = False
        self._stop_requested = asyncio.Event()
        self._stopped = False
        self.tls: ServerTls | None = None
        self._tls_watcher: asyncio.Task[None] | None = None

    def _stats(self) -> RuntimeStats | None:
        return self._holder.current.stats if self._holder is not None else None

    @property
    def holder(self) -> RuntimeHolder | None:
        return self._holder

    @property
    def reloader(self) -> Reloader | None:
        return self._reloader

    # -- start ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start everything; on failure, stop what was started and raise.

        :raises StartupError: the config is invalid, a handler or plugin failed to start, or a
            listen address could not be bound.
        """
        options = self.options
        try:
            settings = options.tls_settings
            if settings is not None:
                try:
                    self.tls = ServerTls(settings)
                except ValueError as exc:
                    raise StartupError(str(exc)) from exc
                self._tls_watcher = asyncio.get_running_loop().create_task(self.tls.watch())
            await self._start_http(ListenAddress.parse(options.http_listen))
            await self._start_admin(ListenAddress.parse(options.admin_listen))
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

            await self._start_grpc(ListenAddress.parse(options.grpc_listen), holder)
            if options.syslog_listen is not None:
                await self._start_syslog(ListenAddress.parse(options.syslog_listen))
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
            per_process = sorted(
                name
                for name, handler in runtime.config.handlers.items()
                if handler.adapter in _PER_PROCESS_STATE_ADAPTERS
            )
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
            " (TLS)" if self.tls is not None else "",
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

    async def _start_http(self, address: ListenAddress) -> None:
        routes = http_routes(self._service_context())
        app = build_data_app(self.admin, routes, client_max_size=self.options.max_message_size)
        options = self.options
        guard = HttpGuard(
            HttpLimits(
                max_connections=options.http_max_connections,
                header_timeout=options.http_header_timeout,
                body_timeout=options.http_body_timeout,
            ),
            self.metrics.registry,
        )
        self.http_guard = guard
        app.middlewares.append(guard.middleware)
        if self.tls is not None:
            app.middlewares.append(self.tls.http_middleware())
        runner = web.AppRunner(app, access_log=None, handle_signals=False, logger=guard.protocol_log)
        await runner.setup()
        self._http_runner = runner
        # aiohttp's protocol behind the guard's (no TCPSite: it would listen with aiohttp's alone).
        protocols = runner.server
        if protocols is None:
            raise StartupError("the HTTP server did not set up")
        try:
            server = await asyncio.get_running_loop().create_server(
                guard.factory(protocols),
                address.host,
                address.port,
                reuse_address=True,
                reuse_port=options.worker_index is not None,
                ssl=self.tls.ssl_context if self.tls is not None else None,
            )
        except OSError as exc:
            raise StartupError(
                f"cannot listen for HTTP on {address}: {exc.strerror or exc} "
                "(move it with --http-listen or MIXER_HTTP_LISTEN)"
            ) from exc
        self._http_server = server
        self.http_address = address.with_port(int(server.sockets[0].getsockname()[1]))

    async def _start_admin(self, address: ListenAddress) -> None:
        options = self.options
        try:
            token = AdminToken(options.admin_token_file) if options.admin_token_file is not None else None
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        runner = web.AppRunner(
            build_admin_app(self.admin, token=token), access_log=None, handle_signals=False
        )
        await runner.setup()
        self._admin_runner = runner
        site = web.TCPSite(
            runner,
            address.host,
            address.port,
            reuse_address=True,
            reuse_port=options.worker_index is not None,
        )
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen for admin HTTP on {address}: {exc.strerror or exc} "
                "(move it with --admin-listen or MIXER_ADMIN_LISTEN)"
            ) from exc
        self.admin_address = address.with_port(int(runner.addresses[0][1]))

    def _service_context(self) -> ServiceContext:
        return ServiceContext(
            lambda: self._holder,
            self.metrics,
            self._admission,
            self._limits,
            logging.getLogger("mixer.api"),
        )

    async def _start_syslog(self, address: ListenAddress) -> None:
        receiver = SyslogReceiver(
            lambda: self._holder, self.metrics, self._limits, logger=logging.getLogger("mixer.api.syslog")
        )
        self._syslog = receiver
        try:
            self.syslog_address = await receiver.start(
                address, reuse_port=self.options.worker_index is not None
            )
        except OSError as exc:
            raise StartupError(
                f"cannot listen for syslog on {address}: {exc.strerror or exc} "
                "(move it with --syslog-listen or MIXER_SYSLOG_LISTEN)"
            ) from exc
        logger.info("receiving nginx access logs over syslog on udp %s", self.syslog_address)

    async def _start_grpc(self, address: ListenAddress, holder: RuntimeHolder) -> None:
        options = self.options
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", options.max_message_size),
                ("grpc.max_send_message_length", options.max_message_size),
                # grpc turns SO_REUSEPORT on by default, which would let a second server share the
                # port silently; only workers of one supervisor are meant to share it.
                ("grpc.so_reuseport", 1 if options.worker_index is not None else 0),
            ]
        )
        handlers = grpc_services(self._service_context())
        if self.tls is not None:
            handlers = self.tls.grpc_handlers(handlers)
        server.add_generic_rpc_handlers(tuple(handlers))
        await self.introspection.register(server)
        self._grpc_server = server
        try:
            if self.tls is not None:
                port = server.add_secure_port(str(address), self.tls.grpc_credentials())
            else:
                port = server.add_insecure_port(str(address))
        except RuntimeError as exc:
            raise StartupError(f"cannot listen for gRPC on {address}: {exc}{_MOVE_GRPC}") from exc
        if not port:
            raise StartupError(f"cannot listen for gRPC on {address}{_MOVE_GRPC}")
        await server.start()
        self.grpc_address = address.with_port(port)

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
        if self._syslog is not None:
            # First: what it still holds goes to the runtime before the handlers drain.
            await self._syslog.stop()
        ready_file = self.options.ready_file
        if ready_file is not None:
            with contextlib.suppress(FileNotFoundError):
                ready_file.unlink()
        for watcher in (self._watcher, self._tls_watcher):
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        if self._grpc_server is not None:
            logger.info("stopping: no new calls; finishing calls in flight")
            # New calls are refused at once; grace bounds how long calls in flight may finish.
            await self._grpc_server.stop(left(0.5))
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
        if self._http_server is not None:
            self._http_server.close()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
        logger.info("stopped")

    # -- run with signals -----------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def run(self) -> int:
        """Start, serve until SIGTERM or SIGINT (or the supervisor goes away), stop; the exit code.

        SIGHUP reloads the config. A second SIGTERM or SIGINT exits at once.
        """
        loop = asyncio.get_running_loop()
        signals_seen: list[int] = []

        def on_stop_signal(signum: int) -> None:
            if signals_seen:
                logger.warning(
                    "second %s: exiting without finishing the shutdown", signal.Signals(signum).name
                )
                os._exit(EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_FAILURE)
            signals_seen.append(signum)
            logger.info("%s: shutting down (send it again to exit at once)", signal.Signals(signum).name)
            self._stop_requested.set()

        def on_hangup() -> None:
            if self._reloader is None:
                logger.warning("SIGHUP before the config was loaded: ignored")
                return
            self._reloader.request("SIGHUP")

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        watch_parent = None
        if self.options.parent_pid is not None:
            watch_parent = loop.create_task(self._watch_parent(self.options.parent_pid))
        try:
            started = await _first(self.start(), self._stop_requested.wait())
            if not started:
                logger.info("stop requested while starting")
            else:
                await self._stop_requested.wait()
            await self.stop()
            return EXIT_OK
        except StartupError as exc:
            logger.error("cannot start: %s", exc)
            return EXIT_FAILURE
        finally:
            if watch_parent is not None:
                watch_parent.cancel()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    async def _watch_parent(self, parent_pid: int) -> None:
        # A worker runs in its own session (a terminal's Ctrl-C goes to the supervisor alone), so
        # nothing else would stop it if the supervisor were killed outright.
        while True:
            await asyncio.sleep(_PARENT_POLL_SECONDS)
            if os.getppid() != parent_pid:
                logger.warning("supervisor (pid %d) is gone: shutting down", parent_pid)
                self._stop_requested.set()
                return


async def _first(start: Coroutine[Any, Any, None], stop: Coroutine[Any, Any, Any]) -> bool:
    """Run ``start`` unless ``stop`` finishes first (then cancel it); whether ``start`` completed."""
    start_task = asyncio.ensure_future(start)
    stop_task = asyncio.ensure_future(stop)
    try:
        await asyncio.wait((start_task, stop_task), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_task.cancel()
    if start_task.done():
        start_task.result()
        return True
    start_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await start_task
    return False


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
    factory = event_loop_factory()
    logger.debug("event loop: %s", "uvloop" if factory is not None else "asyncio")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(MixerServer(options).run())
