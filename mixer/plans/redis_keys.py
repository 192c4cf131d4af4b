"""API keys in a Redis hash, shared by every replica: the ``redis`` key store.

Each field of the hash is an API key; its value is a JSON object ``{"subject": ..., "plan": ...}``
(the same record as an inline key or a key file entry)::

    HSET mixer:keys k-3f9a '{"subject": "alice", "plan": "pro"}'
    HDEL mixer:keys k-3f9a      # revoked: refused everywhere within ``refresh``

A lookup is one ``HGET``, bounded by ``timeout``. On a Redis Cluster (``redis+cluster://``) the
hash lives in one slot, on one node (and its replicas), found by redis-py's cluster client.
Answers, known and unknown keys alike, may be reused for at most ``refresh`` (default 0.5 s): the
plan handler's key cache is held to that (:attr:`RedisKeyStore.max_cache_seconds`), so a key
revoked or issued in Redis takes effect on every replica within it. A value that is not such a
record is logged (naming the hash, never the key), counted in ``invalid_records`` and treated as
an unknown key.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator
from pydantic.alias_generators import to_camel

from mixer.params import PositiveDuration
from mixer.plans._keys import KeyRecord, KeyRecordModel, KeyStore
from mixer.quota.redis_store import (
    Discovery,
    check_redis_url,
    in_flight_gate,
    is_cluster_url,
    redact_redis_url,
    redis_client,
)

if TYPE_CHECKING:
    from mixer.quota.redis_store import AnyRedis

__all__ = [
    "DEFAULT_KEY_HASH",
    "RedisKeyStore",
    "RedisKeyStoreParams",
    "RedisKeyStoreStats",
    "build_redis_key_store",
]

DEFAULT_KEY_HASH = "mixer:keys"
#: Longest value read; a larger one is an invalid record (a key record is a few dozen bytes).
MAX_RECORD_BYTES = 4096


class RedisKeyStoreParams(BaseModel):
    """Params of the ``redis`` key store (``keys: {store: {name: redis, params: {...}}}``)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )

    #: ``redis://[user:password@]host:port/db``, ``rediss://...``, ``unix://...``, ``host:port``, or a
    #: cluster's ``redis+cluster://host:port[,host:port...]``.
    url: str = Field(default="redis://127.0.0.1:6379/0", min_length=1)
    #: The hash whose fields are the API keys.
    hash: str = Field(default=DEFAULT_KEY_HASH, min_length=1)
    #: How long an answer may be reused: a revoked key stops working within this on every replica.
    refresh: PositiveDuration = timedelta(milliseconds=500)
    #: Bound on one lookup; a lookup that fails or runs out answers UNAVAILABLE.
    timeout: PositiveDuration = timedelta(milliseconds=50)
    pool_size: Annotated[int, Field(ge=1, le=1000)] = 4

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        return check_redis_url(url)

    @field_serializer("url")
    def _hide_password(self, url: str) -> str:
        return redact_redis_url(url)


@dataclass(slots=True)
class RedisKeyStoreStats:
    lookups: int = 0
    found: int = 0
    invalid_records: int = 0
    failures: int = 0


class RedisKeyStore(KeyStore):
    """Looks API keys up with ``HGET``; see the module docstring for the record format."""

    def __init__(
        self, params: RedisKeyStoreParams, logger: logging.Logger, *, client: AnyRedis | None = None
    ) -> None:
        self.params = params
        self.hash = params.hash
        self.timeout = params.timeout.total_seconds()
        #: The longest a cache in front of this store may keep an answer.
        self.max_cache_seconds = params.refresh.total_seconds()
        self.stats = RedisKeyStoreStats()
        self._logger = logger
        self._client = client
        self._owns_client = client is None
        self._gate = in_flight_gate(is_cluster_url(params.url) and client is None, params.pool_size)
        self._discovery = Discovery()
        self._closed = False

    @property
    def client(self) -> AnyRedis:
        if self._closed:
            raise RuntimeError("the Redis key store is closed")
        if self._client is None:
            self._client = redis_client(
                self.params.url, pool_size=self.params.pool_size, timeout=self.timeout
            )
        return self._client

    async def lookup(self, api_key: str) -> KeyRecord | None:
        self.stats.lookups += 1
        try:
            await self._discovery.ensure(self.client, self.timeout)
            async with asyncio.timeout(self.timeout), self._gate:
                raw = await self.client.hget(self.hash, api_key)
        except Exception:
            self.stats.failures += 1
            raise
        if raw is None:
            return None
        record = self._parse(raw)
        if record is not None:
            self.stats.found += 1
        return record

    async def shutdown(self, timeout: float) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_client and self._client is not None:
            await asyncio.wait_for(self._client.aclose(), timeout)

    def _parse(self, raw: bytes | str) -> KeyRecord | None:
        try:
            if len(raw) > MAX_RECORD_BYTES:
                raise ValueError(f"longer than {MAX_RECORD_BYTES} bytes")
            return KeyRecordModel.model_validate(json.loads(raw)).record()
        except (ValueError, ValidationError) as exc:
            self.stats.invalid_records += 1
            # The field name is the key, a secret: name the hash only.
            self._logger.warning(
                "an entry of Redis hash %s is not a {subject, plan} JSON object: %s",
                self.hash,
                type(exc).__name__,
            )
            return None


def build_redis_key_store(params: BaseModel, logger: logging.Logger) -> KeyStore:
    """The :class:`~mixer.plans.KeyStoreInfo` factory of the ``redis`` key store."""
    if not isinstance(params, RedisKeyStoreParams):
        raise TypeError(f"the redis key store needs RedisKeyStoreParams, got {type(params).__name__}")
    return RedisKeyStore(params, logger)
