"""The standard gRPC services beside ours: health checking (grpc.health.v1) and server reflection.

Health answers for the whole server (service ``""``) and for each API service by its full name;
every one is SERVING once the server serves and NOT_SERVING from the moment it starts draining.
Reflection lets ``grpcurl`` and other tools list the services and fetch their descriptors without
``.proto`` files.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Final

from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mixer.api import GRPC_PROTOCOLS

#: Modules whose import puts each API service's descriptor in protobuf's default pool, which
#: reflection serves. istio.mixer.v1 arrives as raw bytes, so nothing else imports its service.
_DESCRIPTOR_MODULES: Final = (
    "mixer.proto.istio.mixer.v1.service_pb2",
    "mixer.proto.envoy.service.auth.v3.external_auth_pb2",
    "mixer.proto.envoy.service.ratelimit.v3.rls_pb2",
    "mixer.proto.envoy.service.accesslog.v3.als_pb2",
)

HEALTH_SERVICE_NAME: Final = "grpc.health.v1.Health"


def api_service_names(modules: Sequence[str] = GRPC_PROTOCOLS) -> tuple[str, ...]:
    """The full names of the API services the server registers (each module's ``SERVICE_NAME``)."""
    return tuple(str(importlib.import_module(name).SERVICE_NAME) for name in modules)


class GrpcIntrospection:
    """The health servicer and reflection for one gRPC server."""

    def __init__(self, services: Sequence[str]) -> None:
        self.services = tuple(services)
        self._health = health.aio.HealthServicer()

    async def register(self, server: Any) -> None:
        """Add health and reflection to ``server`` (a ``grpc.aio.Server`` not started yet); every
        service NOT_SERVING until :meth:`serving`."""
        for name in ("", *self.services):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in _DESCRIPTOR_MODULES:
            importlib.import_module(name)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*self.services, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
        )

    async def serving(self) -> None:
        for name in ("", *self.services):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def not_serving(self) -> None:
        """NOT_SERVING for every service, for good (a draining server does not come back)."""
        await self._health.enter_graceful_shutdown()
