"""The protocols proxies speak to the server, one servicer module per protocol.

Each servicer only translates: wire bytes to an :class:`~mixer.attributes.AttributeBag` through
the codec, the runtime's outcome back to wire bytes, failures to status codes (all mapped in
``mixer.api._status``). Policy and telemetry logic never knows which protocol a request came in on.

- :mod:`mixer.api.mixer_v1`: istio.mixer.v1 ``Mixer`` (Check, Report) over gRPC.

Protocols plug in through :mod:`mixer.api._registry` (one tuple of modules per transport).
Servicers share one :class:`Admission` (the process-wide limit on requests in flight) and one
:class:`ServiceLimits` (decoding bounds and the Check time budget). What they need of the server
lives here too, so that this layer never imports :mod:`mixer.server`: the :class:`RuntimeHolder`
they lease runtimes from, the :class:`ServerMetrics` they count in, and :class:`ListenAddress`.
"""

from __future__ import annotations

from mixer.api._address import ListenAddress
from mixer.api._common import Admission, ServiceLimits
from mixer.api._holder import ConfigInfo, RuntimeHolder
from mixer.api._metrics import LATENCY_BUCKETS, MethodMetrics, RuntimeStatsCollector, ServerMetrics
from mixer.api._registry import GRPC_PROTOCOLS, HTTP_PROTOCOLS, ServiceContext, grpc_services, http_routes
from mixer.api._status import decode_failure, grpc_code

__all__ = [
    "GRPC_PROTOCOLS",
    "HTTP_PROTOCOLS",
    "LATENCY_BUCKETS",
    "Admission",
    "ConfigInfo",
    "ListenAddress",
    "MethodMetrics",
    "RuntimeHolder",
    "RuntimeStatsCollector",
    "ServerMetrics",
    "ServiceContext",
    "ServiceLimits",
    "decode_failure",
    "grpc_code",
    "grpc_services",
    "http_routes",
]
