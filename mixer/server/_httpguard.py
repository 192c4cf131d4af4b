"""Limits on the HTTP listener's connections that aiohttp does not have of its own.

- A connection cap: past ``max_connections`` open connections a new one is answered 503 and
  closed at once, and counted in ``mixer_http_connections_refused_total``.
- A header timeout: a request's header must be complete within ``header_timeout`` of the
  connection opening (for the first request) or of the first byte of the next one (on a
  keep-alive connection); otherwise the connection is answered 408 and closed. An idle
  keep-alive connection is aiohttp's ``keepalive_timeout``'s to close.
- A body timeout: while a request is handled, its body must have arrived within
  ``body_timeout`` of its header; otherwise the connection is closed (the handler sees the
  connection lost).
- Malformed requests (aiohttp's parser refuses them and answers 400 itself) and timeouts are
  counted in ``mixer_http_bad_requests_total{reason}`` and logged once per ``log_interval`` as
  one WARNING line without a traceback, instead of aiohttp's traceback at ERROR for each.

:class:`HttpGuard` wraps aiohttp's protocol factory (``AppRunner.server``), so everything the
listener accepts goes through it; :meth:`HttpGuard.middleware` tells it when a request's header
is complete and its handling ends, and :meth:`HttpGuard.protocol_log` is what aiohttp logs to.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["HttpGuard", "HttpLimits"]

_REFUSED: Final = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_TIMED_OUT: Final = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
# A header timer that fires this close to its deadline counts as on time (the loop may wake a
# clock tick early).
_TIMER_SLACK: Final = 0.001
#: Characters of a parser message kept in the log line (it quotes what the client sent).
_DETAIL_MAX: Final = 200
REASONS: Final = ("malformed", "header_timeout", "body_timeout")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpLimits:
    """The listener's limits (``mixer serve --http-*``); times in seconds."""

    __slots__ = ("body_timeout", "header_timeout", "log_interval", "max_connections")

    def __init__(
        self,
        *,
        max_connections: int,
        header_timeout: float,
        body_timeout: float,
        log_interval: float = 10.0,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.log_interval = log_interval


class _Summary:
    """One WARNING line per ``interval`` for a kind of bad request, with the count since the last."""

    def __init__(self, logger: logging.Logger, interval: float, clock: Callable[[], float]) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def note(self, reason: str, peer: str | None, detail: str) -> None:
        self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self._interval:
            return
        count = self._unlogged.pop(reason)
        self._last[reason] = now
        since = "" if last is None else f" in the last {now - last:.0f}s"
        self._log.warning(
            "HTTP %s: %d request(s)%s (latest from %s: %s); counted in mixer_http_bad_requests_total, "
            "logged at most once per %gs",
            reason.replace("_", " "),
            count,
            since,
            peer or "unknown",
            " ".join(detail[:_DETAIL_MAX].split()),
            self._interval,
        )


class _ProtocolLog:
    """What aiohttp's request handler logs to: parse errors are summarised, the rest passes through.

    aiohttp logs every request its parser refuses with ``logger.exception`` (a traceback at
    ERROR); those become counts and a line per interval. Anything else (a bug in aiohttp or in a
    handler outside the API's own error handling) keeps its traceback.
    """

    def __init__(self, guard: HttpGuard, logger: logging.Logger) -> None:
        self._guard = guard
        self._log = logger

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            peer = args[0] if args and isinstance(args[0], str) else None
            self._guard.bad_request("malformed", peer, str(exc_info.message or exc_info))
            return
        self._log.error(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        if isinstance(exc_info, HttpProcessingError):
            # A first request that is not HTTP at all (aiohttp's own debug case): count it too.
            peer = args[0] if args and isinstance(args[0], str) else None
            self._guard.bad_request("malformed", peer, str(exc_info.message or exc_info))
            return
        self._log.debug(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


class HttpGuard:
    """The connection cap and timeouts of one HTTP listener, and its counters."""

    def __init__(
        self,
        limits: HttpLimits,
        registry: CollectorRegistry,
        *,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._log = logger if logger is not None else logging.getLogger("mixer.server.http")
        self._summary = _Summary(self._log, limits.log_interval, clock)
        self.open = 0
        self._by_handler: dict[object, _Connection] = {}
        self.bad_requests = Counter(
            "mixer_http_bad_requests",
            "HTTP requests refused before a handler: malformed, or header or body not received in time",
            ["reason"],
            registry=registry,
        )
        for reason in REASONS:
            self.bad_requests.labels(reason)
        self.refused = Counter(
            "mixer_http_connections_refused",
            "HTTP connections closed at once because --http-max-connections were open",
            registry=registry,
        )
        Gauge("mixer_http_connections", "Open HTTP connections", registry=registry).set_function(
            lambda: self.open
        )
        self.protocol_log = _ProtocolLog(self, self._log)

    def bad_request(self, reason: str, peer: str | None, detail: str) -> None:
        self.bad_requests.labels(reason).inc()
        self._summary.note(reason, peer, detail)

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` around aiohttp's (``runner.server``)."""

        def make() -> asyncio.Protocol:
            return _Connection(self, inner())

        return make

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        connection = self._by_handler.get(request.protocol)
        if connection is None:
            return await handler(request)
        connection.request_started(request)
        try:
            return await handler(request)
        finally:
            connection.request_finished()

    def _register(self, connection: _Connection) -> None:
        self.open += 1
        self._by_handler[connection.inner] = connection

    def _unregister(self, connection: _Connection) -> None:
        self.open -= 1
        self._by_handler.pop(connection.inner, None)


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the cap and the timers around it."""

    def __init__(self, guard: HttpGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self._refused = False
        # When the header awaited must be complete (loop time); None while a request is handled
        # or between requests. Its timer is lazy: it stays armed across requests and, when it
        # fires early, re-arms for the current deadline. Cancelling it and arming a new one for
        # every request cost more than a wake-up once per header timeout that finds nothing due.
        self._header_due: float | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._in_request = False
        self._peer: str | None = None

    # -- asyncio.Protocol, delegated -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, so no isinstance).
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) and peer else None
        guard = self.guard
        if guard.open >= guard.limits.max_connections:
            self._refused = True
            guard.refused.inc()
            transport.write(_REFUSED)
            transport.close()
            return
        guard._register(self)
        self._await_header()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._header_due = None
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None
        self.guard._unregister(self)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_request and self._header_due is None:
            # The first byte of the next request on a kept-alive connection.
            self._await_header()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- what the middleware says ------------------------------------------------------------------

    def request_started(self, request: web.Request) -> None:
        self._in_request = True
        self._header_due = None
        if request.body_exists and not request.content.is_eof():
            self._cancel_body_timer()
            self._body_timer = asyncio.get_running_loop().call_later(
                self.guard.limits.body_timeout, lambda: self._body_timed_out(request)
            )

    def request_finished(self) -> None:
        self._in_request = False
        self._cancel_body_timer()

    # -- timers --------------------------------------------------------------------------------------

    def _await_header(self) -> None:
        loop = asyncio.get_running_loop()
        due = self._header_due = loop.time() + self.guard.limits.header_timeout
        if self._header_timer is None:
            self._header_timer = loop.call_at(due, self._header_check)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _header_check(self) -> None:
        self._header_timer = None
        due = self._header_due
        transport = self.transport
        if due is None or transport is None or transport.is_closing() or self._in_request:
            return
        loop = asyncio.get_running_loop()
        if due - loop.time() > _TIMER_SLACK:
            # Armed for an earlier request's header: the current one has until ``due``.
            self._header_timer = loop.call_at(due, self._header_check)
            return
        self.guard.bad_request(
            "header_timeout", self._peer, f"no complete header within {self.guard.limits.header_timeout:g}s"
        )
        transport.write(_TIMED_OUT)
        transport.close()

    def _body_timed_out(self, request: web.Request) -> None:
        self._body_timer = None
        transport = self.transport
        if transport is None or transport.is_closing() or request.content.is_eof():
            return
        self.guard.bad_request(
            "body_timeout", self._peer, f"body not received within {self.guard.limits.body_timeout:g}s"
        )
        # A handler is reading the body: no answer can be written in its place, so the connection
        # goes and the handler sees it lost.
        transport.abort()
