"""Field types for adapter config models (pydantic), shared so every adapter reads params alike."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, Field

from mixer.values import parse_duration

__all__ = ["Duration", "NonNegativeDuration", "PositiveDuration", "to_timedelta"]


def to_timedelta(value: object) -> object:
    """Go duration text (``"1h30m"``, ``"500ms"``), a number of seconds, or a timedelta.

    Other types pass through for pydantic to reject with its own message.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '10s' or a number of seconds, got {value!r}")
    if isinstance(value, str):
        return parse_duration(value.strip())
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"duration must be finite, got {value!r}")
        return timedelta(seconds=value)
    return value


Duration = Annotated[timedelta, BeforeValidator(to_timedelta)]
PositiveDuration = Annotated[Duration, Field(gt=timedelta(0))]
NonNegativeDuration = Annotated[Duration, Field(ge=timedelta(0))]
