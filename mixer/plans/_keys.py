"""API key stores: where a plan handler finds the subject and plan an API key belongs to.

Built in: an inline mapping in the handler's params and a YAML or JSON file reloaded when it
changes. Plugins add stores (a Redis hash, a database) through ``mixer_register_key_stores``,
each described by a :class:`KeyStoreInfo`.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mixer.cache import ByteLRU

#: A key file larger than this is refused (the last good copy stays in use).
MAX_KEY_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """Who an API key belongs to and on which plan."""

    subject: str
    plan: str


class KeyRecordModel(BaseModel):
    """One key's entry as written in params or a key file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(
        min_length=1, description="Who the key belongs to: the subject its counters are kept under."
    )
    plan: str = Field(min_length=1, description="The plan the key's holder is on.")

    def record(self) -> KeyRecord:
        return KeyRecord(self.subject, self.plan)


class KeyStore(abc.ABC):
    """Looks API keys up. ``start`` and ``shutdown`` follow the handler lifecycle contract.

    ``lookup`` answers None for an unknown key and raises for a store that cannot answer (the
    check then fails closed with UNAVAILABLE).
    """

    # Optional lifecycle hooks: stores that hold no resources keep these no-ops.
    async def start(self) -> None:  # noqa: B027
        """Begin work; errors fail the start of the handler that owns the store."""

    async def shutdown(self, timeout: float) -> None:  # noqa: B027
        """Release everything within ``timeout`` seconds. Idempotent."""

    @abc.abstractmethod
    async def lookup(self, api_key: str) -> KeyRecord | None:
        """The record of ``api_key``, or None when the store does not know it."""


#: Builds a store from its validated params and the owning handler's logger.
KeyStoreFactory = Callable[[BaseModel, logging.Logger], KeyStore]


@dataclass(frozen=True, slots=True)
class KeyStoreInfo:
    """A key store kind as registered through the ``mixer_register_key_stores`` hook.

    Handlers name it in their params (``keys: {store: {name: <name>, params: {...}}}``); the params
    are validated against ``config_model`` when the handler is built.
    """

    name: str
    description: str
    config_model: type[BaseModel]
    factory: KeyStoreFactory
    #: Where the store came from ("builtin" or the distribution that provides it); set on registration.
    origin: str = ""


class InlineKeyStore(KeyStore):
    """Keys written in the handler's params."""

    def __init__(self, records: Mapping[str, KeyRecord]) -> None:
        self._records = dict(records)

    async def lookup(self, api_key: str) -> KeyRecord | None:
        return self._records.get(api_key)


@dataclass(slots=True)
class KeyFileStats:
    loads: int = 0
    errors: int = 0
    last_error: str = ""


class FileKeyStore(KeyStore):
    """Keys in a YAML or JSON file: a mapping of key to ``{subject, plan}``.

    The file is read by ``start`` (a missing or invalid file fails the start, so a bad reload keeps
    the running config) and then checked for changes (modification time and size) at most every
    ``poll_interval`` seconds, when a lookup comes. A copy that fails to load is logged and counted
    and the last good keys stay in use: revoking a key must not open the door to everyone.
    """

    def __init__(
        self,
        path: Path,
        logger: logging.Logger,
        *,
        poll_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.poll_interval = poll_interval
        self.stats = KeyFileStats()
        self._logger = logger
        self._clock = clock
        self._records: dict[str, KeyRecord] = {}
        self._signature: tuple[int, int] | None = None
        self._next_poll = 0.0

    async def start(self) -> None:
        self._load(initial=True)

    async def lookup(self, api_key: str) -> KeyRecord | None:
        now = self._clock()
        if now >= self._next_poll:
            self._next_poll = now + self.poll_interval
            self._load(initial=False)
        return self._records.get(api_key)

    def _load(self, *, initial: bool) -> None:
        try:
            stat = self.path.stat()
            signature = (stat.st_mtime_ns, stat.st_size)
            if signature == self._signature:
                return
            if stat.st_size > MAX_KEY_FILE_BYTES:
                raise ValueError(f"larger than {MAX_KEY_FILE_BYTES} bytes")
            records = parse_key_file(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            self.stats.errors += 1
            self.stats.last_error = str(exc)
            if initial:
                raise ValueError(f"key file {self.path}: {exc}") from exc
            self._logger.warning("key file %s not reloaded, keeping the last good keys: %s", self.path, exc)
            return
        self._records = records
        self._signature = signature
        self.stats.loads += 1


def parse_key_file(text: str) -> dict[str, KeyRecord]:
    """Keys from YAML or JSON text (JSON is YAML); errors name the key's position, never the key.

    :raises ValueError: not a mapping of key to ``{subject, plan}``.
    """
    try:
        data: Any = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError(f"not valid YAML or JSON: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError("expected a mapping of API key to {subject, plan}")
    records: dict[str, KeyRecord] = {}
    for index, (key, value) in enumerate(data.items(), start=1):
        if not isinstance(key, str) or not key:
            raise ValueError(f"entry {index}: an API key must be a non-empty string")
        try:
            records[key] = KeyRecordModel.model_validate(value).record()
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'value'}: {error['msg']}"
                for error in exc.errors(include_url=False)
            )
            # The key itself is a secret: say where, not what.
            raise ValueError(f"entry {index}: {problems}") from None
    return records


#: Bytes of API keys and records a key cache may hold.
DEFAULT_KEY_CACHE_BYTES = 4 * 1024 * 1024


class CachedKeyStore(KeyStore):
    """A bounded cache in front of a remote store: answers (unknown keys too) kept for ``ttl``.

    Bounded by ``max_entries`` and by ``max_bytes`` (callers choose the keys they send, and their
    length); least recently used entries go first; ``hits``, ``misses`` and ``evictions`` count.
    """

    def __init__(
        self,
        inner: KeyStore,
        *,
        max_entries: int,
        ttl: float,
        negative_ttl: float,
        max_bytes: int = DEFAULT_KEY_CACHE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.max_entries = max_entries
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._clock = clock
        #: Answers from the cache, and lookups that went to the store (expired entries too).
        self.hits = 0
        self.misses = 0
        self._entries: ByteLRU[str, tuple[float, KeyRecord | None]] = ByteLRU(
            max_bytes, max_entries=max_entries, size=_key_entry_size, name=f"plans.keys.{id(self):x}"
        )

    @property
    def evictions(self) -> int:
        return self._entries.evictions

    @property
    def cache(self) -> ByteLRU[str, tuple[float, KeyRecord | None]]:
        return self._entries

    async def start(self) -> None:
        await self.inner.start()

    async def shutdown(self, timeout: float) -> None:
        await self.inner.shutdown(timeout)

    async def lookup(self, api_key: str) -> KeyRecord | None:
        now = self._clock()
        entry = self._entries.get(api_key)
        if entry is not None and entry[0] > now:
            self.hits += 1
            return entry[1]
        self.misses += 1
        record = await self.inner.lookup(api_key)
        ttl = self.ttl if record is not None else self.negative_ttl
        if ttl > 0 and self.max_entries > 0:
            self._entries.put(api_key, (now + ttl, record))
        return record


def _key_entry_size(key: str, entry: tuple[float, KeyRecord | None]) -> int:
    record = entry[1]
    held = len(record.subject) + len(record.plan) if record is not None else 0
    return 2 * len(key) + held + 200


def file_key_store(path: str, logger: logging.Logger, poll_interval: float) -> FileKeyStore:
    return FileKeyStore(Path(os.path.expanduser(path)), logger, poll_interval=poll_interval)
