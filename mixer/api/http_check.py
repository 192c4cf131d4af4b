"""Check and Report over plain HTTP: nginx ``auth_request`` and JSON clients.

Three routes on the server's HTTP port (see docs/quotas.md, "nginx"):

``/v1/auth`` (any method)
    For nginx ``auth_request``. The attributes come from the subrequest's headers (see
    :func:`auth_attributes`); the answer is the Check's decision as an HTTP status, the way a proxy
    maps it (:func:`mixer.status.http_status`): 200 lets the request through, 401/403 deny it, 429
    for an exhausted plan or quota, 503 when unavailable. Every answer carries ``X-Mixer-Code``
    (the status code's name) and the Check's response header operations (``RateLimit-Policy``,
    ``RateLimit``, ``Retry-After``); an allowed one also carries the request header operations
    (``x-mixer-plan``, ``x-mixer-subject``) for nginx to copy with ``auth_request_set``. REMOVE
    operations cannot be expressed this way and are left out, as are header names the HTTP layer
    owns (``Content-Length``, ``Connection``, ...). The body is a small JSON status that nginx
    ignores.

``POST /v1/check``
    Body ``{"attributes": {...}, "quotas": {"name": {"amount": 1, "best_effort": false}},
    "deduplication_id": "..."}``; attribute values are converted by the runtime's attribute
    manifest (:mod:`mixer.api._json_attributes`). An answered Check is HTTP 200 whatever it decided:
    the decision is in the body, shaped as ``mixer check`` prints it (status, validity, referenced
    attributes, route directive, quotas) plus ``http_status``, ``headers`` and ``rate_limits``.

``POST /v1/report``
    Body ``{"records": [{...attributes...}, ...]}``; 202 ``{"status": "OK", "records": N}`` once
    every record is in its handlers' queues, else the runtime's failure (503 for an overloaded
    handler, 500 with the reasons for failed instances or handlers).

Failures, as JSON ``{"error": {"code", "code_number", "message"}}``: 400 (INVALID_ARGUMENT) for
malformed input (bad JSON, wrong shapes, attributes the manifest does not declare, values over the
decoding limits), 413 (RESOURCE_EXHAUSTED) for a body over ``--max-message-size``, 431 for more
headers than ``--max-map-entries``, 503 (UNAVAILABLE) when the process already has
``--max-concurrent-requests`` calls in flight or no config has loaded yet, 500 (INTERNAL) for anything
unexpected, logged with its traceback. Metrics: ``mixer_requests_total{api="http", method="Auth" |
"Check" | "Report", code}``, where an answered Check is ``OK`` whatever it decided, as for gRPC.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from multidict import CIMultiDict

from mixer.api._envelope import CallFailure, Envelope, Faults, Lease
from mixer.api._http_bodies import (
    HttpRefusal,
    decode_json,
    decode_report_body,
    malformed,
    parse_check_body,
    parse_report_body,
)
from mixer.api._json_attributes import AttributeConversionError, check_limits
from mixer.attributes import AttributeBag, AttributeValue, IPAddress, parse_ip
from mixer.client import CheckAnswer, RouteDirectiveAnswer
from mixer.decision import CheckOutcome, HeaderOperationKind, HeaderOperationResult
from mixer.status import Code, http_status

if TYPE_CHECKING:
    from mixer.api._common import Admission, ServiceLimits
    from mixer.api._holder import RuntimeHolder
    from mixer.api._metrics import ServerMetrics
    from mixer.api._registry import ServiceContext

__all__ = [
    "API",
    "AUTH_PATH",
    "CHECK_PATH",
    "REPORT_PATH",
    "HttpCheckService",
    "HttpFaults",
    "HttpRefusal",
    "auth_attributes",
    "auth_response_headers",
    "check_answer_json",
    "decode_report_body",
    "http_routes",
    "parse_check_body",
    "parse_report_body",
]

#: The name a fuzz target and older callers import the body decoder by.
_decode_json = decode_json

#: The ``api`` label of these endpoints' metrics.
API: Final = "http"
AUTH_PATH: Final = "/v1/auth"
CHECK_PATH: Final = "/v1/check"
REPORT_PATH: Final = "/v1/report"

#: Headers the HTTP layer or this endpoint sets itself; a header operation never overrides them.
_RESERVED_HEADERS: Final = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "date",
        "keep-alive",
        "proxy-connection",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "x-mixer-code",
    }
)
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE: Final = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")


# -- attributes of an auth_request subrequest ---------------------------------------------------


def auth_attributes(
    headers: Mapping[str, str],
    method: str,
    peer: str | None,
    limits: ServiceLimits,
    *,
    now: datetime | None = None,
) -> dict[str, AttributeValue]:
    """The attributes of the request an nginx ``auth_request`` subrequest stands for.

    ``headers`` are the subrequest's (a multi-mapping: repeated names are joined with ``", "`` in
    ``request.headers``), ``method`` and ``peer`` the subrequest's own method and peer address.

    - ``X-Original-URI`` (nginx ``$request_uri``): ``request.path``; without its query
      ``request.url_path``; its query ``request.query_params`` (first value of a repeated name).
    - ``X-Original-Method`` (``$request_method``), else ``method``: ``request.method``.
    - ``Host``: ``request.host``; ``User-Agent``, ``Referer``, ``X-Request-ID``,
      ``X-Forwarded-Proto``: ``request.useragent``, ``.referer``, ``.id``, ``.scheme``.
    - every header, names lower-cased: ``request.headers``.
    - ``X-API-Key``, else the ``api_key`` query parameter of the original URI: ``request.api_key``.
    - ``source.ip``: ``X-Real-IP``, else the last address of ``X-Forwarded-For`` (the one the
      nearest proxy added; earlier ones are whatever the client sent), else ``peer``. Only a proxy
      that overwrites these headers (``proxy_set_header X-Real-IP $remote_addr``) may be trusted.
    - ``context.protocol`` ``"http"``; ``request.time`` now.

    :raises HttpRefusal: 431 for more headers than ``limits.max_map_entries``; 400 for an address
        that does not parse, a query with too many parameters, or a value over a decoding limit.
    """
    if len(headers) > limits.max_map_entries:
        raise HttpRefusal(
            431,
            Code.INVALID_ARGUMENT,
            f"{len(headers)} headers is over the limit of {limits.max_map_entries}",
            decode_error=True,
        )
    header_map: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        previous = header_map.get(key)
        header_map[key] = value if previous is None else f"{previous}, {value}"
    values: dict[str, AttributeValue] = {
        "context.protocol": "http",
        "request.time": now if now is not None else datetime.now(UTC),
        "request.headers": header_map,
    }
    query_params: dict[str, str] = {}
    original_uri = header_map.get("x-original-uri")
    if original_uri:
        values["request.path"] = original_uri
        before_fragment = original_uri.partition("#")[0]
        path, _, query = before_fragment.partition("?")
        values["request.url_path"] = path
        if query:
            try:
                pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=limits.max_map_entries)
            except ValueError:
                malformed(f"X-Original-URI: more than {limits.max_map_entries} query parameters")
            for key, value in pairs:
                query_params.setdefault(key, value)
            values["request.query_params"] = query_params
    values["request.method"] = header_map.get("x-original-method") or method
    for header, attribute in (
        ("host", "request.host"),
        ("user-agent", "request.useragent"),
        ("referer", "request.referer"),
        ("x-request-id", "request.id"),
        ("x-forwarded-proto", "request.scheme"),
    ):
        found = header_map.get(header)
        if found:
            values[attribute] = found
    api_key = header_map.get("x-api-key") or query_params.get("api_key")
    if api_key:
        values["request.api_key"] = api_key
    source = _source_ip(header_map, peer)
    if source is not None:
        values["source.ip"] = source
    try:
        check_limits(values, limits, where="request")
    except AttributeConversionError as exc:
        malformed(str(exc))
    return values


def _source_ip(header_map: Mapping[str, str], peer: str | None) -> IPAddress | None:
    real_ip = header_map.get("x-real-ip")
    if real_ip:
        return _parse_ip("X-Real-IP", real_ip.strip())
    forwarded = header_map.get("x-forwarded-for")
    if forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return _parse_ip("X-Forwarded-For", hops[-1])
    if peer:
        try:
            return parse_ip(peer)
        except ValueError:
            # A Unix socket peer has no IP address; the attribute is simply absent.
            return None
    return None


def _parse_ip(header: str, text: str) -> IPAddress:
    try:
        return parse_ip(text)
    except ValueError:
        malformed(f"{header}: {text[:64]!r} is not an IP address")


def auth_response_headers(outcome: CheckOutcome) -> CIMultiDict[str]:
    """The headers of a ``/v1/auth`` answer: ``X-Mixer-Code``, ``Cache-Control: no-store``, then the
    Check's header operations (request ones only when it allowed the request): REPLACE sets, APPEND
    adds; REMOVE, names the HTTP layer owns and values with control characters are left out."""
    headers: CIMultiDict[str] = CIMultiDict()
    headers["X-Mixer-Code"] = outcome.status.code.name
    headers["Cache-Control"] = "no-store"
    ops = list(outcome.response_header_operations)
    if outcome.status.ok:
        # Meant for the upstream request, which exists only when the Check allowed it.
        ops[:0] = outcome.request_header_operations
    for op in ops:
        _apply(headers, op)
    return headers


def _apply(headers: CIMultiDict[str], op: HeaderOperationResult) -> None:
    name = op.name
    if op.operation is HeaderOperationKind.REMOVE or name.lower() in _RESERVED_HEADERS:
        return
    if not _TOKEN.fullmatch(name):
        return
    value = op.value
    # isprintable() is False for every control character, so the regex runs only on a value
    # that has one (a tab passes) or another character Unicode calls unprintable.
    if not value.isprintable() and not _FIELD_VALUE.fullmatch(value):
        # A value with CR or LF would split the header block: never pass it through.
        return
    if op.operation is HeaderOperationKind.APPEND:
        headers.add(name, op.value)
    else:
        headers[name] = op.value


def check_answer_json(outcome: CheckOutcome) -> dict[str, Any]:
    """A Check's decision as JSON: the shape ``mixer check`` prints (see docs/cli.md), plus the
    HTTP status a proxy would answer with, the headers check handlers returned, and the rate limits
    applied (seconds; ``retry_after`` null when waiting cannot help or nothing was denied)."""
    answer = CheckAnswer(
        status=outcome.status,
        valid_duration=outcome.valid_duration,
        valid_use_count=outcome.valid_use_count,
        referenced=list(outcome.referenced),
        route_directive=RouteDirectiveAnswer(
            list(outcome.request_header_operations), list(outcome.response_header_operations)
        ),
        quotas=dict(outcome.quotas),
    )
    body = answer.to_json()
    body["http_status"] = http_status(outcome.status.code)
    body["headers"] = dict(outcome.headers)
    body["rate_limits"] = [
        {
            "name": rl.name,
            "limit": rl.limit,
            "remaining": rl.remaining,
            "reset": _finite(rl.reset),
            "window": _finite(rl.window),
            "retry_after": None if rl.retry_after is None else _finite(rl.retry_after),
        }
        for rl in outcome.rate_limits
    ]
    return body


def _finite(seconds: float) -> float | None:
    return seconds if math.isfinite(seconds) else None


# -- the service ----------------------------------------------------------------------------------


class HttpCheckService:
    """The three routes for one server process; :meth:`routes` registers them with aiohttp."""

    def __init__(
        self,
        holder_ref: Callable[[], RuntimeHolder | None],
        metrics: ServerMetrics,
        admission: Admission,
        limits: ServiceLimits,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        self._limits = limits
        self._calls = Envelope(
            API,
            metrics,
            admission,
            holder_ref,
            HttpFaults(logger if logger is not None else logging.getLogger("mixer.api.http_check")),
        )
        self._auth_metrics = metrics.method(API, "Auth")
        self._check_metrics = metrics.method(API, "Check")
        self._report_metrics = metrics.method(API, "Report")

    @property
    def in_flight(self) -> int:
        return self._calls.in_flight

    def routes(self) -> list[web.RouteDef]:
        return [
            web.route("*", AUTH_PATH, self.auth),
            web.post(CHECK_PATH, self.check),
            web.post(REPORT_PATH, self.report),
        ]

    async def auth(self, request: web.Request) -> web.Response:
        return await self._calls.run(self._auth_metrics, "Auth", request, self._auth)

    async def check(self, request: web.Request) -> web.Response:
        return await self._calls.run(self._check_metrics, "Check", request, self._check)

    async def report(self, request: web.Request) -> web.Response:
        return await self._calls.run(self._report_metrics, "Report", request, self._report)

    async def _read_body(self, request: web.Request) -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise HttpRefusal(
                413, Code.RESOURCE_EXHAUSTED, "the body is over the size limit (see --max-message-size)"
            ) from None
        except ConnectionError:
            # The client went away, or the body did not arrive within --http-body-timeout and the
            # server closed the connection (counted there): nobody is left to answer.
            raise HttpRefusal(400, Code.CANCELLED, "the connection closed before the body arrived") from None

    async def _auth(self, lease: Lease, request: web.Request) -> web.Response:
        runtime = lease.runtime()
        values = auth_attributes(request.headers, request.method, request.remote, self._limits)
        outcome = await runtime.check(AttributeBag(values), timeout=self._limits.check_timeout)
        status = outcome.status
        # orjson: json.dumps and its encoder objects were a tenth of this endpoint's own time.
        body = orjson.dumps(
            {"status": {"code": status.code.name, "code_number": int(status.code), "message": status.message}}
        )
        return web.Response(
            body=body,
            status=http_status(status.code),
            headers=auth_response_headers(outcome),
            content_type="application/json",
            charset="utf-8",
        )

    async def _check(self, lease: Lease, request: web.Request) -> web.Response:
        data = decode_json(await self._read_body(request))
        runtime = lease.runtime()
        bag, quotas, dedup = parse_check_body(data, runtime.config.manifest, self._limits)
        outcome = await runtime.check(bag, quotas, dedup, timeout=self._limits.check_timeout)
        return web.json_response(check_answer_json(outcome), headers={"Cache-Control": "no-store"})

    async def _report(self, lease: Lease, request: web.Request) -> web.Response:
        body = await self._read_body(request)
        # Decoding and dispatch yield between slices, so the runtime is held across them.
        runtime = lease.runtime()
        bags = await decode_report_body(body, runtime.config.manifest, self._limits)
        outcome = await runtime.report_in_slices(bags)
        lease.release()
        # Answered once the records are queued or, for handlers acknowledging from their spool,
        # committed there (docs/delivery.md); the wait needs no runtime.
        status = await outcome.durable_status()
        if not status.ok:
            raise HttpRefusal(http_status(status.code), status.code, status.message)
        return web.json_response({"status": "OK", "records": len(bags)}, status=202)


class HttpFaults(Faults[web.Request, web.Response]):
    """A call that does not end with a decision is answered with a JSON error
    (:meth:`HttpRefusal.response`), the HTTP status the failure's own or the one its code maps to."""

    def unexpected(self, ctx: web.Request, name: str) -> None:
        self.log.exception("%s %s failed unexpectedly", ctx.method, ctx.path)

    async def fail(self, failure: CallFailure, ctx: web.Request) -> web.Response:
        if not isinstance(failure, HttpRefusal):
            failure = HttpRefusal(http_status(failure.code), failure.code, failure.message)
        return failure.response()


def http_routes(context: ServiceContext) -> list[web.RouteDef]:
    """The HTTP check routes for a server (see :mod:`mixer.api._registry`)."""
    service = HttpCheckService(
        context.runtime_holder, context.metrics, context.admission, context.limits, logger=context.logger
    )
    return service.routes()
