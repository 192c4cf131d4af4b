"""The stdio adapter: Mixer's JSON lines, levels, buffering off the event loop, and rotation."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import os
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.stdio import ADAPTER, Level, LogStream, StdioConfig
from adapters.stdio._handler import StdioHandler, format_time
from adapters.stdio._sinks import RotatingFileSink
from mixer import HandlerEnv, HandlerOverloaded, ReportBatch
from mixer.templates import Instance, LogEntryInstance, MetricInstance, TraceSpanInstance

_LOG = logging.getLogger("test.stdio")
_NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def _handler(params: dict[str, Any], **kwargs: Any) -> StdioHandler:
    return StdioHandler(StdioConfig.model_validate(params), _LOG, now=lambda: _NOW, **kwargs)


def _batch(*instances: Instance) -> ReportBatch:
    return ReportBatch("stdio.istio-system", list(instances))


def _access_log(**variables: Any) -> LogEntryInstance:
    return LogEntryInstance(
        "accesslog.logentry.istio-system",
        variables=variables,
        timestamp=datetime(2019, 1, 2, 15, 4, 5, 250000, tzinfo=timezone(timedelta(hours=2))),
        severity="warning",
    )


def _read_json_lines(*paths: Path) -> list[dict[str, Any]]:
    records = []
    for path in paths:
        for line in path.read_text().splitlines():
            records.append(json.loads(line))
    return records


async def test_writes_mixer_json_lines_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.log"
    handler = ADAPTER.factory(
        StdioConfig.model_validate({"outputPath": str(path)}),
        HandlerEnv("stdio.istio-system", _LOG, tmp_path),
    )
    assert isinstance(handler, StdioHandler)
    await handler.start()
    handler.handle_report(
        _batch(
            _access_log(
                responseCode=200,
                latency=timedelta(microseconds=7250),
                sourceIp=ipaddress.ip_address("10.0.0.1"),
                destinationIp=ipaddress.ip_address("2001:db8::1"),
                startTime=datetime(2019, 1, 2, 13, 4, 5, tzinfo=UTC),
                payload=b"\x00\xffhi",
                headers={"x-user": "alice"},
                absent=None,
                level="clashes with the reserved key",
            ),
            MetricInstance("requestcount.metric.istio-system", value=1, dimensions={"b": "two", "a": 1.5}),
            TraceSpanInstance("ignored.tracespan"),
        )
    )
    await handler.shutdown(2.0)
    log, metric = _read_json_lines(path)
    assert list(log)[:3] == ["level", "time", "instance"]
    assert log == {
        "level": "warn",
        "time": "2019-01-02T13:04:05.250000Z",
        "instance": "accesslog.logentry.istio-system",
        "destinationIp": "2001:db8::1",
        "headers": {"x-user": "alice"},
        "latency": "7.25ms",
        "payload": base64.b64encode(b"\x00\xffhi").decode(),
        "responseCode": 200,
        "sourceIp": "10.0.0.1",
        "startTime": "2019-01-02T13:04:05.000000Z",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", metric.pop("time"))
    assert metric == {
        "level": "info",
        "instance": "requestcount.metric.istio-system",
        "value": 1,
        "a": 1.5,
        "b": "two",
    }
    assert handler.written == 2
    assert handler.dropped == 0


async def test_flushes_on_a_timer_without_shutdown(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    handler = _handler({"output_path": str(path)}, flush_interval=0.02)
    await handler.start()
    try:
        handler.handle_report(_batch(_access_log(code=1)))
        async with asyncio.timeout(5):
            while not path.exists() or not path.read_text():
                await asyncio.sleep(0.01)
        assert _read_json_lines(path)[0]["code"] == 1
    finally:
        await handler.shutdown(1.0)


async def test_flushes_early_when_half_full(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    handler = _handler({"output_path": str(path)}, flush_interval=3600, max_buffered_lines=4)
    await handler.start()
    try:
        handler.handle_report(_batch(_access_log(n=1), _access_log(n=2)))
        async with asyncio.timeout(5):
            while handler.written < 2:
                await asyncio.sleep(0.01)
    finally:
        await handler.shutdown(1.0)


async def test_levels_filter_and_map_severities(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    handler = _handler(
        {
            "output_path": str(path),
            "outputLevel": "WARNING",
            "metric_level": "INFO",
            "severityLevels": {"Critical": "ERROR"},
        }
    )
    entries = [
        LogEntryInstance("a", severity="Critical"),
        LogEntryInstance("b", severity="ERR"),
        LogEntryInstance("c", severity="info"),
        LogEntryInstance("d", severity="no such severity"),
        LogEntryInstance("e", severity="WARN"),
        MetricInstance("m", value=3),
    ]
    handler.handle_report(_batch(*entries))
    await handler.shutdown(1.0)
    assert [(r["instance"], r["level"]) for r in _read_json_lines(path)] == [
        ("a", "error"),
        ("b", "error"),
        ("e", "warn"),
    ]


async def test_console_format(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    handler = _handler({"output_path": str(path), "output_as_json": False})
    handler.handle_report(_batch(MetricInstance("rc", value=2, dimensions={"code": 200})))
    await handler.shutdown(1.0)
    when, level, name, fields = path.read_text().rstrip("\n").split("\t")
    assert (when, level, name) == (format_time(_NOW), "info", "rc")
    assert json.loads(fields) == {"value": 2, "code": 200}


async def test_stdout_and_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    out = _handler({})
    err = _handler({"outputPath": "stderr"})
    out.handle_report(_batch(MetricInstance("to-stdout", value=1)))
    err.handle_report(_batch(MetricInstance("to-stderr", value=1)))
    await out.shutdown(1.0)
    await err.shutdown(1.0)
    captured = capsys.readouterr()
    assert json.loads(captured.out)["instance"] == "to-stdout"
    assert json.loads(captured.err)["instance"] == "to-stderr"


def test_params_accept_both_spellings_and_merge_severities() -> None:
    camel = StdioConfig.model_validate(
        {
            "outputAsJson": False,
            "outputLevel": "ERROR",
            "outputPath": "/var/log/x.log",
            "logStream": "ROTATED_FILE",
            "maxMegabytesBeforeRotation": 5,
            "maxDaysBeforeRotation": 2,
            "maxRotatedFiles": 3,
            "severityLevels": {"debug": "INFO", "info": "WARNING"},
        }
    )
    snake = StdioConfig.model_validate(
        {
            "output_as_json": False,
            "output_level": 2,
            "output_path": "/var/log/x.log",
            "log_stream": "ROTATED_FILE",
            "max_megabytes_before_rotation": 5,
            "max_days_before_rotation": 2,
            "max_backups_before_rotation": 3,
            "severity_levels": {"debug": "INFO", "info": "WARNING"},
        }
    )
    assert camel == snake
    assert camel.output_level is Level.ERROR
    assert camel.stream is LogStream.ROTATED_FILE
    assert camel.max_bytes == 5 * 1024 * 1024
    assert camel.severity_levels["debug"] is Level.INFO
    assert camel.severity_levels["info"] is Level.WARNING
    assert camel.severity_levels["FATAL"] is Level.ERROR


@pytest.mark.parametrize(
    ("output_path", "stream"),
    [
        ("", LogStream.STDOUT),
        ("stdout", LogStream.STDOUT),
        ("STDERR", LogStream.STDERR),
        ("/x.log", LogStream.FILE),
    ],
)
def test_stream_follows_output_path(output_path: str, stream: LogStream) -> None:
    assert StdioConfig(output_path=output_path).stream is stream


@pytest.mark.parametrize(
    "params",
    [
        {"log_stream": "STDOUT", "output_path": "/var/log/x.log"},
        {"log_stream": "FILE"},
        {"log_stream": "FILE", "output_path": "stderr"},
        {"output_level": "DEBUG"},
        {"max_megabytes_before_rotation": -1},
        {"outputAsJSON": True},
    ],
)
def test_invalid_params(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        StdioConfig.model_validate(params)


# -- bounds ---------------------------------------------------------------------------------------


async def test_full_buffer_refuses_and_counts_drops(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    handler = _handler({"output_path": str(path)}, max_buffered_lines=3)
    handler.handle_report(_batch(_access_log(n=1), _access_log(n=2)))
    with pytest.raises(HandlerOverloaded):
        handler.handle_report(_batch(_access_log(n=3), _access_log(n=4)))
    assert handler.dropped == 2
    assert handler.buffered == 2
    await handler.shutdown(1.0)
    assert [r["n"] for r in _read_json_lines(path)] == [1, 2]
    with pytest.raises(HandlerOverloaded):
        handler.handle_report(_batch(_access_log(n=5)))
    assert handler.dropped == 3


async def test_failed_writes_are_counted_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    handler = _handler({"output_path": str(tmp_path / "missing-dir" / "out.log")})
    handler.handle_report(_batch(_access_log(n=1), _access_log(n=2)))
    with caplog.at_level(logging.WARNING, logger=_LOG.name):
        await handler.shutdown(1.0)
    assert handler.write_errors == 1
    assert handler.dropped == 2
    assert "write failed" in caplog.text


async def test_shutdown_is_idempotent_and_stops_the_flusher(tmp_path: Path) -> None:
    handler = _handler({"output_path": str(tmp_path / "out.log")}, flush_interval=0.01)
    await handler.start()
    await handler.shutdown(1.0)
    await handler.shutdown(1.0)
    await asyncio.sleep(0.03)
    assert not (tmp_path / "out.log").exists()


# -- rotation -------------------------------------------------------------------------------------


async def test_rotates_by_size_and_keeps_max_backups(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    max_bytes = 400
    handler = _handler(
        {
            "output_path": str(path),
            "max_megabytes_before_rotation": max_bytes / (1024 * 1024),
            "max_backups_before_rotation": 2,
        }
    )
    for n in range(40):
        handler.handle_report(_batch(_access_log(n=n)))
        await handler.flush()
    await handler.shutdown(1.0)
    sink = handler.sink
    assert isinstance(sink, RotatingFileSink)
    backups = sink.backups()
    assert len(backups) == 2
    for file in [*backups, path]:
        assert 0 < file.stat().st_size <= max_bytes
    numbers = [r["n"] for r in _read_json_lines(*backups, path)]
    assert numbers == list(range(40 - len(numbers), 40))


async def test_rotation_keeps_everything_when_unbounded(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    handler = _handler(
        {
            "output_path": str(path),
            "max_megabytes_before_rotation": 300 / (1024 * 1024),
            "max_backups_before_rotation": 0,
            "max_days_before_rotation": 0,
        }
    )
    handler.handle_report(_batch(*[_access_log(n=n) for n in range(30)]))
    await handler.shutdown(1.0)
    sink = handler.sink
    assert isinstance(sink, RotatingFileSink)
    assert len(sink.backups()) > 3
    assert [r["n"] for r in _read_json_lines(*sink.backups(), path)] == list(range(30))


def test_old_backups_are_pruned_by_age(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    old = tmp_path / "access-2020-01-01T00-00-00.000000.log"
    unrelated = tmp_path / "access-notes.log"
    for file in (old, unrelated):
        file.write_text("x\n")
        stale = time.time() - 40 * 86400
        os.utime(file, (stale, stale))
    sink = RotatingFileSink(path, max_bytes=10, max_backups=0, max_age_days=30)
    sink.write([b"first line", b"second line"])
    sink.close()
    assert not old.exists()
    assert unrelated.exists()
    assert len(sink.backups()) == 1
    assert path.read_text() == "second line\n"


def test_encoders_with_equal_settings_share_a_log_entry_line() -> None:
    from adapters.stdio._handler import LineEncoder, _shared_lines, _SharedLines

    when = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    entry = LogEntryInstance("accesslog.istio-system", variables={"a": "1"}, timestamp=when, severity="info")
    first = LineEncoder(StdioConfig(), lambda: when)
    second = LineEncoder(StdioConfig(), lambda: when)
    hits = _shared_lines.hits
    line = first.encode(entry)
    assert line == second.encode(entry)
    assert _shared_lines.hits == hits + 1
    # Other settings, other text: an encoder that filters info lines writes none.
    quiet = LineEncoder(StdioConfig.model_validate({"outputLevel": "error"}), lambda: when)
    assert quiet.encode(entry) is None
    assert second.encode(entry) == line
    # An entry without a timestamp takes each encoder's own clock and is not shared.
    later = datetime(2026, 11, 25, 11, 0, tzinfo=UTC)
    untimed = LogEntryInstance("accesslog.istio-system", variables={"a": "1"})
    assert "10:00:00" in (first.encode(untimed) or "")
    assert "11:00:00" in (LineEncoder(StdioConfig(), lambda: later).encode(untimed) or "")
    # The cache is bounded in bytes and counts what it evicts.
    small = _SharedLines(max_bytes=64 * 1024)
    big = [LogEntryInstance(f"e{i}", variables={}, timestamp=when) for i in range(40)]
    for e in big:
        small.get(e, 0, lambda inst: inst.name.encode() + b"x" * 4000)
    assert small.cache.bytes <= 64 * 1024
    assert small.evicted == len(big) - len(small.cache) > 0
    assert small.get(big[-1], 0, lambda inst: b"recomputed").startswith(b"e39x")  # type: ignore[union-attr]
    assert small.get(big[0], 0, lambda inst: b"recomputed") == b"recomputed"


def test_processes_appending_to_one_file_keep_their_lines_whole(tmp_path: Path) -> None:
    # What two workers do: two sinks, each with its own descriptor on the same file, in two
    # processes (forked, so that the writes race in the kernel, not under one lock).
    path = tmp_path / "access.log"
    line = b"x" * 5000  # longer than a stdio buffer: a buffered writer would split it
    pids = []
    for worker in "ab":
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child exits without returning
            code = 1
            try:
                sink = RotatingFileSink(path, max_bytes=0, max_backups=0, max_age_days=0)
                for i in range(200):
                    sink.write([f"{worker}{i:03d}".encode() + line, f"{worker}{i:03d}-second".encode()])
                sink.close()
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    lines = path.read_bytes().splitlines()
    assert len(lines) == 800
    expected = {f"{w}{i:03d}".encode() + line for w in "ab" for i in range(200)}
    expected |= {f"{w}{i:03d}-second".encode() for w in "ab" for i in range(200)}
    assert set(lines) == expected


def test_a_file_rotated_by_another_process_is_reopened_not_rotated_again(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    first = RotatingFileSink(path, max_bytes=30, max_backups=0, max_age_days=0)
    second = RotatingFileSink(path, max_bytes=30, max_backups=0, max_age_days=0)
    first.write([b"0123456789"])
    second.write([b"abcdefghij"])
    first.write([b"ABCDEFGHIJ"])  # past 30 bytes with the other's line: rotates
    second.write([b"klmnopqrst"])  # finds the file rotated under it: appends to the new one
    first.close()
    second.close()
    (backup,) = first.backups()
    assert backup.read_text("utf-8").splitlines() == ["0123456789", "abcdefghij"]
    assert path.read_text("utf-8").splitlines() == ["ABCDEFGHIJ", "klmnopqrst"]
