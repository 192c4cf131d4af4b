"""How protocol servicers plug into the server: one tuple of modules per transport.

A gRPC protocol module defines ``grpc_service(context) -> grpc.GenericRpcHandler``; an HTTP
protocol module defines ``http_routes(context) -> list[aiohttp.web.RouteDef]``. The server imports
the modules listed in :data:`GRPC_PROTOCOLS` and :data:`HTTP_PROTOCOLS` and registers what they
return on its one gRPC port and its one HTTP port. HTTP routes are built before the first runtime
exists (so that ``/readyz`` can answer while starting): they read the runtime through
:meth:`ServiceContext.runtime_holder` at request time.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from mixer.api._common import Admission, ServiceLimits

if TYPE_CHECKING:
    from mixer.api._holder import RuntimeHolder
    from mixer.api._metrics import ServerMetrics

#: Modules with a ``grpc_service(context)`` function, registered on the gRPC port in this order.
GRPC_PROTOCOLS: Final[tuple[str, ...]] = (
    "mixer.api.mixer_v1",
    "mixer.api.envoy_authz",
    "mixer.api.envoy_ratelimit",
    "mixer.api.envoy_accesslog",
)
#: Modules with an ``http_routes(context)`` function, added to the HTTP port.
HTTP_PROTOCOLS: Final[tuple[str, ...]] = ("mixer.api.http_check",)


@dataclass(frozen=True)
class ServiceContext:
    """What every servicer shares: the runtime, the server's metrics, admission and limits."""

    holder_ref: Callable[[], RuntimeHolder | None]
    metrics: ServerMetrics
    admission: Admission
    limits: ServiceLimits
    logger: logging.Logger

    def runtime_holder(self) -> RuntimeHolder | None:
        """The holder of the current runtime; None until the first config has loaded."""
        return self.holder_ref()


def grpc_services(context: ServiceContext, modules: tuple[str, ...] = GRPC_PROTOCOLS) -> list[Any]:
    """The generic RPC handlers of every gRPC protocol module."""
    return [importlib.import_module(name).grpc_service(context) for name in modules]


def http_routes(context: ServiceContext, modules: tuple[str, ...] = HTTP_PROTOCOLS) -> list[Any]:
    """The routes of every HTTP protocol module."""
    routes: list[Any] = []
    for name in modules:
        routes.extend(importlib.import_module(name).http_routes(context))
    return routes
