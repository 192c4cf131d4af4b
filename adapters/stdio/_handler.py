"""The stdio handler: encodes report instances to lines and writes them off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from adapters.stdio._config import LogStream, StdioConfig
from adapters.stdio._sinks import RotatingFileSink, Sink, StreamSink
from mixer import HandlerOverloaded, ReportBatch, ReportHandler, encoding
from mixer.encoding import SHARED_LINES_MAX_BYTES, SharedLines, format_time, shared_lines

__all__ = ["SHARED_LINES_MAX_BYTES", "LineEncoder", "StdioHandler", "format_time", "make_sink"]

#: Lines waiting to be written; past this, report batches are refused and counted as dropped.
DEFAULT_MAX_BUFFERED_LINES = 10_000
#: Bytes of lines waiting to be written; past this too, report batches are refused and counted
#: as dropped.
DEFAULT_MAX_BUFFERED_BYTES = 32 * 1024 * 1024
#: Seconds between writes when the buffer stays below half full.
DEFAULT_FLUSH_INTERVAL = 0.2

# The encoders are shared with the Kafka and Elasticsearch adapters (mixer.encoding); the old
# private names stay importable.
_shared_lines = shared_lines
_SharedLines = SharedLines


class LineEncoder(encoding.LineEncoder):
    """:class:`mixer.encoding.LineEncoder` with the stdio adapter's params."""

    def __init__(self, config: StdioConfig, now: Callable[[], datetime]) -> None:
        super().__init__(
            now,
            as_json=config.output_as_json,
            severity_levels=config.severity_levels,
            metric_level=config.metric_level,
            output_level=config.output_level,
            redact=config.redact,
        )


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
        self._lines: list[bytes] = []
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
        encode = self._encoder.encode_bytes
        lines = [line for instance in batch.instances if (line := encode(instance)) is not None]
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
