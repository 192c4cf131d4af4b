"""redisquota's params: memquota's (Mixer ``quotas``, ``min_deduplication_duration``, plan
``subjects``) plus Mixer redisquota's ``redis_server_url`` and ``connection_pool_size`` and how
the handler behaves when Redis cannot answer."""

from __future__ import annotations

from datetime import timedelta
from typing import Self

from pydantic import Field, field_serializer, field_validator, model_validator

from adapters.memquota._config import FailurePolicy, QuotaHandlerParams
from mixer.params import NonNegativeDuration, PositiveDuration
from mixer.quota._redis import (
    DEFAULT_KEY_PREFIX,
    check_cluster_prefix,
    check_redis_url,
    redact_redis_url,
)


class RedisquotaConfig(QuotaHandlerParams):
    """Params of a ``redisquota`` handler."""

    #: ``redis://[user:password@]host:port/db``, ``rediss://...``, ``unix://...`` or Mixer's ``host:port``;
    #: a Redis Cluster: ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` with TLS).
    redis_server_url: str = Field(default="redis://127.0.0.1:6379/0", min_length=1)
    #: Connections kept to Redis at most (calls in flight, with a cluster; per node at most that many
    #: connections); a Check waits (within ``timeout``) for a free one.
    connection_pool_size: int = Field(default=10, ge=1, le=1000)
    #: Prepended to every key, so that several deployments can share one Redis.
    key_prefix: str = DEFAULT_KEY_PREFIX
    #: What a Check gets when Redis cannot answer within ``timeout``.
    failure_policy: FailurePolicy = FailurePolicy.FAIL_CLOSED
    #: Bound on one round trip to Redis.
    timeout: PositiveDuration = timedelta(milliseconds=50)
    #: How long every key outlives the state it holds (covers clock skew between replicas).
    key_expiry_slack: NonNegativeDuration = timedelta(seconds=2)

    @field_validator("redis_server_url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        return check_redis_url(url)

    @model_validator(mode="after")
    def _cluster_prefix(self) -> Self:
        check_cluster_prefix(self.redis_server_url, self.key_prefix)
        return self

    @field_serializer("redis_server_url")
    def _hide_password(self, url: str) -> str:
        return redact_redis_url(url)
