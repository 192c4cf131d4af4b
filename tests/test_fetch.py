"""mixer.fetch: a remote document fetched from a local HTTP server and from disk."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from mixer.fetch import RemoteDocument, backoff_delay

LOG = logging.getLogger("test.fetch")


@dataclass
class Server:
    """A document on 127.0.0.1 whose answers tests change."""

    url: str = ""
    body: bytes = b"one"
    status: int = 200
    etag: str | None = None
    last_modified: str | None = None
    delay: float = 0.0
    #: Stream the body without a Content-Length, so only the read loop can bound it.
    chunked: bool = False
    requests: int = 0
    conditional: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()

    async def serve(request: web.Request) -> web.StreamResponse:
        state.requests += 1
        state.conditional.append(
            {k: v for k, v in request.headers.items() if k in ("If-None-Match", "If-Modified-Since")}
        )
        if state.delay:
            await asyncio.sleep(state.delay)
        headers = {}
        if state.etag:
            headers["ETag"] = state.etag
        if state.last_modified:
            headers["Last-Modified"] = state.last_modified
        # RFC 9110 13.2.2: If-None-Match, when sent, decides alone.
        if "If-None-Match" in request.headers:
            unchanged = request.headers["If-None-Match"] == state.etag
        else:
            unchanged = state.last_modified is not None and (
                request.headers.get("If-Modified-Since") == state.last_modified
            )
        if state.status == 200 and unchanged:
            return web.Response(status=304, headers=headers)
        if state.chunked:
            response = web.StreamResponse(status=state.status, headers=headers)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(state.body), 10):
                await response.write(state.body[start : start + 10])
            await response.write_eof()
            return response
        return web.Response(body=state.body, status=state.status, headers=headers)

    app = web.Application()
    app.router.add_get("/doc", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/doc"
    try:
        yield state
    finally:
        await runner.cleanup()


@dataclass
class Parser:
    calls: int = 0

    def __call__(self, body: bytes) -> str:
        self.calls += 1
        text = body.decode()
        if text.startswith("bad"):
            raise ValueError(f"cannot parse {text!r}")
        return text.upper()


def document(
    source: str, parse: Parser, *, max_bytes: int = 1000, timeout: float = 5.0, interval: float = 60.0
) -> RemoteDocument[str]:
    return RemoteDocument(
        source,
        parse,
        what="the test document",
        logger=LOG,
        max_bytes=max_bytes,
        size_setting="max_doc_bytes",
        timeout=timeout,
        interval=interval,
        min_backoff=0.01,
    )


async def test_etag_and_last_modified_make_an_unchanged_document_a_304(server: Server) -> None:
    server.etag, server.last_modified = '"v1"', "Tue, 14 Nov 2023 22:13:20 GMT"
    parse = Parser()
    doc = document(server.url, parse)
    try:
        assert await doc.refresh()
        assert doc.value == "ONE"
        assert server.conditional[0] == {}, "nothing held yet: no validators"
        assert await doc.refresh()
        assert server.conditional[1] == {
            "If-None-Match": '"v1"',
            "If-Modified-Since": "Tue, 14 Nov 2023 22:13:20 GMT",
        }
        assert (doc.stats.fetches, doc.stats.not_modified, doc.stats.failures) == (2, 1, 0)
        assert parse.calls == 1
        assert doc.value == "ONE"

        server.body, server.etag = b"two", '"v2"'
        assert await doc.refresh()
        assert doc.value == "TWO"
        assert doc.stats.not_modified == 1

        # Last-Modified alone works too.
        server.etag, server.last_modified, server.body = None, "Wed, 15 Nov 2023 00:00:00 GMT", b"three"
        assert await doc.refresh()
        assert doc.value == "THREE"
        assert await doc.refresh()
        assert server.conditional[-1] == {"If-Modified-Since": "Wed, 15 Nov 2023 00:00:00 GMT"}
        assert doc.stats.not_modified == 2
    finally:
        await doc.close(1.0)


async def test_a_5xx_keeps_the_last_good_document_until_the_source_recovers(server: Server) -> None:
    doc = document(server.url, Parser())
    try:
        assert await doc.refresh()
        good_at = doc.last_success
        server.status = 503
        assert not await doc.refresh()
        assert not await doc.refresh()
        assert doc.value == "ONE"
        assert doc.last_success == good_at
        assert "answered HTTP 503" in (doc.last_error or "")
        server.status, server.body = 200, b"back"
        assert await doc.refresh()
        assert doc.value == "BACK"
        assert doc.last_error is None
        assert (doc.stats.fetches, doc.stats.failures) == (2, 2)
    finally:
        await doc.close(1.0)


async def test_a_document_that_does_not_parse_is_a_failure_and_never_confirmed_by_a_304(
    server: Server,
) -> None:
    server.etag = '"v1"'
    doc = document(server.url, Parser())
    try:
        assert await doc.refresh()
        server.body, server.etag = b"bad news", '"v2"'
        assert not await doc.refresh()
        assert "cannot parse" in (doc.last_error or "")
        # The refused document's ETag was not kept: the next request asks with the good one's.
        assert not await doc.refresh()
        assert server.conditional[-1]["If-None-Match"] == '"v1"'
        assert doc.value == "ONE"
        assert doc.stats.failures == 2
    finally:
        await doc.close(1.0)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversized_body_is_refused(server: Server, chunked: bool) -> None:
    server.chunked = chunked
    server.body = b"x" * 100
    doc = document(server.url, Parser(), max_bytes=99)
    try:
        assert not await doc.refresh()
        assert doc.value is None
        assert "larger than max_doc_bytes (99)" in (doc.last_error or "")
        server.body = b"x" * 99
        assert await doc.refresh()
    finally:
        await doc.close(1.0)


async def test_a_slow_source_times_out(server: Server) -> None:
    server.delay = 1.0
    doc = document(server.url, Parser(), timeout=0.1)
    try:
        assert not await doc.refresh()
        assert doc.last_error == "TimeoutError"
        assert doc.stats.failures == 1
    finally:
        await doc.close(1.0)


async def test_concurrent_refreshes_share_one_fetch(server: Server) -> None:
    server.delay = 0.05
    doc = document(server.url, Parser())
    try:
        assert await asyncio.gather(*(doc.refresh() for _ in range(10))) == [True] * 10
        assert server.requests == 1
        assert not doc.loading
    finally:
        await doc.close(1.0)


async def test_files_and_file_urls(tmp_path: Path) -> None:
    path = tmp_path / "doc.txt"
    path.write_text("disk")
    for source in (str(path), path.as_uri()):
        doc = document(source, Parser(), max_bytes=4)
        assert await doc.refresh()
        assert doc.value == "DISK"
        await doc.close(1.0)
    path.write_text("disk!")
    doc = document(str(path), Parser(), max_bytes=4)
    assert not await doc.refresh()
    assert "larger than max_doc_bytes (4)" in (doc.last_error or "")
    path.unlink()
    assert not await doc.refresh()
    assert "FileNotFoundError" in (doc.last_error or "")
    await doc.close(1.0)


async def test_the_background_task_retries_failures_sooner_and_stops_on_close(server: Server) -> None:
    server.status = 500
    doc = document(server.url, Parser(), interval=3600.0)
    doc.start()
    async with asyncio.timeout(5):
        # An hour's interval, yet failures are retried within milliseconds (min_backoff 10 ms).
        while server.requests < 3:
            await asyncio.sleep(0.01)
        server.status = 200
        while doc.value is None:
            await asyncio.sleep(0.01)
    await doc.close(1.0)
    requests = server.requests
    await asyncio.sleep(0.05)
    assert server.requests == requests
    assert doc.closed


async def test_a_parser_that_raises_anything_is_a_failure_and_a_closed_document_fetches_no_more(
    server: Server,
) -> None:
    def broken(body: bytes) -> str:
        raise KeyError("no such field")

    doc = RemoteDocument(
        server.url, broken, what="doc", logger=LOG, max_bytes=100, timeout=5.0, interval=60.0
    )
    assert not await doc.refresh()
    assert doc.last_error == "KeyError: 'no such field'"
    await doc.close(1.0)
    assert not await doc.refresh()
    assert server.requests == 1


def test_backoff_doubles_from_the_minimum_up_to_the_interval_with_jitter() -> None:
    def top() -> float:
        return 1.0

    def bottom() -> float:
        return 0.0

    assert backoff_delay(0, 60.0, 1.0, top) == 60.0
    assert [backoff_delay(n, 60.0, 1.0, top) for n in (1, 2, 3, 7, 1000)] == [1.0, 2.0, 4.0, 60.0, 60.0]
    assert backoff_delay(3, 60.0, 1.0, bottom) == 2.0
