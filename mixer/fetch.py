"""A remote document kept fresh in the background: a JWKS, an allow list, anything fetched by URL.

:class:`RemoteDocument` fetches ``http(s)://`` URLs with aiohttp and reads ``file://`` URLs and
plain paths from disk, every ``interval`` seconds and on demand (:meth:`RemoteDocument.refresh`,
which concurrent callers share). Each answer is bounded in bytes and time. A document is parsed
only when its bytes changed, and a failed fetch or parse keeps the last good document; failures
are retried sooner, with exponential backoff and jitter, up to the interval. HTTP sources are
asked with ``If-None-Match`` / ``If-Modified-Since`` once a document is held, so an unchanged one
costs a 304 rather than a download.

Errors keep their detail for the log and :attr:`RemoteDocument.last_error` (with secrets in URLs
redacted); what a caller of the adapter is told stays the adapter's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import urlsplit
from urllib.request import url2pathname

import aiohttp

from mixer.redact import redact_text, redact_url

__all__ = ["FetchError", "FetchStats", "RemoteDocument", "backoff_delay"]

T = TypeVar("T")

_CHUNK = 64 * 1024
#: Backoff exponents stop growing here; the interval caps the delay long before.
_MAX_EXPONENT = 30


class FetchError(Exception):
    """The source answered, but not with a usable body (status, size)."""


@dataclass(slots=True)
class FetchStats:
    """``fetches``: attempts that installed or confirmed a document (304s included).
    ``failures``: attempts that failed (network, status, size, parse). ``not_modified``: the 304s."""

    fetches: int = 0
    failures: int = 0
    not_modified: int = 0


@dataclass(frozen=True, slots=True)
class _Answer:
    body: bytes | None
    etag: str | None = None
    last_modified: str | None = None


def backoff_delay(
    failures: int, interval: float, min_backoff: float, jitter: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before the next fetch after ``failures`` failures in a row (0: the interval).

    The delay doubles from ``min_backoff`` per failure, is capped at ``interval``, and is drawn
    from its upper half so that many replicas that failed together do not retry together.
    """
    if failures <= 0:
        return interval
    delay = min(interval, min_backoff * 2.0 ** min(failures - 1, _MAX_EXPONENT))
    return delay * (0.5 + 0.5 * jitter())


def _error_text(exc: BaseException) -> str:
    return redact_text(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class RemoteDocument(Generic[T]):
    """One remote document, parsed by ``parse`` into a ``T`` and kept fresh.

    ``source`` is an ``http://``, ``https://`` or ``file://`` URL, or a plain path. ``parse`` runs
    on each body whose bytes differ from the last good one's; a ``ValueError`` from it is a failed
    fetch. ``size_setting`` names the bound in messages (``max_jwks_bytes``), so an operator knows
    which param to raise. ``monotonic`` and ``jitter`` are injectable for tests.
    """

    def __init__(
        self,
        source: str,
        parse: Callable[[bytes], T],
        *,
        what: str,
        logger: logging.Logger,
        max_bytes: int,
        timeout: float,
        interval: float,
        min_backoff: float = 1.0,
        size_setting: str = "max_bytes",
        monotonic: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._source = source
        self._shown = redact_url(source)
        self._parse = parse
        self._what = what
        self._logger = logger
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._interval = interval
        self._min_backoff = min_backoff
        self._size_setting = size_setting
        self._monotonic = monotonic
        self._jitter = jitter
        parts = urlsplit(source)
        self._http = parts.scheme in ("http", "https")
        self._path = Path(url2pathname(parts.path)) if parts.scheme == "file" else Path(source)
        self._digest: bytes | None = None
        self._etag: str | None = None
        self._last_modified: str | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        #: The last good document; None before the first successful fetch.
        self.value: T | None = None
        self.stats = FetchStats()
        #: Why the last fetch failed (redacted); None after a success.
        self.last_error: str | None = None
        #: ``monotonic`` time of the last successful fetch, and of the last attempt.
        self.last_success: float | None = None
        self.last_attempt = -math.inf

    @property
    def loading(self) -> bool:
        """Whether a fetch is under way (a :meth:`refresh` now joins it)."""
        return self._inflight is not None

    @property
    def closed(self) -> bool:
        return self._closed

    # -- fetching -------------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Fetch once, joining a fetch already under way; on failure keep the last good document.

        :returns: whether a document was installed or confirmed unchanged (False once closed).
        """
        if self._closed:
            return False
        if self._inflight is None:
            self.last_attempt = self._monotonic()
            self._inflight = asyncio.get_running_loop().create_task(
                self._load(), name=f"fetch {self._what} {self._shown}"
            )
            self._inflight.add_done_callback(self._load_done)
        # Shielded: a caller that gives up (its deadline) must not cancel a fetch others wait for.
        return await asyncio.shield(self._inflight)

    def _load_done(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _load(self) -> bool:
        try:
            if self._http:
                answer = await self._get()
            else:
                answer = _Answer(await asyncio.to_thread(self._read_file))
            if answer.body is None:
                self.stats.not_modified += 1
            else:
                digest = hashlib.sha256(answer.body).digest()
                if digest != self._digest or self.value is None:
                    self.value = self._parse(answer.body)
                    self._digest = digest
                # Only a good document's validators: a 304 must never confirm a refused one.
                self._etag, self._last_modified = answer.etag, answer.last_modified
        except Exception as exc:
            # Whatever failed (network, status, size, a parser's error of any type), the last good
            # document stays and the refresher lives on: counted and logged, never raised.
            self.stats.failures += 1
            self.last_error = _error_text(exc)
            self._logger.warning("could not load %s from %s: %s", self._what, self._shown, self.last_error)
            return False
        self.stats.fetches += 1
        self.last_error = None
        self.last_success = self._monotonic()
        return True

    def _too_large(self) -> FetchError:
        return FetchError(
            f"{self._what} from {self._shown} is larger than {self._size_setting} ({self._max_bytes})"
        )

    def _read_file(self) -> bytes:
        with self._path.open("rb") as file:
            body = file.read(self._max_bytes + 1)
        if len(body) > self._max_bytes:
            raise self._too_large()
        return body

    async def _get(self) -> _Answer:
        """The body and its validators, or no body for a 304 (the held document is still current)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers: dict[str, str] = {}
        # Validators only while a document is held: a 304 with nothing to keep would be useless.
        if self.value is not None:
            if self._etag:
                headers["If-None-Match"] = self._etag
            if self._last_modified:
                headers["If-Modified-Since"] = self._last_modified
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with self._session.get(self._source, headers=headers, timeout=timeout) as response:
            if response.status == 304 and self.value is not None:
                return _Answer(None)
            if response.status != 200:
                raise FetchError(f"{self._shown} answered HTTP {response.status}")
            if response.content_length is not None and response.content_length > self._max_bytes:
                raise self._too_large()
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > self._max_bytes:
                    raise self._too_large()
                chunks.append(chunk)
            return _Answer(
                b"".join(chunks), response.headers.get("ETag"), response.headers.get("Last-Modified")
            )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Launch the background task: a fetch now, then every interval (sooner after failures)."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._refresh_forever(), name=f"refresh {self._what} {self._shown}"
            )

    async def _refresh_forever(self) -> None:
        failures = 0
        while True:
            failures = 0 if await self.refresh() else failures + 1
            await asyncio.sleep(backoff_delay(failures, self._interval, self._min_backoff, self._jitter))

    async def close(self, timeout: float) -> None:
        """Stop the background task and any fetch under way, and close the HTTP session."""
        self._closed = True
        tasks = [task for task in (self._task, self._inflight) if task is not None]
        self._task = self._inflight = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()
