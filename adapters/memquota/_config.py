"""memquota's params: Mixer's (``quotas``, ``min_deduplication_duration``) plus plan subjects.

:class:`QuotaHandlerParams` is what every counter-store quota adapter shares; redisquota extends it.

snake_case and camelCase keys are both accepted, as Istio's samples use camelCase.
"""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from mixer.params import NonNegativeDuration, PositiveDuration
from mixer.plans import SubjectsParams


class _Params(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


class RateLimitAlgorithm(enum.Enum):
    FIXED_WINDOW = "FIXED_WINDOW"
    ROLLING_WINDOW = "ROLLING_WINDOW"


class FailurePolicy(enum.Enum):
    """What a quota handler answers when its counter store cannot."""

    #: Grant the request (uncounted) and count it in ``fail_open_grants``.
    FAIL_OPEN = "fail_open"
    #: Refuse it: UNAVAILABLE "quota store unavailable".
    FAIL_CLOSED = "fail_closed"


class OverrideParams(_Params):
    """Replaces ``max_amount`` (and ``valid_duration``) when every dimension here equals the instance's."""

    dimensions: dict[str, str] = Field(min_length=1)
    max_amount: int = Field(ge=0)
    #: Empty: the quota's own.
    valid_duration: PositiveDuration | None = None

    @field_validator("dimensions", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: Any) -> Any:
        # YAML reads `port: 8080` or `canary: true` as numbers and booleans; instances compare as text.
        if isinstance(value, dict):
            return {k: _text(v) for k, v in value.items()}
        return value


class QuotaParams(_Params):
    """One quota, named after the quota instance it limits (``name``, ``name.namespace``, ...)."""

    name: str = Field(min_length=1)
    max_amount: int = Field(ge=0)
    #: The window: allocations count against the quota for this long.
    valid_duration: PositiveDuration
    #: ROLLING_WINDOW's step; zero: the adapter's default (memquota: Mixer's 100 ms tick;
    #: redisquota: a tenth of valid_duration).
    bucket_duration: NonNegativeDuration = timedelta(0)
    #: None: the adapter's default, as Mixer's (memquota: ROLLING_WINDOW; redisquota: FIXED_WINDOW).
    rate_limit_algorithm: RateLimitAlgorithm | None = None
    overrides: list[OverrideParams] = []

    @model_validator(mode="after")
    def _buckets_fit(self) -> QuotaParams:
        shortest = min([self.valid_duration, *(o.valid_duration for o in self.overrides if o.valid_duration)])
        if self.bucket_duration > shortest:
            raise ValueError(f"bucket_duration {self.bucket_duration} is longer than the window {shortest}")
        return self


class QuotaHandlerParams(_Params):
    """The params every counter-store quota adapter shares (memquota, redisquota)."""

    #: Mixer quotas, for the quota template.
    quotas: list[QuotaParams] = []
    #: How long a (deduplication id, quota) answer is replayed to retries, for quotas and plan checks.
    min_deduplication_duration: NonNegativeDuration = timedelta(seconds=1)
    #: How plancheck callers map to plans.
    subjects: SubjectsParams = SubjectsParams()

    @model_validator(mode="after")
    def _unique_quota_names(self) -> QuotaHandlerParams:
        seen: set[str] = set()
        for quota in self.quotas:
            if quota.name.lower() in seen:
                raise ValueError(f'quota "{quota.name}" is configured twice')
            seen.add(quota.name.lower())
        return self


class MemquotaConfig(QuotaHandlerParams):
    """Params of a ``memquota`` handler."""

    #: Counters kept at most; the least recently used go first (counted as evictions).
    max_counters: int = Field(default=100_000, ge=1)
    #: Deduplication records kept at most; the oldest go first.
    max_deduplication_entries: int = Field(default=100_000, ge=0)


def _text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value
