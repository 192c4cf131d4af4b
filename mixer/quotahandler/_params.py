"""The params every counter-store quota adapter shares: Mixer's quotas (``quotas``,
``min_deduplication_duration``) plus plan subjects. Each adapter extends :class:`QuotaHandlerParams`
with its store's settings.

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

    dimensions: dict[str, str] = Field(
        min_length=1, description="The dimension values an instance must have for this override to apply."
    )
    max_amount: int = Field(ge=0, description="The quota's amount for matching instances.")
    valid_duration: PositiveDuration | None = Field(default=None, description="Empty: the quota's own.")

    @field_validator("dimensions", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: Any) -> Any:
        # YAML reads `port: 8080` or `canary: true` as numbers and booleans; instances compare as text.
        if isinstance(value, dict):
            return {k: _text(v) for k, v in value.items()}
        return value


class QuotaParams(_Params):
    """One quota, named after the quota instance it limits (``name``, ``name.namespace``, ...)."""

    name: str = Field(
        min_length=1, description="The quota instance this limits (``name``, ``name.namespace``, ...)."
    )
    max_amount: int = Field(ge=0, description="Allocations allowed per window.")
    valid_duration: PositiveDuration = Field(
        description="The window: allocations count against the quota for this long."
    )
    bucket_duration: NonNegativeDuration = Field(
        default=timedelta(0),
        description=(
            "ROLLING_WINDOW's step; zero: the adapter's default (memquota: Mixer's 100 ms tick; "
            "redisquota: a tenth of valid_duration)."
        ),
    )
    rate_limit_algorithm: RateLimitAlgorithm | None = Field(
        default=None,
        description=(
            "``FIXED_WINDOW`` or ``ROLLING_WINDOW``; unset: the adapter's default, as Mixer's "
            "(memquota: ROLLING_WINDOW; redisquota: FIXED_WINDOW)."
        ),
    )
    overrides: list[OverrideParams] = Field(
        default=[],
        description="Other amounts for instances with given dimension values; the first match wins.",
    )

    @model_validator(mode="after")
    def _buckets_fit(self) -> QuotaParams:
        shortest = min([self.valid_duration, *(o.valid_duration for o in self.overrides if o.valid_duration)])
        if self.bucket_duration > shortest:
            raise ValueError(f"bucket_duration {self.bucket_duration} is longer than the window {shortest}")
        return self


class QuotaHandlerParams(_Params):
    """The params every counter-store quota adapter shares (memquota, redisquota)."""

    quotas: list[QuotaParams] = Field(default=[], description="Mixer quotas, for the quota template.")
    min_deduplication_duration: NonNegativeDuration = Field(
        default=timedelta(seconds=1),
        description=(
            "How long a (deduplication id, quota) answer is replayed to retries, for quotas and plan checks."
        ),
    )
    subjects: SubjectsParams = Field(
        default=SubjectsParams(), description="How plancheck callers map to plans."
    )

    @model_validator(mode="after")
    def _unique_quota_names(self) -> QuotaHandlerParams:
        seen: set[str] = set()
        for quota in self.quotas:
            if quota.name.lower() in seen:
                raise ValueError(f'quota "{quota.name}" is configured twice')
            seen.add(quota.name.lower())
        return self


def _text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value
