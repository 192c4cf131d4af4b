"""nginx access logs over syslog (UDP) as Report records: ``mixer serve --syslog-listen HOST:PORT``.

nginx's ``access_log syslog:server=HOST:PORT`` sends one UDP datagram per request: a syslog header
(``<PRI>`` timestamp, host name, tag) and then the log line. With the JSON ``log_format`` of
deploy/nginx/nginx.conf (``escape=json``) each line is one JSON object, mapped to Istio attributes
by :func:`access_log_attributes`. Records are queued (at most ``max_queue``; more are dropped and
counted) and handed to :meth:`Runtime.report <mixer.runtime.Runtime.report>` in batches of up to
``batch_size``, at least every ``flush_interval`` seconds, as an Istio proxy batches its Reports.

A datagram that is not a JSON object after the syslog header, is larger than 64 KiB or holds a value
over a decoding limit is counted as malformed and dropped; a field whose value does not parse is left
out of its record (``mixer_syslog_invalid_fields_total``). Nothing a sender does stops the receiver.

Metrics (on the HTTP port's ``/metrics``): ``mixer_syslog_datagrams_total{result="accepted" |
"malformed" | "dropped"}``, ``mixer_syslog_invalid_fields_total``, ``mixer_syslog_queue_depth``,
and per batch ``mixer_requests_total{api="syslog", method="Report", code}`` with the runtime's
answer (``UNAVAILABLE`` when a handler was overloaded: those records are lost, as UDP loses them).

UDP is lossy by nature: this input is for telemetry that may miss a record, never for billing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import re
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import Counter, Gauge

from mixer.api._common import ServiceLimits
from mixer.api._envelope import CallFailure, Envelope, Lease, Unanswered
from mixer.api._json_attributes import AttributeConversionError, check_limits
from mixer.attributes import AttributeBag, AttributeValue
from mixer.runtime import yield_for

if TYPE_CHECKING:
    from mixer.api._address import ListenAddress
    from mixer.api._holder import RuntimeHolder
    from mixer.api._metrics import ServerMetrics

__all__ = [
    "API",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_QUEUE_BYTES",
    "MAX_DATAGRAM_BYTES",
    "SyslogFormatError",
    "SyslogReceiver",
    "access_log_attributes",
    "parse_datagram",
]

#: The ``api`` label of this input's metrics.
API: Final = "syslog"
#: An Istio 1.4 proxy's Report batching: up to 100 records or 1 s.
DEFAULT_BATCH_SIZE: Final = 100
DEFAULT_FLUSH_INTERVAL: Final = 1.0
DEFAULT_MAX_QUEUE: Final = 10_000
#: Datagram bytes waiting to be reported: 10,000 spoofed 64 KiB datagrams would be 640 MiB.
DEFAULT_MAX_QUEUE_BYTES: Final = 16 * 1024 * 1024
#: Larger than any UDP datagram nginx sends (its syslog lines are cut well below this).
MAX_DATAGRAM_BYTES: Final = 64 * 1024

_PRI: Final = re.compile(rb"<[0-9]{1,3}>")
_NUMBER: Final = re.compile(r"[+-]?[0-9]+(?:\.[0-9]*)?")
#: nginx logs an unset variable as "" with escape=json and as "-" otherwise.
_UNSET: Final = frozenset({"", "-"})


class SyslogFormatError(ValueError):
    """A datagram that does not hold a JSON access-log record."""


def parse_datagram(data: bytes) -> dict[str, Any]:
    """The JSON object of one datagram: an optional syslog header, then the object.

    The header is ``<PRI>`` followed by anything up to the first ``{`` (RFC 3164 timestamp, host
    name and tag, as nginx writes them); without a header the datagram must be the object alone.
    Bytes that are not UTF-8 (nginx passes them through) become U+FFFD.

    :raises SyslogFormatError: too large, no object, or not valid JSON.
    """
    if len(data) > MAX_DATAGRAM_BYTES:
        raise SyslogFormatError(f"datagram of {len(data)} bytes is over {MAX_DATAGRAM_BYTES}")
    start = 0
    if _PRI.match(data):
        start = data.find(b"{")
        if start < 0:
            raise SyslogFormatError("no JSON object after the syslog header")
    text = data[start:].decode("utf-8", errors="replace").strip()
    try:
        record = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise SyslogFormatError(f"not a JSON object: {exc}") from None
    if not isinstance(record, dict):
        raise SyslogFormatError("the message is JSON but not an object")
    return record


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class _Invalid(Exception):
    pass


def _text(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        raise _Invalid
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        raise _Invalid
    return None if value in _UNSET else value


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        raise _Invalid
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = _text(value)
        if text is None:
            return None
        if not _NUMBER.fullmatch(text):
            raise _Invalid
        number = float(text)
    if not math.isfinite(number):
        raise _Invalid
    return number


def _int(value: object) -> int | None:
    number = _number(value)
    if number is None:
        return None
    if not number.is_integer() or abs(number) >= 2**63:
        raise _Invalid
    return int(number)


def _seconds(value: object) -> timedelta | None:
    number = _number(value)
    if number is None:
        return None
    if number < 0 or number > 10**9:
        raise _Invalid
    return timedelta(seconds=number)


def _ip(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        # "unix:" for a Unix-socket client: no address, which is not an error of the record.
        if text.startswith("unix:"):
            return None
        raise _Invalid from None


def _epoch(value: object) -> datetime | None:
    number = _number(value)
    if number is None:
        return None
    try:
        return datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        raise _Invalid from None


def _iso8601(value: object) -> datetime | None:
    text = _text(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _Invalid from None
    if parsed.tzinfo is None:
        raise _Invalid
    return parsed


_Convert = Callable[[object], AttributeValue | None]

#: log_format field (the nginx variable's name) -> attribute, converter. Earlier fields of one
#: attribute win: ``service`` (a literal in the log_format) over ``server_name``.
_FIELDS: Final[tuple[tuple[str, str, _Convert], ...]] = (
    ("remote_addr", "source.ip", _ip),
    ("request_method", "request.method", _text),
    ("request_uri", "request.path", _text),
    ("uri", "request.url_path", _text),
    ("status", "response.code", _int),
    ("body_bytes_sent", "response.size", _int),
    ("bytes_sent", "response.total_size", _int),
    ("request_length", "request.total_size", _int),
    ("request_time", "response.duration", _seconds),
    ("http_user_agent", "request.useragent", _text),
    ("http_referer", "request.referer", _text),
    ("http_x_api_key", "request.api_key", _text),
    ("arg_api_key", "request.api_key", _text),
    ("host", "request.host", _text),
    ("request_id", "request.id", _text),
    ("scheme", "request.scheme", _text),
    ("service", "destination.service.name", _text),
    ("server_name", "destination.service.name", _text),
)
#: When the line was written: the end of the request. ``msec`` has milliseconds.
_END_FIELDS: Final[tuple[tuple[str, _Convert], ...]] = (("msec", _epoch), ("time_iso8601", _iso8601))


def access_log_attributes(
    record: Mapping[str, Any], limits: ServiceLimits
) -> tuple[dict[str, AttributeValue], int]:
    """The attributes of one nginx access-log record, and how many fields were left out as invalid.

    Fields (nginx variable names; values as strings or numbers, ``""`` and ``"-"`` meaning unset):
    ``remote_addr`` source.ip, ``request_method`` request.method, ``request_uri`` request.path,
    ``uri`` request.url_path (request.path too when there is no ``request_uri``), ``status``
    response.code, ``body_bytes_sent`` response.size, ``bytes_sent`` response.total_size,
    ``request_length`` request.total_size, ``request_time`` response.duration (seconds),
    ``http_user_agent`` request.useragent, ``http_referer`` request.referer, ``http_x_api_key``
    (else ``arg_api_key``) request.api_key, ``host`` request.host, ``request_id`` request.id,
    ``scheme`` request.scheme, ``service`` (else ``server_name``) destination.service.name,
    ``msec`` (else ``time_iso8601``) response.time, and request.time that minus ``request_time``;
    every ``http_NAME`` field also becomes header ``name`` (dashes for underscores) of
    request.headers, and ``request_id`` header ``x-request-id`` (nginx passes it on as such).
    Always: context.protocol ``"http"``, context.reporter.kind ``"inbound"``.

    :raises SyslogFormatError: a value over a decoding limit.
    """
    values: dict[str, AttributeValue] = {"context.protocol": "http", "context.reporter.kind": "inbound"}
    invalid = 0
    for field, attribute, convert in _FIELDS:
        if attribute in values or field not in record:
            continue
        try:
            value = convert(record[field])
        except _Invalid:
            invalid += 1
            continue
        if value is not None:
            values[attribute] = value
    if "request.path" not in values and "request.url_path" in values:
        values["request.path"] = values["request.url_path"]
    headers = _headers(record)
    if headers:
        values["request.headers"] = headers
    for field, convert in _END_FIELDS:
        if field not in record:
            continue
        try:
            end = convert(record[field])
        except _Invalid:
            invalid += 1
            continue
        if isinstance(end, datetime):
            values["response.time"] = end
            duration = values.get("response.duration")
            values["request.time"] = end - duration if isinstance(duration, timedelta) else end
            break
    try:
        check_limits(values, limits, where="access log record")
    except AttributeConversionError as exc:
        raise SyslogFormatError(str(exc)) from None
    return values, invalid


def _headers(record: Mapping[str, Any]) -> dict[str, str]:
    # nginx's $http_NAME is the request header NAME with dashes as underscores. nginx hands
    # $request_id to the service as X-Request-ID (deploy/nginx/nginx.conf), so it is one too.
    headers: dict[str, str] = {}
    for field, value in record.items():
        if field.startswith("http_") and len(field) > 5 and isinstance(value, str) and value not in _UNSET:
            headers[field[5:].replace("_", "-").lower()] = value
    request_id = record.get("request_id")
    if isinstance(request_id, str) and request_id not in _UNSET:
        headers.setdefault("x-request-id", request_id)
    return headers


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, receiver: SyslogReceiver) -> None:
        self._receiver = receiver

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._receiver.feed(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors on an unconnected UDP socket say nothing about the datagrams received.
        logging.getLogger("mixer.api.syslog").debug("syslog socket error: %s", exc)


class SyslogReceiver:
    """The syslog UDP input of one server process.

    :meth:`start` binds the socket and starts the flusher; :meth:`stop` closes the socket and
    reports what is still queued (call it before the runtime shuts down). :meth:`feed` takes one
    datagram, whatever transport it came by.
    """

    def __init__(
        self,
        holder_ref: Callable[[], RuntimeHolder | None],
        metrics: ServerMetrics,
        limits: ServiceLimits,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        logger: logging.Logger | None = None,
    ) -> None:
        if batch_size < 1 or max_queue < 1 or flush_interval <= 0:
            raise ValueError("batch_size and max_queue must be at least 1, flush_interval positive")
        self._limits = limits
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_queue = max_queue
        self._max_queue_bytes = max_queue_bytes
        #: What each queued record came in as, in bytes (its datagram's size), and their sum.
        self._sizes: deque[int] = deque()
        self._pending_bytes = 0
        self._log = logger if logger is not None else logging.getLogger("mixer.api.syslog")
        self._pending: deque[AttributeBag] = deque()
        self._wakeup = asyncio.Event()
        self._transport: asyncio.DatagramTransport | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._report_metrics = metrics.method(API, "Report")
        # Batches arrive without a call: nothing to admit, no caller to answer, nothing in flight.
        self._calls: Envelope[None, None] = Envelope(
            API, metrics, None, holder_ref, Unanswered(self._log), track=False
        )
        registry = metrics.registry
        datagrams = Counter(
            "mixer_syslog_datagrams",
            "Syslog datagrams received, by what became of them",
            ["result"],
            registry=registry,
        )
        self._accepted = datagrams.labels("accepted")
        self._malformed = datagrams.labels("malformed")
        self._dropped = datagrams.labels("dropped")
        self._invalid_fields = Counter(
            "mixer_syslog_invalid_fields",
            "Access-log fields left out of their record because the value did not parse",
            registry=registry,
        )
        depth = Gauge("mixer_syslog_queue_depth", "Syslog records waiting to be reported", registry=registry)
        depth.set_function(lambda: len(self._pending))

    @property
    def queued(self) -> int:
        return len(self._pending)

    def feed(self, data: bytes) -> None:
        """Take one datagram: queue its record, or count it as malformed or dropped."""
        try:
            values, invalid = access_log_attributes(parse_datagram(data), self._limits)
        except SyslogFormatError as exc:
            self._malformed.inc()
            self._report_metrics.decode_errors.inc()
            self._log.debug("malformed syslog datagram dropped: %s", exc)
            return
        if invalid:
            self._invalid_fields.inc(invalid)
        size = len(data)
        if len(self._pending) >= self._max_queue or self._pending_bytes + size > self._max_queue_bytes:
            self._dropped.inc()
            return
        self._pending.append(AttributeBag(values))
        self._sizes.append(size)
        self._pending_bytes += size
        self._accepted.inc()
        if len(self._pending) >= self._batch_size or 2 * self._pending_bytes >= self._max_queue_bytes:
            self._wakeup.set()

    async def start(self, address: ListenAddress, *, reuse_port: bool = False) -> ListenAddress:
        """Bind ``address`` (port 0: a free one) and start reporting; the bound address.

        :raises OSError: the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(address.host, address.port), reuse_port=reuse_port
        )
        self._transport = transport
        self._flusher = loop.create_task(self._run())
        return address.with_port(int(transport.get_extra_info("sockname")[1]))

    async def stop(self) -> None:
        """Stop receiving and report what is queued. Idempotent."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_interval):
                    await self._wakeup.wait()
            self._wakeup.clear()
            # A full queue is many batches: the loop gets a turn between two of them.
            pending = self._pending
            while pending:
                started = perf_counter()
                self._report(self._next_batch())
                if pending:
                    await yield_for(perf_counter() - started)

    def flush(self) -> None:
        """Report everything queued now, in batches of at most ``batch_size``."""
        while self._pending:
            self._report(self._next_batch())

    def _next_batch(self) -> list[AttributeBag]:
        pending, sizes = self._pending, self._sizes
        count = min(self._batch_size, len(pending))
        self._pending_bytes -= sum(sizes.popleft() for _ in range(count))
        return [pending.popleft() for _ in range(count)]

    def _report(self, batch: list[AttributeBag]) -> None:
        self._calls.run_now(self._report_metrics, "syslog Report", None, self._report_batch, batch)

    def _report_batch(self, lease: Lease, _: None, batch: list[AttributeBag]) -> None:
        status = lease.runtime().report(batch).status
        if not status.ok:
            self._log.debug("syslog Report of %d records: %s", len(batch), status.message)
            raise CallFailure(status.code, status.message)
