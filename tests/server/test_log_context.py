"""Server logs: JSON off a terminal, text on one; each line carries the handler, the config generation
and the request id it was logged under; a taken port is one line saying how to move it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from mixer import logcontext
from mixer.server import configure_logging, default_log_format
from tests.runtime.support import fq
from tests.runtime.test_check import bag, runtime, two_checkers
from tests.server.support import MIXER_SCRIPT, free_port


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger writing into a buffer; the previous handlers and level are put back."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_the_default_format_follows_the_terminal() -> None:
    assert default_log_format(io.StringIO()) == "json"
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as tty:
            assert default_log_format(tty) == "text"
    finally:
        os.close(leader)
        os.close(follower)


async def test_handler_generation_and_request_id_are_on_the_line(captured: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=captured)
    rt = runtime(two_checkers({"raise_message": "backend exploded"}, {}))
    await rt.check(bag(request__id="req-1", source__name="x"))
    [line] = [e for e in _json_lines(captured) if "backend exploded" in e["message"]]
    assert line["level"] == "warning"
    assert line["handler"] == fq("a")
    assert line["generation"] == rt.generation
    assert line["request_id"] == "req-1"
    # Outside a call nothing is left set.
    assert logcontext.current_fields() == {}


async def test_concurrent_calls_keep_their_own_request_ids(captured: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=captured)
    rt = runtime(two_checkers({"raise_message": "boom", "delay": 0.05}, {}))
    ids = [f"req-{n}" for n in range(20)]
    await asyncio.gather(*(rt.check(bag(request__id=i)) for i in ids))
    lines = [e for e in _json_lines(captured) if "boom" in e["message"]]
    assert sorted(e["request_id"] for e in lines) == sorted(ids)
    assert {e["handler"] for e in lines} == {fq("a")}


async def test_the_deduplication_id_stands_in_for_a_missing_request_id(captured: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=captured)
    rt = runtime(two_checkers({"raise_message": "boom"}, {}))
    await rt.check(bag(source__name="x"), deduplication_id="dedup-9")
    [line] = [e for e in _json_lines(captured) if "boom" in e["message"]]
    assert line["request_id"] == "dedup-9"


async def test_text_lines_carry_the_same_fields(captured: io.StringIO) -> None:
    configure_logging("INFO", "text", stream=captured)
    rt = runtime(two_checkers({"raise_message": "boom"}, {}))
    await rt.check(bag(request__id="req-7"))
    [line] = [text for text in captured.getvalue().splitlines() if "boom" in text]
    assert line.endswith(f"[handler={fq('a')} generation={rt.generation} request_id=req-7]")


def test_a_caller_cannot_make_a_line_huge(captured: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=captured)

    async def call() -> None:
        rt = runtime(two_checkers({"raise_message": "boom"}, {}))
        await rt.check(bag(request__id="x" * 100_000))

    asyncio.run(call())
    [line] = [e for e in _json_lines(captured) if "boom" in e["message"]]
    assert len(line["request_id"]) == logcontext.MAX_REQUEST_ID


# -- real processes ----------------------------------------------------------------------------------


def _serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(MIXER_SCRIPT),
            "serve",
            "--grpc-listen",
            f"127.0.0.1:{free_port()}",
            "--http-listen",
            f"127.0.0.1:{free_port()}",
            "--admin-listen",
            "127.0.0.1:0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )


def test_a_taken_prometheus_port_is_one_line_naming_the_way_out() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _serve({"MIXER_PROMETHEUS_LISTEN": f"127.0.0.1:{port}"})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    # Not a terminal: JSON lines.
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    errors = [e["message"] for e in entries if e["level"] == "error"]
    assert len(errors) == 1, errors
    [message] = errors
    assert "prometheus.istio-system" in message
    assert f"127.0.0.1:{port}" in message
    assert "MIXER_PROMETHEUS_LISTEN" in message
    assert "\n" not in message


def test_a_taken_grpc_port_from_the_variable_is_one_line() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [
                str(MIXER_SCRIPT),
                "serve",
                "--http-listen",
                f"127.0.0.1:{free_port()}",
                "--admin-listen",
                "127.0.0.1:0",
                "--log-format",
                "text",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={
                **os.environ,
                "MIXER_PROMETHEUS_LISTEN": "127.0.0.1:0",
                "MIXER_GRPC_LISTEN": f"127.0.0.1:{port}",
            },
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = [text for text in done.stderr.splitlines() if " ERROR " in text]
    assert f"127.0.0.1:{port}" in line
    assert "--grpc-listen" in line
    assert "MIXER_GRPC_LISTEN" in line


def test_server_logs_are_json_when_stderr_is_not_a_terminal() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mixer", "serve", "--config", "/nonexistent/mixer.yaml"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            "MIXER_HTTP_LISTEN": "127.0.0.1:0",
            "MIXER_GRPC_LISTEN": "127.0.0.1:0",
            "MIXER_ADMIN_LISTEN": "127.0.0.1:0",
        },
    )
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert any(e["level"] == "error" for e in lines)
    assert all({"time", "level", "logger", "message"} <= set(e) for e in lines)
