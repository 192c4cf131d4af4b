from __future__ import annotations

import math
from datetime import timedelta

import pytest
from pydantic import BaseModel, ValidationError

from mixer.params import Duration, NonNegativeDuration, PositiveDuration


class _Model(BaseModel):
    any: Duration = timedelta(0)
    positive: PositiveDuration = timedelta(seconds=1)
    non_negative: NonNegativeDuration = timedelta(0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5s", timedelta(seconds=1.5)),
        ("250us", timedelta(microseconds=250)),
        ("250µs", timedelta(microseconds=250)),
        (" 2s ", timedelta(seconds=2)),
        (30, timedelta(seconds=30)),
        (0.25, timedelta(seconds=0.25)),
        (timedelta(seconds=3), timedelta(seconds=3)),
    ],
)
def test_durations_from_go_text_seconds_or_timedelta(value: object, expected: timedelta) -> None:
    assert _Model(positive=value).positive == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "10", "m", "10 m", "1d", True, None, math.inf, "0s", -1])
def test_bad_positive_durations_are_rejected(value: object) -> None:
    with pytest.raises(ValidationError, match="positive"):
        _Model(positive=value)  # type: ignore[arg-type]


def test_sign_bounds() -> None:
    assert _Model.model_validate({"any": "-5s"}).any == timedelta(seconds=-5)
    assert _Model.model_validate({"non_negative": "0s"}).non_negative == timedelta(0)
    with pytest.raises(ValidationError, match="non_negative"):
        _Model.model_validate({"non_negative": "-1ms"})
