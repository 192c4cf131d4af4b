"""The list adapter: whitelist/blacklist semantics per entry type, and refresh from a provider."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import ValidationError

from adapters.list import ADAPTER, EntryType, ListConfig
from adapters.list._handler import ListHandler
from mixer import CheckResult, Code, HandlerEnv
from mixer.templates import ListEntryInstance

_LOG = logging.getLogger("test.list")


def _handler(params: dict[str, object], clock: list[float] | None = None) -> ListHandler:
    config = ListConfig.model_validate(params)
    if clock is None:
        handler = ADAPTER.factory(config, HandlerEnv("list.test", _LOG))
        assert isinstance(handler, ListHandler)
        return handler
    now = clock
    return ListHandler(config, _LOG, clock=lambda: now[0])


async def _check(handler: ListHandler, value: object) -> CheckResult:
    return await handler.handle_check(ListEntryInstance("entry.istio-system", value=value))


async def _code(handler: ListHandler, value: object) -> Code:
    return (await _check(handler, value)).status.code


# -- semantics per entry type -----------------------------------------------------------------------

CASES: list[tuple[EntryType, list[str], list[object], list[object]]] = [
    (EntryType.STRINGS, ["alice", "bob"], ["alice", "bob"], ["Alice", "carol", ""]),
    (EntryType.CASE_INSENSITIVE_STRINGS, ["Alice", "BOB"], ["alice", "ALICE", "bob"], ["carol"]),
    (
        EntryType.IP_ADDRESSES,
        ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "172.16.5.4/30"],
        [
            "10.1.2.3",
            ipaddress.ip_address("192.168.1.7"),
            "2001:db8::1",
            "::ffff:10.9.9.9",
            bytes([10, 0, 0, 1]),
            "172.16.5.7",
        ],
        ["11.0.0.1", "192.168.1.8", "2001:db9::1", ipaddress.ip_address("172.16.5.8")],
    ),
    (EntryType.REGEX, ["^foo", "bar$", "a.c"], ["foobaz", "xbar", "xxabcxx"], ["baz", "barx"]),
    # Groups and scoped flags survive the entries' combined alternation.
    (EntryType.REGEX, [r"(a)b(?i:A)", "^z"], ["xxabay", "xxabAy", "zed"], ["abb", "Zed"]),
]


@pytest.mark.parametrize(("entry_type", "entries", "listed", "unlisted"), CASES)
async def test_whitelist(
    entry_type: EntryType, entries: list[str], listed: list[object], unlisted: list[object]
) -> None:
    handler = _handler({"entryType": entry_type.value, "overrides": entries})
    for value in listed:
        assert await _code(handler, value) is Code.OK, value
    for value in unlisted:
        result = await _check(handler, value)
        assert result.status.code is Code.PERMISSION_DENIED, value
        assert result.status.message == f"{value} is not whitelisted"


@pytest.mark.parametrize(("entry_type", "entries", "listed", "unlisted"), CASES)
async def test_blacklist(
    entry_type: EntryType, entries: list[str], listed: list[object], unlisted: list[object]
) -> None:
    handler = _handler({"entry_type": entry_type.value, "overrides": entries, "blacklist": True})
    for value in listed:
        result = await _check(handler, value)
        assert result.status.code is Code.PERMISSION_DENIED, value
        assert result.status.message == f"{value} is blacklisted"
    for value in unlisted:
        assert await _code(handler, value) is Code.OK, value


async def test_answers_carry_the_caching_params() -> None:
    handler = _handler({"overrides": ["a"], "cachingInterval": "30s", "cachingUseCount": 7})
    result = await _check(handler, "a")
    assert result.valid_duration == timedelta(seconds=30)
    assert result.valid_use_count == 7
    defaults = await _check(_handler({"overrides": ["a"]}), "b")
    assert defaults.valid_duration == timedelta(minutes=5)
    assert defaults.valid_use_count == 10000


async def test_value_that_is_no_ip_is_an_invalid_argument() -> None:
    handler = _handler({"entry_type": "IP_ADDRESSES", "overrides": ["10.0.0.0/8"]})
    result = await _check(handler, "not-an-ip")
    assert result.status.code is Code.INVALID_ARGUMENT
    assert "not-an-ip is not a valid IP address" in result.status.message
    assert await _code(handler, None) is Code.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "params",
    [
        {"entry_type": "IP_ADDRESSES", "overrides": ["10.0.0.300"]},
        {"entry_type": "REGEX", "overrides": ["(unclosed"]},
        {"entry_type": "WORDS"},
        {"provider_url": "ftp://example.com/list"},
        {"provider_url": "http:///nohost"},
        {"provider_url": "http://127.0.0.1/list", "refresh_interval": "60s", "ttl": "30s"},
        {"refresh_interval": "0s"},
        {"caching_use_count": -1},
        {"providerPath": "/tmp/list"},
    ],
)
def test_invalid_params(params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ListConfig.model_validate(params)


# -- provider refresh -------------------------------------------------------------------------------


@dataclass
class Provider:
    """A list server on 127.0.0.1 whose answer tests change."""

    url: str
    body: str = ""
    status: int = 200
    requests: int = 0


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    state = Provider(url="")

    async def serve(request: web.Request) -> web.Response:
        state.requests += 1
        return web.Response(status=state.status, text=state.body)

    app = web.Application()
    app.router.add_get("/list", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/list"
    try:
        yield state
    finally:
        await runner.cleanup()


async def test_refresh_from_http_provider_keeps_last_good_list(provider: Provider) -> None:
    clock = [1000.0]
    provider.body = "# allowed callers\nalice\n\n  bob  \n"
    handler = _handler(
        {"provider_url": provider.url, "overrides": ["admin"], "refresh_interval": "10s", "ttl": "30s"}, clock
    )
    try:
        before = await _check(handler, "alice")
        assert before.status.code is Code.UNAVAILABLE
        assert before.valid_duration == timedelta(0)

        assert await handler.refresh()
        assert handler.entries == 3
        assert [await _code(handler, v) for v in ("alice", "bob", "admin", "carol")] == [
            Code.OK,
            Code.OK,
            Code.OK,
            Code.PERMISSION_DENIED,
        ]

        provider.body = "carol\n"
        assert await handler.refresh()
        assert await _code(handler, "alice") is Code.PERMISSION_DENIED
        assert await _code(handler, "carol") is Code.OK

        provider.status = 500
        clock[0] += 20
        assert not await handler.refresh()
        assert handler.fetch_errors == 1
        assert handler.last_error is not None
        assert "HTTP 500" in handler.last_error
        assert await _code(handler, "carol") is Code.OK

        clock[0] += 15  # 35 s since the last good fetch: past the ttl
        stale = await _check(handler, "carol")
        assert stale.status.code is Code.UNAVAILABLE
        # The caller gets a generic reason; the fetch error is in the log.
        assert stale.status.message == "list unavailable"

        provider.status = 200
        assert await handler.refresh()
        assert await _code(handler, "carol") is Code.OK
        assert handler.fetches == 3
        assert provider.requests == 4
    finally:
        await handler.shutdown(1.0)


async def test_unchanged_list_is_not_rebuilt(provider: Provider) -> None:
    provider.body = "alice\n"
    handler = _handler({"provider_url": provider.url})
    try:
        assert await handler.refresh()
        first = handler._list
        assert await handler.refresh()
        assert handler._list is first
    finally:
        await handler.shutdown(1.0)


async def test_a_new_list_tells_the_runtime_that_answers_changed(provider: Provider) -> None:
    changes: list[None] = []
    config = ListConfig.model_validate({"provider_url": provider.url})
    handler = ADAPTER.factory(
        config, HandlerEnv("list.test", _LOG, answers_changed=lambda: changes.append(None))
    )
    assert isinstance(handler, ListHandler)
    try:
        provider.body = "alice\n"
        assert await handler.refresh()
        assert len(changes) == 1
        assert await handler.refresh()
        assert len(changes) == 1  # unchanged: cached answers still hold
        provider.body = "bob\n"
        assert await handler.refresh()
        assert len(changes) == 2
    finally:
        await handler.shutdown(1.0)


async def test_oversized_or_unparsable_lists_keep_the_last_good_one(provider: Provider) -> None:
    provider.body = "10.0.0.0/8\n"
    handler = _handler({"provider_url": provider.url, "entry_type": "IP_ADDRESSES", "max_list_bytes": 64})
    try:
        assert await handler.refresh()
        provider.body = "10.0.0.0/8\nnot an ip\n"
        assert not await handler.refresh()
        provider.body = "10.0.0.0/8\n" * 10
        assert not await handler.refresh()
        assert handler.last_error is not None
        assert "max_list_bytes" in handler.last_error
        assert handler.fetch_errors == 2
        assert await _code(handler, "10.1.1.1") is Code.OK
    finally:
        await handler.shutdown(1.0)


async def test_start_refreshes_in_the_background_until_shutdown(provider: Provider) -> None:
    provider.body = "alice\n"
    handler = _handler({"provider_url": provider.url, "refresh_interval": "20ms", "ttl": "1s"})
    await handler.start()
    async with asyncio.timeout(5):
        while handler.fetches < 3:
            await asyncio.sleep(0.01)
    assert await _code(handler, "alice") is Code.OK
    await handler.shutdown(1.0)
    requests = provider.requests
    await asyncio.sleep(0.1)
    assert provider.requests == requests
    await handler.shutdown(1.0)


async def test_unreachable_provider_counts_errors() -> None:
    handler = _handler({"provider_url": "http://127.0.0.1:9/list", "fetch_timeout": "2s"})
    try:
        assert not await handler.refresh()
        assert handler.fetch_errors == 1
        assert await _code(handler, "alice") is Code.UNAVAILABLE
    finally:
        await handler.shutdown(1.0)


async def test_file_provider(tmp_path: Path) -> None:
    path = tmp_path / "callers.txt"
    path.write_text("Alice\n")
    handler = _handler({"providerUrl": path.as_uri(), "entryType": "CASE_INSENSITIVE_STRINGS"})
    assert await handler.refresh()
    assert await _code(handler, "alice") is Code.OK
    path.write_text("bob\n")
    assert await handler.refresh()
    assert await _code(handler, "alice") is Code.PERMISSION_DENIED
    path.unlink()
    assert not await handler.refresh()
    assert await _code(handler, "BOB") is Code.OK
    await handler.shutdown(1.0)


# -- what callers and logs learn of a failing list ------------------------------------------------


async def test_a_failing_fetch_tells_the_caller_nothing_and_the_log_no_password(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    url = provider.url.replace("http://", "http://lister:s3cret-pw@")
    provider.status = 503
    handler = _handler({"provider_url": url})
    try:
        with caplog.at_level(logging.WARNING, logger=_LOG.name):
            assert not await handler.refresh()
        answer = await _check(handler, "alice")
        assert answer.status.code is Code.UNAVAILABLE
        assert answer.status.message == "list unavailable"
        logged = "\n".join(record.getMessage() for record in caplog.records)
        # The detail is in the log, with the password redacted.
        assert "HTTP 503" in logged
        assert "lister:***@127.0.0.1" in logged
        assert "s3cret-pw" not in logged
        assert "s3cret-pw" not in (handler.last_error or "")
    finally:
        await handler.shutdown(1.0)


async def test_a_list_line_that_does_not_parse_is_not_quoted_to_callers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "secret-dir" / "patterns.txt"
    path.parent.mkdir()
    path.write_text("ok.*\n(unclosed-secret-pattern\n")
    handler = _handler({"provider_url": path.as_uri(), "entry_type": "REGEX"})
    try:
        with caplog.at_level(logging.WARNING, logger=_LOG.name):
            assert not await handler.refresh()
        answer = await _check(handler, "okay")
        assert answer.status.code is Code.UNAVAILABLE
        assert "secret" not in answer.status.message
        assert str(tmp_path) not in answer.status.message
        assert "unclosed-secret-pattern" in "\n".join(record.getMessage() for record in caplog.records)
    finally:
        await handler.shutdown(1.0)
