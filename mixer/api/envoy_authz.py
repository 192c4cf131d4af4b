"""Envoy's external authorization API (``envoy.service.auth.v3.Authorization/Check``) over gRPC.

Envoy's ext_authz HTTP filter asks before every request. The request's attribute context becomes
an attribute bag (:func:`check_attributes`, the table in docs/envoy.md), the runtime decides
exactly as for an istio.mixer.v1 Check (plan checks included), and the outcome becomes a
CheckResponse (:func:`build_check_response`):

- OK: status OK; ``ok_response`` with the outcome's request header operations as headers to set
  (``x-mixer-plan``, ``x-mixer-subject``, operators' own), REMOVE operations as
  ``headers_to_remove``, and its response header operations (the RateLimit headers) as
  ``response_headers_to_add``; ``dynamic_metadata`` ``{"plan", "subject"}`` (and ``"overage"``)
  for the filters and access logs after ext_authz.
- Denied: the runtime's code with a short message, ``denied_response`` with the HTTP status a
  proxy gives that code (:func:`mixer.status.http_status`: 401, 403, 429, 503, ...), the
  ``Retry-After``, ``RateLimit-Policy`` and ``RateLimit`` headers, and the handler's reason as the
  body. A denial caused by rate limits also carries ``google.rpc.RetryInfo`` and
  ``google.rpc.QuotaFailure`` status details (Envoy ignores them; gRPC-aware clients may not).

Like the istio.mixer.v1 service, a call that cannot be decided ends with a gRPC status instead:
INVALID_ARGUMENT (malformed or over a decoding limit), UNAVAILABLE (too many requests in flight),
DEADLINE_EXCEEDED (the caller gave up), INTERNAL (unexpected, logged). Envoy then applies its
``failure_mode_allow``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

import grpc
from google.protobuf.any_pb2 import Any as AnyProto

from mixer.api._common import Admission, ServiceLimits
from mixer.api._details import rate_limit_details
from mixer.api._envelope import Lease
from mixer.api._envoy import check_limits, header_options, parse, set_endpoint, utc_datetime
from mixer.api._grpc import GrpcServicer, deadline_failure, expired, time_budget
from mixer.attributes import AttributeBag, AttributeValue
from mixer.decision import CheckOutcome, HeaderOperationKind
from mixer.plans import OVERAGE_HEADER, PLAN_HEADER, SUBJECT_HEADER
from mixer.proto.envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from mixer.proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from mixer.status import Code, http_status

if TYPE_CHECKING:
    from mixer.api._holder import RuntimeHolder
    from mixer.api._metrics import ServerMetrics
    from mixer.api._registry import ServiceContext

__all__ = [
    "API",
    "CHECK_METHOD",
    "CONTEXT_EXTENSION_ATTRIBUTES",
    "SERVICE_NAME",
    "ApiKeySources",
    "EnvoyAuthorizationService",
    "build_check_response",
    "check_attributes",
    "grpc_service",
]

SERVICE_NAME: Final = "envoy.service.auth.v3.Authorization"
CHECK_METHOD: Final = f"/{SERVICE_NAME}/Check"
#: The ``api`` label of this service's metrics.
API: Final = "envoy_authz"

#: Context extension keys (set per route in Envoy) that become Istio API attributes.
CONTEXT_EXTENSION_ATTRIBUTES: Final[Mapping[str, str]] = {
    "api": "api.service",
    "api.service": "api.service",
    "api.version": "api.version",
    "operation": "api.operation",
    "api.operation": "api.operation",
    "api.protocol": "api.protocol",
}
#: Every context extension, as one STRING_MAP (declare it in an attributemanifest to use it).
CONTEXT_EXTENSIONS: Final = "context.extensions"

#: Dynamic metadata keys and the plan headers they are taken from.
_METADATA_FROM_HEADERS: Final = (
    ("plan", PLAN_HEADER),
    ("subject", SUBJECT_HEADER),
    ("overage", OVERAGE_HEADER),
)
_REASONS: Final[Mapping[Code, str]] = {
    Code.RESOURCE_EXHAUSTED: "quota exceeded",
    Code.UNAUTHENTICATED: "unauthenticated",
    Code.PERMISSION_DENIED: "permission denied",
}
_RETRY_AFTER: Final = "retry-after"


@dataclass(frozen=True, slots=True)
class ApiKeySources:
    """Where ``request.api_key`` is looked for, first found wins: request headers (lower-case
    names), then query parameters. The default is the Istio proxy's."""

    headers: tuple[str, ...] = ("x-api-key",)
    query_params: tuple[str, ...] = ("key", "api_key")


DEFAULT_API_KEY_SOURCES: Final = ApiKeySources()


def check_attributes(
    request: CheckRequest,
    *,
    api_keys: ApiKeySources = DEFAULT_API_KEY_SOURCES,
    limits: ServiceLimits | None = None,
) -> dict[str, AttributeValue]:
    """The attributes of an ext_authz CheckRequest (docs/envoy.md has the table).

    :raises EnvoyRequestError: the attributes exceed ``limits``, or the request time is out of range.
    """
    attrs: dict[str, AttributeValue] = {}
    ctx = request.attributes
    _peer(attrs, "source", ctx.source)
    _peer(attrs, "destination", ctx.destination)
    if ctx.source.principal or ctx.source.certificate:
        # Envoy names a downstream peer only when it presented a certificate.
        attrs["connection.mtls"] = True
    if ctx.tls_session.sni:
        attrs["connection.requested_server_name"] = ctx.tls_session.sni

    if ctx.request.HasField("time"):
        attrs["request.time"] = utc_datetime(ctx.request.time)
    http = ctx.request.http
    headers = _headers(http)
    if headers:
        attrs["request.headers"] = headers
    if http.method:
        attrs["request.method"] = http.method
    if http.host:
        attrs["request.host"] = http.host
    if http.scheme:
        attrs["request.scheme"] = http.scheme
    query = http.query
    if http.path:
        attrs["request.path"] = http.path
        url_path, _, path_query = http.path.partition("?")
        attrs["request.url_path"] = url_path
        query = query or path_query
    params: dict[str, str] = {}
    if query:
        for key, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(key, value)
        attrs["request.query_params"] = params
    request_id = headers.get("x-request-id") or http.id
    if request_id:
        attrs["request.id"] = request_id
    if http.size >= 0:
        attrs["request.size"] = http.size
    for attribute, header in (("request.useragent", "user-agent"), ("request.referer", "referer")):
        if headers.get(header):
            attrs[attribute] = headers[header]
    api_key = _api_key(headers, params, api_keys)
    if api_key:
        attrs["request.api_key"] = api_key
    content_type = headers.get("content-type", "")
    attrs["context.protocol"] = "grpc" if content_type.startswith("application/grpc") else "http"
    # ext_authz runs in the proxy in front of the service it protects.
    attrs["context.reporter.kind"] = "inbound"

    extensions = dict(ctx.context_extensions)
    if extensions:
        attrs[CONTEXT_EXTENSIONS] = extensions
        for key, attribute in CONTEXT_EXTENSION_ATTRIBUTES.items():
            if extensions.get(key):
                attrs[attribute] = extensions[key]
    check_limits(attrs, limits or ServiceLimits(), "CheckRequest")
    return attrs


def _peer(attrs: dict[str, AttributeValue], side: str, peer: AttributeContext.Peer) -> None:
    if peer.HasField("address"):
        set_endpoint(attrs, side, peer.address)
    if peer.principal:
        attrs[f"{side}.principal"] = peer.principal
    if peer.labels:
        attrs[f"{side}.labels"] = dict(peer.labels)


def _headers(http: AttributeContext.HttpRequest) -> dict[str, str]:
    if http.headers:
        return dict(http.headers)
    # With encode_raw_headers Envoy sends every header line instead; join repeats as it would.
    headers: dict[str, str] = {}
    for header in http.header_map.headers:
        key = header.key.lower()
        value = header.value or header.raw_value.decode("utf-8", "replace")
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


def _api_key(headers: Mapping[str, str], params: Mapping[str, str], sources: ApiKeySources) -> str:
    for header in sources.headers:
        value = headers.get(header)
        if value:
            return value
    for param in sources.query_params:
        value = params.get(param)
        if value:
            return value
    return ""


def build_check_response(outcome: CheckOutcome, *, details: Sequence[AnyProto] = ()) -> CheckResponse:
    """The ext_authz CheckResponse for a Check's outcome; ``details`` go into a denial's status."""
    response = CheckResponse()
    status = outcome.status
    if status.ok:
        response.status.SetInParent()
        ok = response.ok_response
        ok.SetInParent()
        ok.headers.extend(header_options(outcome.request_header_operations))
        ok.headers_to_remove.extend(
            op.name.lower()
            for op in outcome.request_header_operations
            if op.operation is HeaderOperationKind.REMOVE
        )
        ok.response_headers_to_add.extend(header_options(outcome.response_header_operations))
        metadata = {
            key: outcome.headers[header]
            for key, header in _METADATA_FROM_HEADERS
            if header in outcome.headers
        }
        if metadata:
            response.dynamic_metadata.update(metadata)
        return response

    reason = _REASONS.get(status.code) or status.code.name.lower().replace("_", " ")
    response.status.code = int(status.code)
    response.status.message = reason
    response.status.details.extend(details)
    denied = response.denied_response
    denied.status.code = http_status(status.code)  # type: ignore[assignment]
    options = header_options(outcome.response_header_operations)
    # Retry-After first: the one rate-limit header every HTTP client knows.
    options.sort(key=lambda option: option.header.key != _RETRY_AFTER)
    denied.headers.extend(options)
    denied.body = status.message or reason
    return response


class EnvoyAuthorizationService(GrpcServicer):
    """ext_authz Check for one server process; :meth:`rpc_handler` registers it with grpc.aio."""

    api = API
    methods = ("Check",)
    title = "ext_authz service"

    def __init__(
        self,
        holder: RuntimeHolder,
        metrics: ServerMetrics,
        admission: Admission,
        limits: ServiceLimits,
        *,
        api_keys: ApiKeySources = DEFAULT_API_KEY_SOURCES,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(holder, metrics, admission, limits, logger=logger)
        self._api_keys = api_keys

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        # No (de)serializers: the request is parsed once, inside the call's error handling.
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME, {"Check": grpc.unary_unary_rpc_method_handler(self.check)}
        )

    async def check(self, request: bytes, context: Any) -> bytes:
        return await self._calls.run(self._methods["Check"], "ext_authz Check", context, self._check, request)

    async def _check(self, lease: Lease, context: Any, request: bytes) -> bytes:
        runtime = lease.runtime()
        message: CheckRequest = parse(CheckRequest, request)
        attrs = check_attributes(message, api_keys=self._api_keys, limits=self._limits)
        timeout = time_budget(self._limits, context)
        if timeout <= 0:
            raise deadline_failure()
        # Envoy's stream id is the same when ext_authz retries a call and is not the client's
        # to choose (x-request-id is), so a retried call does not spend a plan twice.
        stream_id = message.attributes.request.http.id
        dedup = f"envoy-authz/{stream_id}" if stream_id else uuid.uuid4().hex
        outcome = await runtime.check(AttributeBag(attrs), deduplication_id=dedup, timeout=timeout)
        if outcome.status.code is Code.DEADLINE_EXCEEDED and expired(context):
            raise deadline_failure()
        answer: bytes = build_check_response(outcome, details=rate_limit_details(outcome)).SerializeToString()
        return answer


def grpc_service(context: ServiceContext) -> grpc.GenericRpcHandler:
    """The ext_authz service for a server (see :mod:`mixer.api._registry`)."""
    return EnvoyAuthorizationService.service(context)
