"""FakeZipkin: a Zipkin v2 span collector on 127.0.0.1 that checks JSON spans strictly, for tests.

``POST /api/v2/spans`` takes a JSON array of v2 spans (``Content-Type: application/json``,
optionally ``Content-Encoding: gzip``) and answers 202, as Zipkin does. The whole request is
refused with 400 and a reason naming the span and field (``spans[1].id: ...``) when any span
breaks the v2 model, more strictly than Zipkin itself so that encoder mistakes show:

- only the v2 fields (``traceId id parentId name kind timestamp duration debug shared
  localEndpoint remoteEndpoint annotations tags``); ``traceId`` 16 or 32 lowercase hex, ``id``
  and ``parentId`` 16, none all zeros; ``kind`` one of CLIENT, SERVER, PRODUCER, CONSUMER;
- ``timestamp`` an integer count of microseconds between 2000 and 2100 (milliseconds or
  nanoseconds fall outside), ``duration`` an integer of at least 1;
- endpoints hold only ``serviceName`` (string), ``ipv4``/``ipv6`` (valid addresses of that
  family) and ``port`` (0..65535); ``tags`` map strings to strings; ``debug``/``shared`` booleans.

Scripted answers: :meth:`FakeZipkin.fail_next` (a status, default 503, for the next N requests,
optionally with ``Retry-After``). Valid spans are kept in :attr:`FakeZipkin.spans`.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import re
import socket
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web

__all__ = ["SPANS_PATH", "FakeZipkin", "ReceivedPost", "span_problem"]

SPANS_PATH = "/api/v2/spans"
_KINDS = frozenset({"CLIENT", "SERVER", "PRODUCER", "CONSUMER"})
_FIELDS = frozenset(
    {
        "traceId", "id", "parentId", "name", "kind", "timestamp", "duration", "debug", "shared",
        "localEndpoint", "remoteEndpoint", "annotations", "tags",
    }
)  # fmt: skip
_ENDPOINT_FIELDS = frozenset({"serviceName", "ipv4", "ipv6", "port"})
_MIN_MICROS = 946_684_800 * 1_000_000  # 2000-01-01
_MAX_MICROS = 4_102_444_800 * 1_000_000  # 2100-01-01
_MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReceivedPost:
    """One accepted POST: its headers, whether the body came gzipped, and its spans."""

    headers: Mapping[str, str]
    gzipped: bool
    spans: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    retry_after: str | None
    body: str


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _hex_id(value: object, lengths: tuple[int, ...]) -> str:
    if not isinstance(value, str):
        return "must be a string"
    if len(value) not in lengths or not re.fullmatch(r"[0-9a-f]+", value):
        return f"{value!r} must be {' or '.join(map(str, lengths))} lowercase hex characters"
    if not value.strip("0"):
        return f"{value!r} is all zeros"
    return ""


def _endpoint_problem(value: object) -> str:
    if not isinstance(value, dict):
        return "must be an object"
    unknown = set(value) - _ENDPOINT_FIELDS
    if unknown:
        return f"unknown fields {sorted(unknown)}"
    if "serviceName" in value and not isinstance(value["serviceName"], str):
        return "serviceName must be a string"
    for key, family in (("ipv4", ipaddress.IPv4Address), ("ipv6", ipaddress.IPv6Address)):
        if key in value:
            try:
                family(value[key])
            except (ValueError, TypeError):
                return f"{key} {value[key]!r} is not an {key} address"
    if "port" in value and not (_is_int(value["port"]) and 0 <= value["port"] <= 65535):
        return "port must be an integer 0..65535"
    return ""


def span_problem(span: object) -> str:
    """What makes ``span`` an invalid Zipkin v2 span (``"field: reason"``), or ``""``."""
    if not isinstance(span, dict):
        return "must be an object"
    unknown = set(span) - _FIELDS
    if unknown:
        return f"unknown fields {sorted(unknown)}"
    for key, lengths in (("traceId", (16, 32)), ("id", (16,))):
        if key not in span:
            return f"{key}: required"
        problem = _hex_id(span[key], lengths)
        if problem:
            return f"{key}: {problem}"
    if "parentId" in span:
        problem = _hex_id(span["parentId"], (16,))
        if problem:
            return f"parentId: {problem}"
    if "name" in span and not isinstance(span["name"], str):
        return "name: must be a string"
    if "kind" in span and span["kind"] not in _KINDS:
        return f"kind: {span['kind']!r} is not one of {sorted(_KINDS)}"
    if "timestamp" in span:
        stamp = span["timestamp"]
        if not _is_int(stamp) or not _MIN_MICROS <= stamp < _MAX_MICROS:
            return f"timestamp: {stamp!r} is not an integer count of epoch microseconds"
    if "duration" in span and not (_is_int(span["duration"]) and span["duration"] >= 1):
        return f"duration: {span['duration']!r} is not an integer of at least 1 microsecond"
    for key in ("debug", "shared"):
        if key in span and not isinstance(span[key], bool):
            return f"{key}: must be a boolean"
    for key in ("localEndpoint", "remoteEndpoint"):
        if key in span:
            problem = _endpoint_problem(span[key])
            if problem:
                return f"{key}: {problem}"
    tags = span.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        return "tags: must map strings to strings"
    annotations = span.get("annotations", [])
    if not isinstance(annotations, list) or not all(
        isinstance(a, dict)
        and set(a) == {"timestamp", "value"}
        and _is_int(a["timestamp"])
        and isinstance(a["value"], str)
        for a in annotations
    ):
        return "annotations: must be a list of {timestamp, value}"
    return ""


class FakeZipkin:
    """A Zipkin v2 collector on ``127.0.0.1:<free port>``; use ``async with`` or start/stop."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._script: deque[_Failure] = deque()
        self._arrived = asyncio.Condition()
        self.port = 0
        #: Accepted requests, in arrival order.
        self.posts: list[ReceivedPost] = []
        #: Every POST received, answered 202 or not.
        self.calls = 0
        #: The reasons of the 400 answers given, in order.
        self.rejections: list[str] = []

    @property
    def url(self) -> str:
        """The spans endpoint, for a zipkin handler's ``url`` param."""
        return f"http://127.0.0.1:{self.port}{SPANS_PATH}"

    @property
    def spans(self) -> list[dict[str, Any]]:
        return [span for post in self.posts for span in post.spans]

    async def start(self) -> None:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post(SPANS_PATH, self._post)
        # Raw bodies, so the fake can tell whether a request came gzipped.
        runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def fail_next(
        self,
        status: int = 503,
        *,
        times: int = 1,
        retry_after: str | None = None,
        body: str = "scripted failure",
    ) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``Retry-After`` when given)."""
        self._script.extend(_Failure(status, retry_after, body) for _ in range(times))

    async def wait_for_spans(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The stored spans once there are at least ``count``.

        :raises TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.spans) >= count)
        return self.spans

    def _reject(self, reason: str) -> web.Response:
        self.rejections.append(reason)
        return web.Response(status=400, text=reason)

    async def _post(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self._script:
            failure = self._script.popleft()
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            return web.Response(status=failure.status, text=failure.body, headers=headers)
        if request.content_type != "application/json":
            return web.Response(status=415, text=f"unsupported content type {request.content_type!r}")
        body = await request.read()
        encoding = request.headers.get("Content-Encoding", "").lower()
        if encoding not in ("", "identity", "gzip"):
            return web.Response(status=415, text=f"unsupported content encoding {encoding!r}")
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            spans = json.loads(body)
        except (OSError, EOFError, ValueError) as exc:
            return self._reject(f"malformed body: {exc}")
        if not isinstance(spans, list):
            return self._reject("the body must be a JSON array of spans")
        for i, span in enumerate(spans):
            problem = span_problem(span)
            if problem:
                return self._reject(f"spans[{i}].{problem}")
        self.posts.append(ReceivedPost(dict(request.headers), encoding == "gzip", spans))
        async with self._arrived:
            self._arrived.notify_all()
        return web.Response(status=202)
