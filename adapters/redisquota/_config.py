"""redisquota's params: memquota's (Mixer ``quotas``, ``min_deduplication_duration``, plan
``subjects``) plus Mixer redisquota's ``redis_server_url`` and ``connection_pool_size`` and how
the handler behaves when Redis cannot answer."""

from __future__ import annotations

from datetime import timedelta
from typing import Self

from pydantic import Field, field_serializer, field_validator, model_validator

from mixer.params import NonNegativeDuration, PositiveDuration
from mixer.quota.redis_store import (
    DEFAULT_KEY_PREFIX,
    check_cluster_prefix,
    check_redis_url,
    redact_redis_url,
)
from mixer.quotahandler import FailurePolicy, QuotaHandlerParams


class RedisquotaConfig(QuotaHandlerParams):
    """Params of a ``redisquota`` handler."""

    redis_server_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        min_length=1,
        description=(
            "``redis://[user:password@]host:port/db``, ``rediss://...``, ``unix://...`` or Mixer's "
            "``host:port``; a Redis Cluster: ``redis+cluster://host:port[,host:port...]`` "
            "(``rediss+cluster://`` with TLS)."
        ),
    )
    connection_pool_size: int = Field(
        default=10,
        ge=1,
        le=1000,
        description=(
            "Connections kept to Redis at most (calls in flight, with a cluster; per node at most that "
            "many connections); a Check waits (within ``timeout``) for a free one."
        ),
    )
    key_prefix: str = Field(
        default=DEFAULT_KEY_PREFIX,
        description="Prepended to every key, so that several deployments can share one Redis.",
    )
    failure_policy: FailurePolicy = Field(
        default=FailurePolicy.FAIL_CLOSED,
        description="What a Check gets when Redis cannot answer within ``timeout``.",
    )
    timeout: PositiveDuration = Field(
        default=timedelta(milliseconds=50), description="Bound on one round trip to Redis."
    )
    key_expiry_slack: NonNegativeDuration = Field(
        default=timedelta(seconds=2),
        description="How long every key outlives the state it holds (covers clock skew between replicas).",
    )

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
