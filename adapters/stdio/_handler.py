"""The stdio handler: encodes report instances to lines and writes them off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.stdio._config import Level, LogStream, StdioConfig
from adapters.stdio._sinks import RotatingFileSink, Sink, StreamSink
from mixer import HandlerOverloaded, ReportBatch, ReportHandler
from mixer.attributes import format_duration, to_jsonable
from mixer.cache import ByteLRU
from mixer.templates import Instance, LogEntryInstance, MetricInstance, mixer_instance_name

#: Lines waiting to be written; past this, report batches are refused and counted as dropped.
DEFAULT_MAX_BUFFERED_LINES = 10_000
#: Bytes of lines waiting to be written (UTF-8 length estimated by characters); past this too,
#: report batches are refused and counted as dropped.
DEFAULT_MAX_BUFFERED_BYTES = 32 * 1024 * 1024
#: Bytes of lines kept for reuse by the other encoders of the same log entry.
SHARED_LINES_MAX_BYTES = 8 * 1024 * 1024
#: Seconds between writes when the buffer stays below half full.
DEFAULT_FLUSH_INTERVAL = 0.2

_LEVEL_NAMES = {Level.INFO: "info", Level.WARNING: "warn", Level.ERROR: "error"}


def format_time(value: datetime) -> str:
    """Mixer's stdio time: RFC 3339 in UTC with microseconds (``2019-01-02T15:04:05.000000Z``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset():
        value = value.astimezone(UTC)
    # isoformat is several times faster than strftime; every access log line has two times.
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _ip_text(value: Any) -> str:
    return str(value)


# By exact type first: the common attribute types skip to_jsonable's chain of isinstance checks.
_JSON_FORMS: dict[type, Callable[[Any], Any]] = {
    datetime: format_time,
    timedelta: format_duration,
    ipaddress.IPv4Address: _ip_text,
    ipaddress.IPv6Address: _ip_text,
}


def _json_default(value: Any) -> Any:
    form = _JSON_FORMS.get(type(value))
    if form is not None:
        return form(value)
    if isinstance(value, datetime):
        return format_time(value)
    return to_jsonable(value)


_ENCODE = json.JSONEncoder(default=_json_default, ensure_ascii=False, separators=(",", ":")).encode


def _dumps(value: dict[str, Any]) -> str:
    return _ENCODE(value)


class _SharedLines:
    """Lines already written for log entries, shared by every encoder in the process.

    One access log entry usually goes to several handlers (stdio, Kafka, Elasticsearch), each of
    which writes this same line: the second and later encoders of an instance reuse the first's
    text. Entries hold the instance itself, so its id cannot be reused while cached. The bound is
    in bytes: an entry keeps its line and its instance's values (about as large again) alive, and
    callers choose how long those are; the least recently used go first.
    """

    def __init__(self, max_bytes: int = SHARED_LINES_MAX_BYTES) -> None:
        self._lines: ByteLRU[tuple[int, Any], tuple[Instance, str | None]] = ByteLRU(
            max_bytes, size=_shared_line_size, name="stdio.shared_lines"
        )

    @property
    def cache(self) -> ByteLRU[tuple[int, Any], tuple[Instance, str | None]]:
        return self._lines

    @property
    def hits(self) -> int:
        return self._lines.hits

    @property
    def evicted(self) -> int:
        return self._lines.evictions

    def get(
        self,
        instance: LogEntryInstance,
        settings: Any,
        encode: Callable[[LogEntryInstance], str | None],
    ) -> str | None:
        key = (id(instance), settings)
        cached = self._lines.get(key)
        if cached is not None and cached[0] is instance:
            return cached[1]
        line = encode(instance)
        self._lines.put(key, (instance, line))
        return line


def _shared_line_size(key: tuple[int, Any], value: tuple[Instance, str | None]) -> int:
    # The line, and the instance's values it was made of (about the line's size again); walking
    # the instance would cost more than encoding it.
    line = value[1]
    return 2 * len(line) if line is not None else 0


_shared_lines = _SharedLines()
_SETTINGS_IDS: dict[tuple[Any, ...], int] = {}


class LineEncoder:
    """Turns logentry and metric instances into Mixer's stdio lines (zap's JSON or console form).

    JSON: ``{"level", "time", "instance", ...fields}`` with the fields sorted; a logentry's fields
    are its variables (absent ones left out), a metric's are ``value`` then its dimensions. Field
    names that clash with level, time or instance are dropped.
    """

    def __init__(self, config: StdioConfig, now: Callable[[], datetime]) -> None:
        self._json = config.output_as_json
        self._severity = config.severity_levels
        self._metric_level = config.metric_level
        self._min_level = config.output_level
        self._now = now
        self._redact = config.redact
        # Encoders with equal settings write equal lines for one timestamped log entry; a small
        # int stands for the settings so the cache key hashes cheaply.
        settings = (self._json, tuple(sorted(self._severity.items())), self._min_level, self._redact)
        self._settings = _SETTINGS_IDS.setdefault(settings, len(_SETTINGS_IDS))

    def encode(self, instance: Instance) -> str | None:
        """The line for ``instance``, or None when it is below ``output_level`` or of no template
        this adapter writes."""
        if isinstance(instance, LogEntryInstance):
            if instance.timestamp is None:
                return self._log_line(instance, self._now())
            return _shared_lines.get(instance, self._settings, self._log_line)
        if isinstance(instance, MetricInstance):
            if self._metric_level < self._min_level:
                return None
            fields = {"value": instance.value, **dict(sorted(instance.dimensions.items()))}
            if self._redact is not None:
                fields = self._redact.apply(fields)
            name = mixer_instance_name(instance.name, instance.template)
            return self._line(self._metric_level, self._now(), name, fields)
        return None

    def _log_line(self, instance: LogEntryInstance, when: datetime | None = None) -> str | None:
        level = self._severity.get(instance.severity or "", Level.INFO)
        if level < self._min_level:
            return None
        fields = {k: v for k, v in sorted(instance.variables.items()) if v is not None}
        if self._redact is not None:
            fields = self._redact.apply(fields)
        name = mixer_instance_name(instance.name, instance.template)  # newlog.instance.istio-system
        return self._line(level, when or instance.timestamp or self._now(), name, fields)

    def _line(self, level: Level, when: datetime, name: str, fields: dict[str, Any]) -> str:
        if self._json:
            record: dict[str, Any] = {
                "level": _LEVEL_NAMES[level],
                "time": format_time(when),
                "instance": name,
            }
            for key, value in fields.items():
                record.setdefault(key, value)
            return _dumps(record)
        return "\t".join((format_time(when), _LEVEL_NAMES[level], name, _dumps(fields)))


def make_sink(config: StdioConfig) -> Sink:
    stream = config.stream
    if stream is LogStream.STDOUT:
        return StreamSink("stdout")
    if stream is LogStream.STDERR:
        return StreamSink("stderr")
    return RotatingFileSink(
        Path(config.output_path),
        max_bytes=config.max_bytes,
        max_backups=config.max_backups_before_rotation,
        max_age_days=config.max_days_before_rotation,
    )


class StdioHandler(ReportHandler):
    """Buffers encoded lines (bounded) and writes them from a worker thread.

    ``handle_report`` only encodes and appends. A task started by :meth:`start` writes the buffer
    every ``flush_interval`` seconds, or sooner once it is half full; :meth:`shutdown` writes what
    is left. A batch that does not fit is refused with :class:`HandlerOverloaded` and its lines
    are counted in ``dropped``, as are lines a failed write lost (``write_errors``).
    """

    def __init__(
        self,
        config: StdioConfig,
        logger: logging.Logger,
        *,
        name: str = "stdio",
        max_buffered_lines: int = DEFAULT_MAX_BUFFERED_LINES,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sink: Sink | None = None,
    ) -> None:
        self.name = name
        self._logger = logger
        self._encoder = LineEncoder(config, now)
        self.sink = sink if sink is not None else make_sink(config)
        self._max_lines = max_buffered_lines
        self._max_bytes = max_buffered_bytes
        self._buffered_bytes = 0
        self._interval = flush_interval
        self._lines: list[str] = []
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Lines refused (buffer full or handler shut down) or lost to failed writes.
        self.dropped = 0
        self.written = 0
        self.write_errors = 0

    @property
    def buffered(self) -> int:
        return len(self._lines)

    def handle_report(self, batch: ReportBatch) -> None:
        if self._closed:
            self.dropped += len(batch.instances)
            raise HandlerOverloaded(f"{self.name} is shut down")
        lines = [line for instance in batch.instances if (line := self._encoder.encode(instance)) is not None]
        size = sum(map(len, lines))
        if len(self._lines) + len(lines) > self._max_lines or self._buffered_bytes + size > self._max_bytes:
            self.dropped += len(lines)
            waiting = f"{len(self._lines)} lines ({self._buffered_bytes} bytes)"
            raise HandlerOverloaded(f"{self.name}: {waiting} are waiting to be written")
        self._lines.extend(lines)
        self._buffered_bytes += size
        if 2 * len(self._lines) >= self._max_lines or 2 * self._buffered_bytes >= self._max_bytes:
            self._wake.set()

    async def flush(self) -> None:
        """Write every buffered line now."""
        async with self._write_lock:
            lines, self._lines = self._lines, []
            self._buffered_bytes = 0
            if not lines:
                return
            try:
                await asyncio.to_thread(self.sink.write, lines)
            except (OSError, ValueError) as exc:  # ValueError: a stream that cannot encode the text
                self.write_errors += 1
                self.dropped += len(lines)
                # One line per burst of failures, not one per flush.
                if self.write_errors == 1 or self.write_errors % 100 == 0:
                    self._logger.warning(
                        "%s: write failed (%d so far): %s", self.name, self.write_errors, exc
                    )
            else:
                self.written += len(lines)

    async def _flush_forever(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    async def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._flush_forever(), name=f"{self.name} flush"
            )

    async def shutdown(self, timeout: float) -> None:
        if self._closed and self._task is None:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        task, self._task = self._task, None
        if task is not None:
            self._wake.set()
            _, pending = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
            for unfinished in pending:
                unfinished.cancel()
        try:
            await asyncio.wait_for(self.flush(), max(0.0, deadline - loop.time()))
            await asyncio.wait_for(asyncio.to_thread(self.sink.close), max(0.0, deadline - loop.time()))
        except TimeoutError:
            self.dropped += len(self._lines)
            self._lines = []
            self._buffered_bytes = 0
            self._logger.warning("%s: output not flushed within %.3fs", self.name, timeout)
