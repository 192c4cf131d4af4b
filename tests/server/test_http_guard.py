"""The HTTP listener's limits: slow headers and bodies time out, a connection cap, quiet bad requests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mixer.server import MixerServer, ServeOptions
from tests.server.support import http_get, metric_value, policy_config

HEADER_TIMEOUT = 1.0


@contextlib.asynccontextmanager
async def running(tmp_path: Path, header_timeout: float) -> AsyncIterator[MixerServer]:
    config = tmp_path / "policy.yaml"
    config.write_text(policy_config(tmp_path / "reports.jsonl"), "utf-8")
    options = ServeOptions(
        config_paths=(str(config),),
        grpc_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        reload_interval=0,
        http_max_connections=5,
        http_header_timeout=header_timeout,
        http_body_timeout=header_timeout,
    )
    mixer = MixerServer(options)
    await mixer.start()
    try:
        yield mixer
    finally:
        await mixer.stop()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[MixerServer]:
    async with running(tmp_path, HEADER_TIMEOUT) as mixer:
        yield mixer


def address(server: MixerServer) -> tuple[str, int]:
    assert server.http_address is not None
    return server.http_address.host, server.http_address.port


async def metric(server: MixerServer, name: str, **labels: str) -> float:
    assert server.admin_address is not None
    host, port = server.admin_address.host, server.admin_address.port
    status, text = await asyncio.to_thread(http_get, f"http://{host}:{port}/metrics")
    assert status == 200
    return metric_value(text, name, **labels) or 0.0


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before it closed the connection; fails if it stays open ``seconds``."""
    return await asyncio.wait_for(reader.read(), seconds)


async def send_a_slow_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Start a header that never ends; it must be answered 408 and closed, not before the timeout."""
    began = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await writer.drain()
    answer = await closed_within(reader, 10 * HEADER_TIMEOUT + 5)
    waited = time.monotonic() - began
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert waited >= HEADER_TIMEOUT * 0.9


async def test_a_slow_header_is_answered_408_and_closed(server: MixerServer) -> None:
    await send_a_slow_header(*await asyncio.open_connection(*address(server)))
    assert await metric(server, "mixer_http_bad_requests_total", reason="header_timeout") == 1
    # A connection that sends nothing at all goes the same way.
    reader, writer = await asyncio.open_connection(*address(server))
    assert (await closed_within(reader, 10 * HEADER_TIMEOUT + 5)).startswith(b"HTTP/1.1 408")
    writer.close()
    # Prompt requests on a kept-alive connection are not affected by the time between them.
    reader, writer = await asyncio.open_connection(*address(server))
    for _ in range(2):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(HEADER_TIMEOUT * 1.5)
    writer.close()
    assert await metric(server, "mixer_http_bad_requests_total", reason="header_timeout") == 2


async def test_a_slow_header_after_a_prompt_request_has_its_own_whole_timeout(server: MixerServer) -> None:
    reader, writer = await asyncio.open_connection(*address(server))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
    # The timer armed for the first header is due before this one's time is up.
    await asyncio.sleep(HEADER_TIMEOUT * 0.6)
    await send_a_slow_header(reader, writer)


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


async def test_a_slow_body_closes_the_connection(
    server: MixerServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    reader, writer = await asyncio.open_connection(*address(server))
    writer.write(
        b"POST /v1/report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"attributes": '
    )
    await writer.drain()
    await closed_within(reader, 10 * HEADER_TIMEOUT + 5)
    writer.close()
    assert await metric(server, "mixer_http_bad_requests_total", reason="body_timeout") == 1
    # The handler reading the body sees the connection lost: an expected end, not an error.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info is not None]


async def test_connections_over_the_cap_are_refused_while_the_server_keeps_serving(tmp_path: Path) -> None:
    # Timeouts long enough that the held connections stay for the whole test.
    async with running(tmp_path, 60.0) as server:
        held = [await asyncio.open_connection(*address(server)) for _ in range(5)]
        refused = 0
        for _ in range(3):
            reader, writer = await asyncio.open_connection(*address(server))
            answer = await closed_within(reader, 5)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 503")
            refused += 1
        # Connections already open are served meanwhile.
        reader, writer = held[0]
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        for _, writer in held:
            writer.close()
            await writer.wait_closed()
        assert server.http_guard is not None
        guard = server.http_guard
        deadline = time.monotonic() + 10
        while guard.open >= 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # Below the cap again: new connections are served, and the refusals were counted.
        assert await metric(server, "mixer_http_connections_refused_total") == refused


async def test_malformed_requests_are_counted_and_logged_once_without_a_traceback(
    server: MixerServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for n in range(100):
        reader, writer = await asyncio.open_connection(*address(server))
        # Alternately a broken request line and a broken header.
        writer.write(b"GET /\x00bad HTTP/1.1\r\n\r\n" if n % 2 else b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
        await writer.drain()
        answer = await closed_within(reader, 5)
        writer.close()
        assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == b"400"
    assert await metric(server, "mixer_http_bad_requests_total", reason="malformed") == 100
    about = [r for r in caplog.records if r.levelno >= logging.INFO and "malformed" in r.getMessage()]
    assert 1 <= len(about) <= 2
    assert all(r.exc_info is None and r.levelno == logging.WARNING for r in about)
    assert not [r for r in caplog.records if r.exc_info is not None]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
