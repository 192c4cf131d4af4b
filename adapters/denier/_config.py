"""The denier's params, Mixer-compatible (``status``, ``valid_duration``, ``valid_use_count``)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from mixer import Code
from mixer.params import NonNegativeDuration


class StatusParams(BaseModel):
    """A google.rpc.Status: ``code`` as a number (7) or a name (``PERMISSION_DENIED``)."""

    model_config = ConfigDict(extra="forbid")

    code: Code = Field(
        default=Code.FAILED_PRECONDITION,
        description="The status code, as a number (7) or a name (PERMISSION_DENIED).",
    )
    message: str = Field(default="", description="The status message the caller gets.")

    @field_validator("code", mode="before")
    @classmethod
    def _code_by_name(cls, value: object) -> object:
        if isinstance(value, str) and not value.isdigit():
            try:
                return Code[value.strip().upper()]
            except KeyError:
                raise ValueError(f"unknown status code {value!r}") from None
        return value


class DenierConfig(BaseModel):
    """Params of a ``denier`` handler; snake_case and camelCase keys are both accepted."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )

    status: StatusParams = Field(
        default_factory=StatusParams,
        description="What every Check answers. Mixer's default: FAILED_PRECONDITION with no message.",
    )
    valid_duration: NonNegativeDuration = Field(
        default=timedelta(seconds=5), description="How long a proxy may cache the answer."
    )
    valid_use_count: int = Field(
        default=1000, ge=0, description="How many uses a proxy may answer from its cache."
    )
