"""The ports of one server process: data HTTP, admin HTTP, gRPC and the syslog input, with TLS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

import grpc
from aiohttp import web

from mixer.api import ListenAddress, ServiceContext, grpc_services, http_routes
from mixer.api.syslog import SyslogReceiver
from mixer.server._http import AdminState, AdminToken, build_admin_app, build_data_app
from mixer.server._httpguard import HttpGuard, HttpLimits
from mixer.server._introspection import GrpcIntrospection
from mixer.server._options import ServeOptions
from mixer.server._tls import ServerTls

logger = logging.getLogger("mixer.server")

_MOVE_GRPC: Final = " (address in use? move it with --grpc-listen or MIXER_GRPC_LISTEN)"


class StartupError(Exception):
    """The server cannot start; the message says why (details were logged)."""


class Listeners:
    """Binds the ports of one process and closes them again, each when the server's order says.

    Each ``start_*`` returns the address bound: a port 0 is replaced by the port the system chose.
    With a worker index, every port is shared with the other workers
    (SO_REUSEPORT), otherwise no other process may share it.
    """

    def __init__(
        self,
        options: ServeOptions,
        admin: AdminState,
        context: ServiceContext,
        introspection: GrpcIntrospection,
    ) -> None:
        self.options = options
        self.admin = admin
        self.context = context
        self.introspection = introspection
        self.tls: ServerTls | None = None
        self._tls_watcher: asyncio.Task[None] | None = None
        self.http_guard: HttpGuard | None = None
        self._http_runner: web.AppRunner | None = None
        self._http_server: asyncio.Server | None = None
        self._admin_runner: web.AppRunner | None = None
        self._grpc_server: Any = None
        self._syslog: SyslogReceiver | None = None

    @property
    def _shared(self) -> bool:
        return self.options.worker_index is not None

    def start_tls(self) -> None:
        """Load the certificates when TLS is configured, and watch them for renewals.

        :raises StartupError: a certificate or key cannot be used.
        """
        settings = self.options.tls_settings
        if settings is None:
            return
        try:
            self.tls = ServerTls(settings)
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        self._tls_watcher = asyncio.get_running_loop().create_task(self.tls.watch())

    async def start_http(self, address: ListenAddress) -> ListenAddress:
        """The data port: the protocols' HTTP routes, probes and ``/metrics``, behind the guard."""
        options = self.options
        app = build_data_app(self.admin, http_routes(self.context), client_max_size=options.max_message_size)
        guard = HttpGuard(
            HttpLimits(
                max_connections=options.http_max_connections,
                header_timeout=options.http_header_timeout,
                body_timeout=options.http_body_timeout,
            ),
            self.context.metrics.registry,
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
                reuse_port=self._shared,
                ssl=self.tls.ssl_context if self.tls is not None else None,
            )
        except OSError as exc:
            raise StartupError(
                f"cannot listen for HTTP on {address}: {exc.strerror or exc} "
                "(move it with --http-listen or MIXER_HTTP_LISTEN)"
            ) from exc
        self._http_server = server
        return address.with_port(int(server.sockets[0].getsockname()[1]))

    async def start_admin(self, address: ListenAddress) -> ListenAddress:
        """The admin port (status page, config, reload), behind its token when one is configured."""
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
        site = web.TCPSite(runner, address.host, address.port, reuse_address=True, reuse_port=self._shared)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen for admin HTTP on {address}: {exc.strerror or exc} "
                "(move it with --admin-listen or MIXER_ADMIN_LISTEN)"
            ) from exc
        return address.with_port(int(runner.addresses[0][1]))

    async def start_grpc(self, address: ListenAddress) -> ListenAddress:
        """The gRPC port with every protocol's service, health and reflection."""
        options = self.options
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", options.max_message_size),
                ("grpc.max_send_message_length", options.max_message_size),
                # grpc turns SO_REUSEPORT on by default, which would let a second server share the
                # port silently; only workers of one supervisor are meant to share it.
                ("grpc.so_reuseport", 1 if self._shared else 0),
            ]
        )
        handlers = grpc_services(self.context)
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
        return address.with_port(port)

    async def start_syslog(self, address: ListenAddress) -> ListenAddress:
        """The nginx access-log input over syslog (UDP)."""
        context = self.context
        receiver = SyslogReceiver(
            context.holder_ref, context.metrics, context.limits, logger=logging.getLogger("mixer.api.syslog")
        )
        self._syslog = receiver
        try:
            bound = await receiver.start(address, reuse_port=self._shared)
        except OSError as exc:
            raise StartupError(
                f"cannot listen for syslog on {address}: {exc.strerror or exc} "
                "(move it with --syslog-listen or MIXER_SYSLOG_LISTEN)"
            ) from exc
        logger.info("receiving nginx access logs over syslog on udp %s", bound)
        return bound

    async def stop_syslog(self) -> None:
        """Close the syslog input and report what it still holds (before the handlers drain)."""
        if self._syslog is not None:
            await self._syslog.stop()

    async def stop_tls_watcher(self) -> None:
        watcher, self._tls_watcher = self._tls_watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def stop_grpc(self, grace: float) -> None:
        """Refuse new calls at once and give those in flight ``grace`` seconds to finish."""
        if self._grpc_server is not None:
            logger.info("stopping: no new calls; finishing calls in flight")
            await self._grpc_server.stop(grace)

    async def close_http(self) -> None:
        """Close both HTTP ports, the last thing a stopping server does."""
        if self._http_server is not None:
            self._http_server.close()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
