"""FakeElasticsearch: an in-process stand-in for an Elasticsearch 8 node, for tests.

It speaks the wire protocol the official ``elasticsearch`` client uses, closely enough that the
real client (not a mock of it) runs against it:

- ``_bulk`` (``PUT`` or ``POST``, optionally ``/{index}/_bulk``): NDJSON action/source line pairs
  (``index`` and ``create``), per-item statuses and errors in request order, ``errors`` set when
  any item failed. Malformed bodies are refused as a whole (400), as Elasticsearch does.
- ``_index_template/NAME`` (PUT, GET, HEAD, DELETE) and ``_data_stream/NAME`` (PUT, GET, DELETE):
  a ``create`` op to a name matched by a template with ``data_stream`` creates the data stream;
  ``index`` ops into a data stream, and documents without ``@timestamp``, are refused per item.
- ``GET /``: the cluster info document.
- ``filter_path`` on any JSON answer but an error, as Elasticsearch applies it: comma-separated
  dotted paths, ``*`` matching any one key, arrays passed through, objects left empty dropped.
- Every response carries ``X-Elastic-Product: Elasticsearch``; JSON is answered as
  ``application/json``, or in the compatible media type when the request asked for one.
- Compatibility headers are checked like an Elasticsearch 8 node checks them: a client that asks
  for ``compatible-with=9`` (an Elasticsearch 9 client) is refused with 400
  ``media_type_header_exception``.
- Optional authentication (an API key or a user and password): anything else is answered 401.

Failures are scripted: :meth:`FakeElasticsearch.fail_items` (the next N items answered 429 or any
status), :meth:`FakeElasticsearch.reject_documents` (items whose document matches a predicate,
400 ``mapper_parsing_exception`` by default), :meth:`FakeElasticsearch.fail_requests` (whole
requests answered 503 for N requests or for a time window) and
:meth:`FakeElasticsearch.drop_connections` (the connection closed without an answer, before or
after the items were indexed).

State is observable: :attr:`FakeElasticsearch.requests`, :attr:`FakeElasticsearch.bulk_requests`,
:meth:`FakeElasticsearch.documents`, :attr:`FakeElasticsearch.index_templates`,
:attr:`FakeElasticsearch.data_streams`. Stored documents are bounded per index (oldest evicted,
counted). The server binds 127.0.0.1 only, on a free port unless one is given.
"""

from __future__ import annotations

import base64
import fnmatch
import hmac
import itertools
import json
import re
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from aiohttp import web

__all__ = [
    "SERVER_VERSION",
    "BulkRequest",
    "FakeElasticsearch",
    "RecordedRequest",
]

#: The Elasticsearch version the fake reports; its major decides which compatible-with it accepts.
SERVER_VERSION = "8.19.0"
_SERVER_MAJOR = int(SERVER_VERSION.split(".", 1)[0])
#: Elasticsearch's own limit on a request body (``http.max_content_length``).
DEFAULT_MAX_CONTENT_LENGTH = 100 * 1024 * 1024
DEFAULT_MAX_DOCUMENTS_PER_INDEX = 100_000
_MAX_RECORDED = 10_000

_PRODUCT_HEADERS = {"X-Elastic-Product": "Elasticsearch"}
_COMPAT_RE = re.compile(r"application/vnd\.elasticsearch\+[\w.-]+\s*;\s*compatible-with\s*=\s*(\d+)", re.I)
_BODY_MEDIA_TYPES = (
    "application/json",
    "application/x-ndjson",
    "application/vnd.elasticsearch+json",
    "application/vnd.elasticsearch+x-ndjson",
)
_INVALID_INDEX_CHARS = frozenset('\\/*?"<>| ,#:')
_ACTION_PARAMS = frozenset(
    {
        "_index",
        "_id",
        "routing",
        "pipeline",
        "require_alias",
        "require_data_stream",
        "dynamic_templates",
        "if_seq_no",
        "if_primary_term",
        "version",
        "version_type",
    }
)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake saw it; ``status`` is 0 when the connection was dropped."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body_size: int
    status: int


@dataclass(frozen=True, slots=True)
class BulkRequest:
    """One ``_bulk`` request that was parsed: ``(op, index)`` and the answered status per item."""

    actions: tuple[tuple[str, str], ...]
    statuses: tuple[int, ...]
    body_size: int

    @property
    def item_count(self) -> int:
        return len(self.actions)


class _RequestError(Exception):
    """Ends a request with an Elasticsearch error document."""

    def __init__(
        self, status: int, error_type: str, reason: str, caused_by: dict[str, Any] | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.error_type = error_type
        self.reason = reason
        self.caused_by = caused_by


@dataclass(slots=True)
class _ItemFailure:
    remaining: int
    status: int
    error_type: str
    reason: str


@dataclass(slots=True)
class _DocumentRejection:
    predicate: Callable[[dict[str, Any]], bool]
    status: int
    error_type: str
    reason: str


@dataclass(slots=True)
class _RequestFailure:
    skip: int
    remaining: int | None
    seconds: float | None
    status: int
    error_type: str
    reason: str
    until: float | None = None


@dataclass(slots=True)
class _ConnectionDrop:
    remaining: int
    after_indexing: bool


@dataclass(slots=True)
class _Index:
    name: str
    max_documents: int
    docs: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    indexed: int = 0
    evicted: int = 0
    seq_no: int = 0


@dataclass(slots=True)
class _DataStream:
    name: str
    template: str
    backing_index: str


@dataclass(frozen=True, slots=True)
class _BulkOp:
    op: str
    index: str
    doc_id: str | None
    source: bytes


def _error_body(
    status: int, error_type: str, reason: str, caused_by: dict[str, Any] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "root_cause": [{"type": error_type, "reason": reason}],
        "type": error_type,
        "reason": reason,
    }
    if caused_by is not None:
        error["caused_by"] = caused_by
    return {"error": error, "status": status}


def _reject_constant(token: str) -> Any:
    # Elasticsearch's JSON parser refuses NaN and Infinity; Python's accepts them by default.
    raise ValueError(f"Non-standard token '{token}'")


def _index_name_problem(name: str) -> str | None:
    if not name:
        return "must not be empty"
    if name != name.lower():
        return "must be lowercase"
    if name in {".", ".."}:
        return "must not be '.' or '..'"
    if name[0] in "-_+":
        return "must not start with '_', '-', or '+'"
    bad = sorted(set(name) & _INVALID_INDEX_CHARS)
    if bad:
        return f"must not contain the following characters {bad}"
    if len(name.encode()) > 255:
        return "index name is too long"
    return None


class FakeElasticsearch:
    """A fake Elasticsearch 8 node on ``127.0.0.1``; see the module docstring for what it speaks.

    Use as ``async with FakeElasticsearch() as es: ... es.url ...`` or call :meth:`start` and
    :meth:`close`. ``port=0`` picks a free port; giving the port of a closed fake restarts "the
    same node" (its stored state is that of this object, so use the same object to keep it).

    :param api_key: when set, requests must carry ``Authorization: ApiKey <api_key>``.
    :param basic_auth: when set, requests must carry these credentials as HTTP Basic.
    :param ssl_context: serve HTTPS with this context.
    :param clock: the time source of :meth:`fail_requests` windows.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        max_documents_per_index: int = DEFAULT_MAX_DOCUMENTS_PER_INDEX,
        max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH,
        api_key: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self._max_documents = max_documents_per_index
        self._max_content_length = max_content_length
        self._credentials = self._expected_credentials(api_key, basic_auth)
        self._ssl_context = ssl_context
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._ids = itertools.count(1)
        self._indices: dict[str, _Index] = {}
        self._data_streams: dict[str, _DataStream] = {}
        self._templates: dict[str, dict[str, Any]] = {}
        self._requests: deque[RecordedRequest] = deque(maxlen=_MAX_RECORDED)
        self._bulk_requests: deque[BulkRequest] = deque(maxlen=_MAX_RECORDED)
        self._item_failures: deque[_ItemFailure] = deque()
        self._rejections: list[_DocumentRejection] = []
        self._request_failures: deque[_RequestFailure] = deque()
        self._drops: deque[_ConnectionDrop] = deque()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> Self:
        if self._runner is not None:
            return self
        app = web.Application(middlewares=[self._middleware], client_max_size=self._max_content_length)
        app.router.add_route("*", "/", self._root)
        app.router.add_route("*", "/_bulk", self._bulk)
        app.router.add_route("GET", "/_index_template", self._all_templates)
        app.router.add_route("*", "/_index_template/{name}", self._index_template)
        app.router.add_route("GET", "/_data_stream", self._all_data_streams)
        app.router.add_route("*", "/_data_stream/{name}", self._data_stream)
        app.router.add_route("*", "/{index}/_bulk", self._bulk)
        app.router.add_route("GET", "/{index}/_count", self._count)
        app.router.add_route("*", "/{tail:.*}", self._no_handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self._ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def close(self) -> None:
        """Stop listening and close open connections. The stored state is kept."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- scripted failures -----------------------------------------------------------------

    def fail_items(
        self,
        count: int,
        *,
        status: int = 429,
        error_type: str = "es_rejected_execution_exception",
        reason: str = "rejected execution of coordinating operation",
    ) -> None:
        """Answer the next ``count`` bulk items (across requests) with ``status`` instead of indexing them."""
        self._item_failures.append(_ItemFailure(count, status, error_type, reason))

    def reject_documents(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        status: int = 400,
        error_type: str = "mapper_parsing_exception",
        reason: str = "failed to parse field [value] of type [long]",
    ) -> None:
        """Answer every item whose document matches ``predicate`` with this error, until cleared."""
        self._rejections.append(_DocumentRejection(predicate, status, error_type, reason))

    def fail_requests(
        self,
        *,
        count: int | None = None,
        seconds: float | None = None,
        after: int = 0,
        status: int = 503,
        error_type: str = "cluster_block_exception",
        reason: str = "blocked by: [SERVICE_UNAVAILABLE/2/no master];",
    ) -> None:
        """Answer whole requests (any endpoint) with ``status``.

        Either ``count`` requests, or every request for ``seconds``, after letting ``after``
        requests through. The window starts now, or with ``after`` at the first request failed.
        Failures scripted one after another apply in turn.
        """
        if (count is None) == (seconds is None):
            raise ValueError("give exactly one of count and seconds")
        failure = _RequestFailure(after, count, seconds, status, error_type, reason)
        if seconds is not None and after == 0:
            failure.until = self._clock() + seconds
        self._request_failures.append(failure)

    def drop_connections(self, count: int, *, after_indexing: bool = False) -> None:
        """Close the connection of the next ``count`` requests without answering.

        With ``after_indexing`` a bulk request's items are indexed first, as when a node dies
        between doing the work and answering: a client that retries then writes duplicates.
        Note that aiohttp's client (the elasticsearch client's transport) resends a request once
        by itself when a reused keep-alive connection closes without an answer, so a client
        sees a connection error only when two requests in a row are dropped.
        """
        self._drops.append(_ConnectionDrop(count, after_indexing))

    def clear_failures(self) -> None:
        self._item_failures.clear()
        self._rejections.clear()
        self._request_failures.clear()
        self._drops.clear()

    # -- observations ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request seen (the last 10,000), in arrival order."""
        return list(self._requests)

    @property
    def bulk_requests(self) -> list[BulkRequest]:
        """Every ``_bulk`` request that was parsed (the last 10,000), in arrival order."""
        return list(self._bulk_requests)

    @property
    def index_templates(self) -> dict[str, dict[str, Any]]:
        return {name: json.loads(json.dumps(body)) for name, body in self._templates.items()}

    @property
    def data_streams(self) -> dict[str, str]:
        """Data stream name -> the index template it was created from."""
        return {name: stream.template for name, stream in self._data_streams.items()}

    @property
    def indices(self) -> list[str]:
        """Index names, data stream backing indices (``.ds-...``) included."""
        return sorted(self._indices)

    def documents(self, name: str) -> list[dict[str, Any]]:
        """The stored sources of an index or a data stream, in indexing order."""
        index = self._resolve(name)
        return [] if index is None else [json.loads(json.dumps(doc)) for doc in index.docs.values()]

    def indexed_count(self, name: str) -> int:
        """Documents indexed into an index or data stream, evicted ones included."""
        index = self._resolve(name)
        return 0 if index is None else index.indexed

    def all_documents(self) -> dict[str, list[dict[str, Any]]]:
        """Sources by index, data streams under their own name."""
        by_backing = {stream.backing_index: name for name, stream in self._data_streams.items()}
        return {by_backing.get(name, name): self.documents(name) for name in sorted(self._indices)}

    def _resolve(self, name: str) -> _Index | None:
        stream = self._data_streams.get(name)
        return self._indices.get(stream.backing_index if stream is not None else name)

    # -- HTTP plumbing ---------------------------------------------------------------------

    @staticmethod
    def _expected_credentials(api_key: str | None, basic_auth: tuple[str, str] | None) -> frozenset[str]:
        accepted = set()
        if api_key is not None:
            accepted.add(f"ApiKey {api_key}")
        if basic_auth is not None:
            token = base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
            accepted.add(f"Basic {token}")
        return frozenset(accepted)

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._requests.append(
                RecordedRequest(
                    request.method, request.path, dict(request.query), dict(request.headers), 0, 413
                )
            )
            reason = f"request body is larger than the limit of [{self._max_content_length}] bytes"
            return self._json(request, _error_body(413, "content_too_long_exception", reason), 413)
        drop = self._take_drop()
        status = 0
        try:
            if drop is not None and not drop.after_indexing:
                return self._abort(request)
            failure = self._take_request_failure()
            try:
                if failure is not None:
                    raise _RequestError(failure.status, failure.error_type, failure.reason)
                self._check_media_types(request, body)
                self._check_auth(request)
                response = await handler(request)
            except _RequestError as exc:
                response = self._json(
                    request, _error_body(exc.status, exc.error_type, exc.reason, exc.caused_by), exc.status
                )
                if exc.status == 401:
                    response.headers["WWW-Authenticate"] = 'ApiKey, Basic realm="security", charset="UTF-8"'
            if drop is not None:
                return self._abort(request)
            status = response.status
            return response
        finally:
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    query=dict(request.query),
                    headers=dict(request.headers),
                    body_size=len(body),
                    status=status,
                )
            )

    @staticmethod
    def _abort(request: web.Request) -> web.StreamResponse:
        # The client sees the connection close with no answer; aiohttp skips writing to an aborted transport.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500, headers=_PRODUCT_HEADERS)

    def _take_drop(self) -> _ConnectionDrop | None:
        while self._drops:
            drop = self._drops[0]
            if drop.remaining <= 0:
                self._drops.popleft()
                continue
            drop.remaining -= 1
            return drop
        return None

    def _take_request_failure(self) -> _RequestFailure | None:
        now = self._clock()
        while self._request_failures:
            failure = self._request_failures[0]
            if failure.skip > 0:
                failure.skip -= 1
                return None
            if failure.seconds is not None:
                if failure.until is None:
                    failure.until = now + failure.seconds
                if now < failure.until:
                    return failure
                self._request_failures.popleft()
                continue
            if failure.remaining is not None and failure.remaining > 0:
                failure.remaining -= 1
                return failure
            self._request_failures.popleft()
        return None

    def _check_media_types(self, request: web.Request, body: bytes) -> None:
        accept = request.headers.get("Accept", "")
        content_type = request.headers.get("Content-Type", "")
        accept_match = _COMPAT_RE.search(accept)
        content_match = _COMPAT_RE.search(content_type) if body else None
        accept_version = int(accept_match.group(1)) if accept_match else None
        content_version = int(content_match.group(1)) if content_match else None
        supported = (_SERVER_MAJOR, _SERVER_MAJOR - 1)
        problem = None
        if accept_version is not None and accept_version not in supported:
            problem = (
                f"Accept version must be either version {supported[0]} or {supported[1]}, "
                f"but found {accept_version}. Accept={accept}"
            )
        elif content_version is not None and content_version not in supported:
            problem = (
                f"Content-Type version must be either version {supported[0]} or {supported[1]}, "
                f"but found {content_version}. Content-Type={content_type}"
            )
        elif body and (accept_version is None) != (content_version is None):
            problem = (
                "A compatible version is required on both Content-Type and Accept headers if either "
                f"one has requested a compatible version. Accept={accept or None}, "
                f"Content-Type={content_type or None}"
            )
        elif accept_version is not None and content_version is not None and accept_version != content_version:
            problem = (
                "Content-Type and Accept version requested have to match. "
                f"Accept={accept}, Content-Type={content_type}"
            )
        if problem is not None:
            reason = "Invalid media-type value on headers [Accept, Content-Type]"
            raise _RequestError(
                400, "media_type_header_exception", reason, {"type": "status_exception", "reason": problem}
            )
        if body:
            media_type = content_type.split(";", 1)[0].strip().lower()
            if media_type not in _BODY_MEDIA_TYPES:
                raise _RequestError(
                    406,
                    "media_type_header_exception",
                    f"Content-Type header [{content_type}] is not supported",
                )

    def _check_auth(self, request: web.Request) -> None:
        if not self._credentials:
            return
        given = request.headers.get("Authorization", "")
        if not any(hmac.compare_digest(given, expected) for expected in self._credentials):
            reason = (
                f"missing authentication credentials for REST request [{request.path_qs}]"
                if not given
                else "unable to authenticate with provided credentials"
            )
            raise _RequestError(401, "security_exception", reason)

    def _json(self, request: web.Request, payload: object, status: int = 200) -> web.Response:
        accept = request.headers.get("Accept", "")
        if _COMPAT_RE.search(accept):
            content_type = f"application/vnd.elasticsearch+json;compatible-with={_SERVER_MAJOR}"
        else:
            content_type = "application/json"
        headers = {**_PRODUCT_HEADERS, "Content-Type": content_type}
        filter_path = request.query.get("filter_path")
        # Elasticsearch builds error answers unfiltered, so that the error is never filtered away.
        if filter_path and status < 400:
            payload = filter_answer(payload, filter_path)
        return web.Response(body=json.dumps(payload).encode(), status=status, headers=headers)

    def _empty(self, status: int) -> web.Response:
        return web.Response(status=status, headers=_PRODUCT_HEADERS)

    @staticmethod
    def _json_body(body: bytes) -> dict[str, Any]:
        try:
            value = json.loads(body, parse_constant=_reject_constant) if body.strip() else None
        except ValueError as exc:
            raise _RequestError(
                400, "x_content_parse_exception", f"failed to parse request body: {exc}"
            ) from exc
        if not isinstance(value, dict):
            raise _RequestError(400, "parse_exception", "request body is required and must be an object")
        return value

    # -- endpoints -------------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return self._empty(200)
        if request.method != "GET":
            raise _method_not_allowed(request)
        return self._json(
            request,
            {
                "name": "fake-es-node",
                "cluster_name": "fake-elasticsearch",
                "cluster_uuid": "ZmFrZS1lbGFzdGljc2VhcmNo",
                "version": {
                    "number": SERVER_VERSION,
                    "build_flavor": "default",
                    "build_type": "docker",
                    "build_hash": "0000000000000000000000000000000000000000",
                    "build_date": "2025-01-01T00:00:00.000000000Z",
                    "build_snapshot": False,
                    "lucene_version": "9.12.2",
                    "minimum_wire_compatibility_version": "7.17.0",
                    "minimum_index_compatibility_version": "7.0.0",
                },
                "tagline": "You Know, for Search",
            },
        )

    async def _no_handler(self, request: web.Request) -> web.Response:
        reason = f"no handler found for uri [{request.path}] and method [{request.method}]"
        raise _RequestError(400, "illegal_argument_exception", reason)

    async def _count(self, request: web.Request) -> web.Response:
        name = request.match_info["index"]
        index = self._resolve(name)
        if index is None:
            raise _RequestError(404, "index_not_found_exception", f"no such index [{name}]")
        return self._json(request, {"count": len(index.docs)})

    async def _all_templates(self, request: web.Request) -> web.Response:
        return self._json(
            request,
            {
                "index_templates": [
                    {"name": n, "index_template": b} for n, b in sorted(self._templates.items())
                ]
            },
        )

    async def _index_template(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if request.method in {"PUT", "POST"}:
            body = self._json_body(await request.read())
            patterns = body.get("index_patterns")
            if isinstance(patterns, str):
                patterns = [patterns]
            if not patterns or not all(isinstance(p, str) for p in patterns):
                raise _RequestError(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: index patterns are missing;",
                )
            if request.query.get("create") == "true" and name in self._templates:
                raise _RequestError(
                    400, "illegal_argument_exception", f"index template [{name}] already exists"
                )
            self._templates[name] = {**body, "index_patterns": list(patterns)}
            return self._json(request, {"acknowledged": True})
        if name not in self._templates:
            if request.method == "HEAD":
                return self._empty(404)
            reason = f"index template matching [{name}] not found"
            raise _RequestError(404, "resource_not_found_exception", reason)
        if request.method == "HEAD":
            return self._empty(200)
        if request.method == "GET":
            return self._json(
                request, {"index_templates": [{"name": name, "index_template": self._templates[name]}]}
            )
        if request.method == "DELETE":
            del self._templates[name]
            return self._json(request, {"acknowledged": True})
        raise _method_not_allowed(request)

    def _data_stream_info(self, stream: _DataStream) -> dict[str, Any]:
        return {
            "name": stream.name,
            "timestamp_field": {"name": "@timestamp"},
            "indices": [{"index_name": stream.backing_index, "index_uuid": stream.backing_index}],
            "generation": 1,
            "status": "GREEN",
            "template": stream.template,
            "hidden": False,
            "system": False,
        }

    async def _all_data_streams(self, request: web.Request) -> web.Response:
        streams = [self._data_stream_info(s) for _, s in sorted(self._data_streams.items())]
        return self._json(request, {"data_streams": streams})

    async def _data_stream(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if request.method == "PUT":
            if name in self._data_streams or name in self._indices:
                raise _RequestError(
                    400, "resource_already_exists_exception", f"data_stream [{name}] already exists"
                )
            problem = _index_name_problem(name)
            if problem is not None:
                raise _RequestError(
                    400, "invalid_index_name_exception", f"Invalid index name [{name}], {problem}"
                )
            template = self._matching_template(name)
            if template is None or "data_stream" not in self._templates[template]:
                reason = f"no matching index template found for data stream [{name}]"
                raise _RequestError(400, "illegal_argument_exception", reason)
            self._create_data_stream(name, template)
            return self._json(request, {"acknowledged": True})
        stream = self._data_streams.get(name)
        if stream is None:
            raise _RequestError(404, "index_not_found_exception", f"no such index [{name}]")
        if request.method == "GET":
            return self._json(request, {"data_streams": [self._data_stream_info(stream)]})
        if request.method == "DELETE":
            del self._data_streams[name]
            self._indices.pop(stream.backing_index, None)
            return self._json(request, {"acknowledged": True})
        raise _method_not_allowed(request)

    def _matching_template(self, name: str) -> str | None:
        best: tuple[int, str] | None = None
        for template_name, body in self._templates.items():
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in body["index_patterns"]):
                priority = int(body.get("priority", 0))
                if best is None or priority > best[0]:
                    best = (priority, template_name)
        return None if best is None else best[1]

    def _create_data_stream(self, name: str, template: str) -> _DataStream:
        backing = f".ds-{name}-{datetime.now(UTC):%Y.%m.%d}-000001"
        stream = _DataStream(name, template, backing)
        self._data_streams[name] = stream
        self._indices[backing] = _Index(backing, self._max_documents)
        return stream

    async def _bulk(self, request: web.Request) -> web.Response:
        if request.method not in {"PUT", "POST"}:
            raise _method_not_allowed(request)
        started = time.perf_counter()
        body = await request.read()
        ops = self._parse_bulk(body, request.match_info.get("index"))
        items = [self._apply(op) for op in ops]
        statuses = tuple(next(iter(item.values()))["status"] for item in items)
        self._bulk_requests.append(BulkRequest(tuple((op.op, op.index) for op in ops), statuses, len(body)))
        took = int((time.perf_counter() - started) * 1000)
        errors = any(status >= 300 for status in statuses)
        return self._json(request, {"took": took, "errors": errors, "items": items})

    def _parse_bulk(self, body: bytes, path_index: str | None) -> list[_BulkOp]:
        if not body.strip():
            raise _RequestError(
                400, "action_request_validation_exception", "Validation Failed: 1: no requests added;"
            )
        if not body.endswith(b"\n"):
            raise _RequestError(
                400, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]"
            )
        lines = body.split(b"\n")[:-1]
        ops: list[_BulkOp] = []
        number = 0
        while number < len(lines):
            raw = lines[number].rstrip(b"\r")
            number += 1
            if not raw.strip():
                continue
            malformed = f"Malformed action/metadata line [{number}], expected START_OBJECT or END_OBJECT"
            try:
                action = json.loads(raw)
            except ValueError as exc:
                raise _RequestError(400, "x_content_parse_exception", f"{malformed}: {exc}") from exc
            if not isinstance(action, dict) or len(action) != 1:
                raise _RequestError(400, "illegal_argument_exception", malformed)
            op, meta = next(iter(action.items()))
            if op in {"update", "delete"}:
                raise _RequestError(
                    400,
                    "illegal_argument_exception",
                    f"FakeElasticsearch supports index and create actions, not [{op}]",
                )
            if op not in {"index", "create"}:
                reason = (
                    f"Malformed action/metadata line [{number}], expected field [create], [delete], "
                    f"[index] or [update] but found [{op}]"
                )
                raise _RequestError(400, "illegal_argument_exception", reason)
            if not isinstance(meta, dict):
                raise _RequestError(400, "illegal_argument_exception", malformed)
            unknown = sorted(set(meta) - _ACTION_PARAMS)
            if unknown:
                reason = f"Action/metadata line [{number}] contains an unknown parameter [{unknown[0]}]"
                raise _RequestError(400, "illegal_argument_exception", reason)
            index = meta.get("_index") or path_index
            if not isinstance(index, str) or not index:
                raise _RequestError(
                    400, "action_request_validation_exception", "Validation Failed: 1: index is missing;"
                )
            if number >= len(lines):
                reason = f"Validation Failed: 1: source is missing for the action on line [{number}];"
                raise _RequestError(400, "action_request_validation_exception", reason)
            source = lines[number].rstrip(b"\r")
            number += 1
            doc_id = meta.get("_id")
            ops.append(_BulkOp(op, index, None if doc_id is None else str(doc_id), source))
        return ops

    def _apply(self, op: _BulkOp) -> dict[str, Any]:
        def failed(status: int, error_type: str, reason: str) -> dict[str, Any]:
            error = {"type": error_type, "reason": reason, "index": op.index}
            return {op.op: {"_index": op.index, "_id": op.doc_id, "status": status, "error": error}}

        while self._item_failures and self._item_failures[0].remaining <= 0:
            self._item_failures.popleft()
        if self._item_failures:
            scripted = self._item_failures[0]
            scripted.remaining -= 1
            return failed(scripted.status, scripted.error_type, scripted.reason)
        problem = _index_name_problem(op.index)
        if problem is not None:
            return failed(400, "invalid_index_name_exception", f"Invalid index name [{op.index}], {problem}")
        try:
            doc = json.loads(op.source, parse_constant=_reject_constant)
        except ValueError as exc:
            return failed(400, "document_parsing_exception", f"[1:1] failed to parse: {exc}")
        if not isinstance(doc, dict):
            return failed(
                400, "document_parsing_exception", "[1:1] failed to parse: the document is not an object"
            )
        for rejection in self._rejections:
            if rejection.predicate(doc):
                return failed(rejection.status, rejection.error_type, rejection.reason)

        stream = self._data_streams.get(op.index)
        if stream is None and op.index not in self._indices:
            template = self._matching_template(op.index)
            if template is not None and "data_stream" in self._templates[template]:
                if op.op != "create":
                    reason = "only write ops with an op_type of create are allowed in data streams"
                    return failed(400, "illegal_argument_exception", reason)
                stream = self._create_data_stream(op.index, template)
            else:
                self._indices[op.index] = _Index(op.index, self._max_documents)
        if stream is not None:
            if op.op != "create":
                reason = "only write ops with an op_type of create are allowed in data streams"
                return failed(400, "illegal_argument_exception", reason)
            if "@timestamp" not in doc:
                reason = "[1:1] failed to parse: data stream timestamp field [@timestamp] is missing"
                return failed(400, "document_parsing_exception", reason)
            index = self._indices[stream.backing_index]
        else:
            index = self._indices[op.index]

        doc_id = op.doc_id if op.doc_id is not None else f"fake{next(self._ids):016d}"
        exists = doc_id in index.docs
        if exists and op.op == "create":
            reason = f"[{doc_id}]: version conflict, document already exists (current version [1])"
            return failed(409, "version_conflict_engine_exception", reason)
        index.docs[doc_id] = doc
        index.docs.move_to_end(doc_id)
        index.indexed += 1
        index.seq_no += 1
        while len(index.docs) > index.max_documents:
            index.docs.popitem(last=False)
            index.evicted += 1
        status = 200 if exists else 201
        return {
            op.op: {
                "_index": index.name,
                "_id": doc_id,
                "_version": 1,
                "result": "updated" if exists else "created",
                "_shards": {"total": 2, "successful": 1, "failed": 0},
                "_seq_no": index.seq_no - 1,
                "_primary_term": 1,
                "status": status,
            }
        }


def _method_not_allowed(request: web.Request) -> _RequestError:
    reason = f"Incorrect HTTP method for uri [{request.path}] and method [{request.method}]"
    return _RequestError(405, "method_not_allowed", reason)


def filter_answer(payload: object, filter_path: str) -> object:
    """``payload`` with only what ``filter_path`` names: ``"errors,items.*.status"`` keeps the
    ``errors`` field and each item's ``status``. An answer left empty is ``{}``, as Elasticsearch
    answers it."""
    paths = [part.split(".") for part in filter_path.split(",") if part]
    kept = _filtered(payload, paths)
    return {} if kept is None else kept


def _filtered(value: object, paths: list[list[str]]) -> object | None:
    if any(not path for path in paths):
        return value
    if isinstance(value, list):
        items = [kept for item in value if (kept := _filtered(item, paths)) is not None]
        return items or None
    if not isinstance(value, dict):
        return None
    out: dict[str, object] = {}
    for key, item in value.items():
        rest = [path[1:] for path in paths if fnmatch.fnmatchcase(key, path[0])]
        if rest:
            kept = _filtered(item, rest)
            if kept is not None:
                out[key] = kept
    return out or None
