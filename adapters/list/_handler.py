"""The list handler: answers from an in-memory list that a background task keeps fresh."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import aiohttp

from adapters.list._config import ListConfig
from adapters.list._lists import EntryList, build_list, parse_entries
from mixer import CheckHandler, CheckResult, Code, Status
from mixer.redact import redact_text, redact_url
from mixer.templates import Instance

#: What a caller is told while no usable list is loaded.
LIST_UNAVAILABLE = "list unavailable"


class ListFetchError(Exception):
    """The provider answered, but not with a usable list."""


class ListHandler(CheckHandler):
    """Mixer's list checker: whitelist or blacklist lookups of a listentry's value.

    With a ``provider_url``, :meth:`start` launches a task that fetches the list at once and then
    every ``refresh_interval``. A failed fetch keeps the last good list (``fetch_errors`` counts
    them); a list not refreshed for ``ttl`` is stale, and checks then answer UNAVAILABLE, as do
    checks before the first successful fetch.
    """

    # A check looks the value up in the list in memory; fetches run in their own task.
    check_waits = False

    def __init__(
        self,
        config: ListConfig,
        logger: logging.Logger,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._logger = logger
        self._clock = clock
        self._list: EntryList | None = None
        self._fetched_at: float | None = None
        self._digest: bytes | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        #: Fetches that failed (network, HTTP status, size or parse errors).
        self.fetch_errors = 0
        #: Fetches that installed or confirmed a list.
        self.fetches = 0
        self.last_error: str | None = None
        if not config.provider_url:
            self._list = build_list(config.entry_type, config.overrides)

    # -- checks ---------------------------------------------------------------------------------

    async def handle_check(self, instance: Instance) -> CheckResult:
        entries = self._usable_list()
        if entries is None:
            # Fail closed, and let no proxy cache an answer the next refresh may change. Why the
            # list is missing (its URL, a path, a line that did not parse) is in the log only.
            return CheckResult(
                Status(Code.UNAVAILABLE, LIST_UNAVAILABLE),
                valid_duration=timedelta(0),
                valid_use_count=0,
            )
        value = getattr(instance, "value", None)
        if value is None:
            return self._answer(Status(Code.INVALID_ARGUMENT, "listentry has no value"))
        try:
            found = entries.contains(value)
        except ValueError as exc:
            return self._answer(Status(Code.INVALID_ARGUMENT, str(exc)))
        if self._config.blacklist:
            return self._answer(
                Status(Code.PERMISSION_DENIED, f"{value} is blacklisted") if found else Status()
            )
        # PERMISSION_DENIED as Mixer since 1.1 (1.0 said NOT_FOUND, which Envoy turns into a 404).
        denied = Status(Code.PERMISSION_DENIED, f"{value} is not whitelisted")
        return self._answer(Status() if found else denied)

    def _answer(self, status: Status) -> CheckResult:
        return CheckResult(
            status,
            valid_duration=self._config.caching_interval,
            valid_use_count=self._config.caching_use_count,
        )

    def _usable_list(self) -> EntryList | None:
        if not self._config.provider_url:
            return self._list
        if self._fetched_at is None:
            return None
        if self._clock() - self._fetched_at > self._config.ttl.total_seconds():
            return None
        return self._list

    @property
    def entries(self) -> int:
        """Entries in the current list (0 before the first fetch)."""
        return len(self._list) if self._list is not None else 0

    # -- refresh --------------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Fetch the list once; on failure keep the last good one.

        :returns: whether a list was installed or confirmed unchanged.
        """
        url = redact_url(self._config.provider_url)
        try:
            body = await self._fetch(self._config.provider_url)
            digest = hashlib.sha256(body).digest()
            if digest != self._digest or self._list is None:
                entries = [*parse_entries(body.decode("utf-8")), *self._config.overrides]
                self._list = build_list(self._config.entry_type, entries)
                self._digest = digest
                self._logger.info("list from %s installed: %d entries", url, len(self._list))
        except (aiohttp.ClientError, OSError, TimeoutError, ListFetchError, ValueError) as exc:
            self.fetch_errors += 1
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.last_error = redact_text(error)
            self._logger.warning("could not refresh list from %s: %s", url, self.last_error)
            return False
        self.fetches += 1
        self.last_error = None
        self._fetched_at = self._clock()
        return True

    async def _fetch(self, url: str) -> bytes:
        limit = self._config.max_list_bytes
        parts = urlsplit(url)
        if parts.scheme == "file":
            return await asyncio.to_thread(_read_file, Path(url2pathname(parts.path)), limit)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=self._config.fetch_timeout.total_seconds())
        async with self._session.get(url, timeout=timeout) as response:
            if response.status != 200:
                raise ListFetchError(f"{url} answered HTTP {response.status}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise ListFetchError(f"list from {url} is larger than max_list_bytes ({limit})")
                chunks.append(chunk)
            return b"".join(chunks)

    async def _refresh_forever(self) -> None:
        interval = self._config.refresh_interval.total_seconds()
        while True:
            await self.refresh()
            await asyncio.sleep(interval)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._config.provider_url and self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._refresh_forever(), name=f"list refresh {redact_url(self._config.provider_url)}"
            )

    async def shutdown(self, timeout: float) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=timeout)
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _read_file(path: Path, limit: int) -> bytes:
    with path.open("rb") as file:
        body = file.read(limit + 1)
    if len(body) > limit:
        raise ListFetchError(f"list file {path} is larger than max_list_bytes ({limit})")
    return body
