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

import asyncio
import ipaddress
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, NoReturn
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict

from mixer.api._json_attributes import AttributeConversionError, attributes_from_json, check_limits
from mixer.attributes import AttributeBag, AttributeValue
from mixer.client import CheckAnswer, RouteDirectiveAnswer
from mixer.decision import CheckOutcome, HeaderOperationKind, HeaderOperationResult, QuotaRequest
from mixer.runtime import yield_for
from mixer.status import Code, http_status

if TYPE_CHECKING:
    from mixer.api._common import Admission, ServiceLimits
    from mixer.api._registry import ServiceContext
    from mixer.server import MethodMetrics, RuntimeHolder, ServerMetrics

__all__ = [
    "API",
    "AUTH_PATH",
    "CHECK_PATH",
    "REPORT_PATH",
    "HttpCheckService",
    "HttpRefusal",
    "auth_attributes",
    "auth_response_headers",
    "check_answer_json",
    "decode_report_body",
    "http_routes",
    "parse_check_body",
    "parse_report_body",
]

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
_CHECK_KEYS: Final = frozenset({"attributes", "quotas", "deduplication_id"})
_QUOTA_KEYS: Final = frozenset({"amount", "best_effort"})
_INT64_MAX: Final = 2**63 - 1


class HttpRefusal(Exception):
    """A request answered with an error instead of a decision: HTTP status, code and message."""

    def __init__(self, status: int, code: Code, message: str, *, decode_error: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        #: Counted in ``mixer_decode_errors_total``: the request itself was malformed.
        self.decode_error = decode_error

    def response(self) -> web.Response:
        return web.json_response(
            {"error": {"code": self.code.name, "code_number": int(self.code), "message": self.message}},
            status=self.status,
            headers={"X-Mixer-Code": self.code.name, "Cache-Control": "no-store"},
        )


def _malformed(message: str) -> NoReturn:
    raise HttpRefusal(400, Code.INVALID_ARGUMENT, message, decode_error=True)


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
                _malformed(f"X-Original-URI: more than {limits.max_map_entries} query parameters")
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
        _malformed(str(exc))
    return values


def _source_ip(
    header_map: Mapping[str, str], peer: str | None
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
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
            return ipaddress.ip_address(peer)
        except ValueError:
            # A Unix socket peer has no IP address; the attribute is simply absent.
            return None
    return None


def _parse_ip(header: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        _malformed(f"{header}: {text[:64]!r} is not an IP address")


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
    if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(op.value):
        # A value with CR or LF would split the header block: never pass it through.
        return
    if op.operation is HeaderOperationKind.APPEND:
        headers.add(name, op.value)
    else:
        headers[name] = op.value


# -- JSON bodies ----------------------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _decode_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        _malformed("the JSON body is nested too deeply")
    except ValueError as exc:
        _malformed(f"the body is not JSON: {exc}")


def parse_check_body(
    data: object, manifest: Mapping[str, Any], limits: ServiceLimits
) -> tuple[AttributeBag, dict[str, QuotaRequest], str]:
    """The bag, quotas and deduplication id of a ``/v1/check`` body.

    :raises HttpRefusal: 400 naming what is wrong (unknown keys, shapes, attributes).
    """
    if not isinstance(data, dict):
        _malformed("the body must be a JSON object with an 'attributes' object")
    unknown = sorted(set(data) - _CHECK_KEYS)
    if unknown:
        _malformed(f"unknown keys {unknown} (expected {sorted(_CHECK_KEYS)})")
    try:
        values = attributes_from_json(data.get("attributes", {}), manifest, limits)
    except AttributeConversionError as exc:
        _malformed(str(exc))
    dedup = data.get("deduplication_id", "")
    if not isinstance(dedup, str):
        _malformed("deduplication_id must be a string")
    if len(dedup) > limits.max_string_length:
        _malformed(f"deduplication_id is over the limit of {limits.max_string_length} characters")
    return AttributeBag(values), _quotas(data.get("quotas", {}), limits), dedup


def _quotas(data: object, limits: ServiceLimits) -> dict[str, QuotaRequest]:
    if not isinstance(data, dict):
        _malformed("quotas must be an object of quota name to {amount, best_effort}")
    if len(data) > limits.max_map_entries:
        _malformed(f"{len(data)} quotas is over the limit of {limits.max_map_entries}")
    quotas: dict[str, QuotaRequest] = {}
    for name, params in data.items():
        if len(name) > limits.max_string_length:
            _malformed(f"a quota name is over the limit of {limits.max_string_length} characters")
        if not isinstance(params, dict):
            _malformed(f"quotas[{name!r}] must be an object with amount and best_effort")
        unknown = sorted(set(params) - _QUOTA_KEYS)
        if unknown:
            _malformed(f"quotas[{name!r}]: unknown keys {unknown} (expected amount, best_effort)")
        amount = params.get("amount", 1)
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= _INT64_MAX:
            _malformed(f"quotas[{name!r}].amount must be a non-negative integer")
        best_effort = params.get("best_effort", False)
        if not isinstance(best_effort, bool):
            _malformed(f"quotas[{name!r}].best_effort must be true or false")
        quotas[name] = QuotaRequest(amount, best_effort)
    return quotas


def parse_report_body(data: object, manifest: Mapping[str, Any], limits: ServiceLimits) -> list[AttributeBag]:
    """One bag per record of a ``/v1/report`` body.

    :raises HttpRefusal: 400 naming the record and what is wrong with it.
    """
    if not isinstance(data, dict) or set(data) != {"records"}:
        _malformed("the body must be a JSON object {'records': [...]} and nothing else")
    records = data["records"]
    if not isinstance(records, list):
        _malformed("records must be an array of attribute objects")
    if len(records) > limits.max_report_records:
        raise _too_many_records(limits)
    return _record_bags(records, 0, manifest, limits)


def _record_bags(
    records: list[Any], first: int, manifest: Mapping[str, Any], limits: ServiceLimits
) -> list[AttributeBag]:
    bags: list[AttributeBag] = []
    for index, record in enumerate(records, first):
        try:
            bags.append(
                AttributeBag(attributes_from_json(record, manifest, limits, where=f"records[{index}]"))
            )
        except AttributeConversionError as exc:
            _malformed(str(exc))
    return bags


def _too_many_records(limits: ServiceLimits) -> HttpRefusal:
    return HttpRefusal(
        413,
        Code.RESOURCE_EXHAUSTED,
        f"the report has more than {limits.max_report_records} records (see --max-report-records)",
    )


_REPORT_SHAPE: Final = "the body must be a JSON object {'records': [...]} and nothing else"
_JSON_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)
_JSON_SPACE: Final = re.compile(r"[ \t\n\r]*")


class _ReportRecords:
    """The records of a ``/v1/report`` body, parsed a few at a time.

    ``json.loads`` of a whole 4 MiB body holds the event loop for tens of milliseconds and builds
    every record before any can be counted; here the object around the array is walked by hand and
    each record parsed on its own, so the count is known (and refused) record by record.
    """

    def __init__(self, body: bytes, limits: ServiceLimits) -> None:
        try:
            self._text = body.decode(json.detect_encoding(body), "surrogatepass")
        except UnicodeDecodeError as exc:
            _malformed(f"the body is not JSON: {exc}")
        self._limits = limits
        self.count = 0
        self.done = False
        self._pos = self._open()

    def _space(self, pos: int) -> int:
        match = _JSON_SPACE.match(self._text, pos)
        assert match is not None  # "*" matches the empty string
        return match.end()

    def _value(self, pos: int) -> tuple[Any, int]:
        try:
            value, end = _JSON_DECODER.raw_decode(self._text, pos)
        except RecursionError:
            _malformed("the JSON body is nested too deeply")
        except ValueError as exc:
            _malformed(f"the body is not JSON: {exc}")
        return value, end

    def _open(self) -> int:
        """The position of the first record, past ``{"records": [``."""
        text = self._text
        pos = self._space(0)
        if not text.startswith("{", pos):
            self._value(pos)  # not JSON at all: say so, as for any body
            _malformed(_REPORT_SHAPE)
        pos = self._space(pos + 1)
        if not text.startswith('"', pos):
            self._value(0)
            _malformed(_REPORT_SHAPE)
        key, pos = self._value(pos)
        pos = self._space(pos)
        if key != "records" or not text.startswith(":", pos):
            self._value(0)
            _malformed(_REPORT_SHAPE)
        pos = self._space(pos + 1)
        if not text.startswith("[", pos):
            self._value(0)
            _malformed("records must be an array of attribute objects")
        pos = self._space(pos + 1)
        if text.startswith("]", pos):
            self._close(pos + 1)
        return pos

    def _close(self, pos: int) -> None:
        text = self._text
        pos = self._space(pos)
        if not text.startswith("}", pos):
            self._value(0)
            _malformed(_REPORT_SHAPE)
        if self._space(pos + 1) != len(text):
            self._value(0)
            _malformed("the body is not JSON: extra data after the object")
        self.done = True

    def read(self, count: int) -> list[Any]:
        """Up to ``count`` more records (parsed JSON values).

        :raises HttpRefusal: 400 for malformed JSON or shape, 413 past ``max_report_records``.
        """
        text = self._text
        limit = self._limits.max_report_records
        records: list[Any] = []
        pos = self._pos
        while not self.done and len(records) < count:
            if self.count == limit:
                raise _too_many_records(self._limits)
            record, pos = self._value(pos)
            records.append(record)
            self.count += 1
            pos = self._space(pos)
            if text.startswith(",", pos):
                pos = self._space(pos + 1)
            elif text.startswith("]", pos):
                self._close(pos + 1)
            else:
                self._value(0)
                _malformed("the body is not JSON: expected ',' or ']' between records")
        self._pos = pos
        return records


#: Records parsed and converted between two yields to the event loop.
REPORT_RECORD_SLICE: Final = 128


async def decode_report_body(
    body: bytes, manifest: Mapping[str, Any], limits: ServiceLimits
) -> list[AttributeBag]:
    """:func:`parse_report_body` of a raw body, a slice of records at a time with yields between.

    :raises HttpRefusal: 400 naming what is wrong; 413 past ``limits.max_report_records``.
    """
    reader = _ReportRecords(body, limits)
    bags: list[AttributeBag] = []
    while not reader.done:
        started = perf_counter()
        first = reader.count
        bags += _record_bags(reader.read(REPORT_RECORD_SLICE), first, manifest, limits)
        if not reader.done:
            await yield_for(perf_counter() - started)
    return bags


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

_Work = Callable[[web.Request], Awaitable[web.Response]]


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
        self._holder_ref = holder_ref
        self._admission = admission
        self._limits = limits
        self._log = logger if logger is not None else logging.getLogger("mixer.api.http_check")
        self._auth_metrics = metrics.method(API, "Auth")
        self._check_metrics = metrics.method(API, "Check")
        self._report_metrics = metrics.method(API, "Report")
        self.in_flight = 0
        metrics.track_in_flight(API, lambda: self.in_flight)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.route("*", AUTH_PATH, self.auth),
            web.post(CHECK_PATH, self.check),
            web.post(REPORT_PATH, self.report),
        ]

    async def auth(self, request: web.Request) -> web.Response:
        return await self._serve(self._auth_metrics, request, self._auth)

    async def check(self, request: web.Request) -> web.Response:
        return await self._serve(self._check_metrics, request, self._check)

    async def report(self, request: web.Request) -> web.Response:
        return await self._serve(self._report_metrics, request, self._report)

    async def _serve(self, metrics: MethodMetrics, request: web.Request, work: _Work) -> web.Response:
        started = perf_counter()
        admission = self._admission
        if admission.full:
            metrics.observe(Code.UNAVAILABLE.name, perf_counter() - started)
            return HttpRefusal(
                503,
                Code.UNAVAILABLE,
                "overloaded: too many requests in flight (see --max-concurrent-requests)",
            ).response()
        admission.in_flight += 1
        self.in_flight += 1
        code = Code.OK.name
        try:
            return await work(request)
        except HttpRefusal as refusal:
            code = refusal.code.name
            if refusal.decode_error:
                metrics.decode_errors.inc()
            return refusal.response()
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client goes away.
            code = Code.CANCELLED.name
            raise
        except Exception:
            self._log.exception("%s %s failed unexpectedly", request.method, request.path)
            code = Code.INTERNAL.name
            return HttpRefusal(500, Code.INTERNAL, "internal error; the server logged the details").response()
        finally:
            admission.in_flight -= 1
            self.in_flight -= 1
            metrics.observe(code, perf_counter() - started)

    def _holder(self) -> RuntimeHolder:
        holder = self._holder_ref()
        if holder is None:
            raise HttpRefusal(503, Code.UNAVAILABLE, "not ready: no config has loaded yet")
        return holder

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

    async def _read_json(self, request: web.Request) -> Any:
        return _decode_json(await self._read_body(request))

    async def _auth(self, request: web.Request) -> web.Response:
        holder = self._holder()
        values = auth_attributes(request.headers, request.method, request.remote, self._limits)
        runtime = holder.acquire()
        try:
            outcome = await runtime.check(AttributeBag(values), timeout=self._limits.check_timeout)
        finally:
            holder.release(runtime)
        status = outcome.status
        return web.json_response(
            {
                "status": {
                    "code": status.code.name,
                    "code_number": int(status.code),
                    "message": status.message,
                }
            },
            status=http_status(status.code),
            headers=auth_response_headers(outcome),
        )

    async def _check(self, request: web.Request) -> web.Response:
        data = await self._read_json(request)
        holder = self._holder()
        runtime = holder.acquire()
        try:
            bag, quotas, dedup = parse_check_body(data, runtime.config.manifest, self._limits)
            outcome = await runtime.check(bag, quotas, dedup, timeout=self._limits.check_timeout)
        finally:
            holder.release(runtime)
        return web.json_response(check_answer_json(outcome), headers={"Cache-Control": "no-store"})

    async def _report(self, request: web.Request) -> web.Response:
        body = await self._read_body(request)
        holder = self._holder()
        # Decoding and dispatch yield between slices, so the runtime is held across them.
        runtime = holder.acquire()
        try:
            bags = await decode_report_body(body, runtime.config.manifest, self._limits)
            outcome = await runtime.report_in_slices(bags)
        finally:
            holder.release(runtime)
        # Answered once the records are queued or, for handlers acknowledging from their spool,
        # committed there (docs/delivery.md); the wait needs no runtime.
        status = await outcome.durable_status()
        if not status.ok:
            raise HttpRefusal(http_status(status.code), status.code, status.message)
        return web.json_response({"status": "OK", "records": len(bags)}, status=202)


def http_routes(context: ServiceContext) -> list[web.RouteDef]:
    """The HTTP check routes for a server (see :mod:`mixer.api._registry`)."""
    service = HttpCheckService(
        context.runtime_holder, context.metrics, context.admission, context.limits, logger=context.logger
    )
    return service.routes()
