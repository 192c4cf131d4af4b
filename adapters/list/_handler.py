"""The list handler: answers from an in-memory list that a background task keeps fresh."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from adapters.list._config import ListConfig
from adapters.list._lists import EntryList, build_list, parse_entries
from mixer import CheckHandler, CheckResult, Code, Status
from mixer.fetch import RemoteDocument
from mixer.redact import redact_url
from mixer.templates import Instance

#: What a caller is told while no usable list is loaded.
LIST_UNAVAILABLE = "list unavailable"


class ListHandler(CheckHandler):
    """Mixer's list checker: whitelist or blacklist lookups of a listentry's value.

    With a ``provider_url``, :meth:`start` launches a task that fetches the list at once and then
    every ``refresh_interval`` (:class:`mixer.fetch.RemoteDocument`; sooner, with backoff, after a
    failure). A failed fetch keeps the last good list (``fetch_errors`` counts them); a list not
    refreshed for ``ttl`` is stale, and checks then answer UNAVAILABLE, as do checks before the
    first successful fetch.
    """

    # A check looks the value up in the list in memory; fetches run in their own task.
    check_waits = False

    def __init__(
        self,
        config: ListConfig,
        logger: logging.Logger,
        *,
        clock: Callable[[], float] = time.monotonic,
        answers_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._answers_changed = answers_changed
        self._config = config
        self._logger = logger
        self._clock = clock
        self._static: EntryList | None = None
        self._document: RemoteDocument[EntryList] | None = None
        if config.provider_url:
            self._document = RemoteDocument(
                config.provider_url,
                self._parse,
                what="list",
                logger=logger,
                max_bytes=config.max_list_bytes,
                size_setting="max_list_bytes",
                timeout=config.fetch_timeout.total_seconds(),
                interval=config.refresh_interval.total_seconds(),
                monotonic=clock,
            )
        else:
            self._static = build_list(config.entry_type, config.overrides)

    @property
    def fetches(self) -> int:
        """Fetches that installed or confirmed a list."""
        return self._document.stats.fetches if self._document is not None else 0

    @property
    def fetch_errors(self) -> int:
        """Fetches that failed (network, HTTP status, size or parse errors)."""
        return self._document.stats.failures if self._document is not None else 0

    @property
    def last_error(self) -> str | None:
        return self._document.last_error if self._document is not None else None

    @property
    def _list(self) -> EntryList | None:
        return self._document.value if self._document is not None else self._static

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
        document = self._document
        if document is None:
            return self._static
        if document.last_success is None:
            return None
        if self._clock() - document.last_success > self._config.ttl.total_seconds():
            return None
        return document.value

    @property
    def entries(self) -> int:
        """Entries in the current list (0 before the first fetch)."""
        return len(self._list) if self._list is not None else 0

    # -- refresh --------------------------------------------------------------------------------

    def _parse(self, body: bytes) -> EntryList:
        entries = build_list(
            self._config.entry_type, [*parse_entries(body.decode("utf-8")), *self._config.overrides]
        )
        self._logger.info(
            "list from %s installed: %d entries", redact_url(self._config.provider_url), len(entries)
        )
        self._answers_changed()
        return entries

    async def refresh(self) -> bool:
        """Fetch the list once; on failure keep the last good one.

        :returns: whether a list was installed or confirmed unchanged.
        """
        return await self._document.refresh() if self._document is not None else True

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._document is not None:
            self._document.start()

    async def shutdown(self, timeout: float) -> None:
        if self._document is not None:
            await self._document.close(timeout)
