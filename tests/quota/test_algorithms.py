"""Table-driven tests of the quota algorithms at window edges, with time given explicitly."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from mixer.quota import (
    CalendarUnit,
    CalendarWindow,
    EpochWindow,
    FixedWindowState,
    GcraState,
    RollingWindowState,
    fixed_window,
    gcra,
    rolling_window,
)

# Each step: (time, amount, best_effort, expected granted, expected remaining)
Step = tuple[float, int, bool, int, int]


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


FIXED_CASES: list[tuple[str, int, float, list[Step]]] = [
    ("fills then denies", 3, 60, [(0, 1, False, 1, 2), (1, 2, False, 2, 0), (2, 1, False, 0, 0)]),
    ("all or nothing", 3, 60, [(0, 2, False, 2, 1), (1, 2, False, 0, 1)]),
    ("best effort takes the rest", 3, 60, [(0, 2, False, 2, 1), (1, 2, True, 1, 0), (2, 1, True, 0, 0)]),
    ("resets exactly at the edge", 2, 60, [(59.999, 2, False, 2, 0), (60.0, 2, False, 2, 0)]),
    ("twice the limit around an edge", 5, 10, [(9.9, 5, False, 5, 0), (10.1, 5, False, 5, 0)]),
    ("last instant still old window", 1, 10, [(0, 1, False, 1, 0), (9.999999, 1, False, 0, 0)]),
    ("zero amount always granted", 1, 10, [(0, 1, False, 1, 0), (1, 0, False, 0, 0)]),
]


@pytest.mark.parametrize(
    ("limit", "seconds", "steps"), [c[1:] for c in FIXED_CASES], ids=[c[0] for c in FIXED_CASES]
)
def test_fixed_window(limit: int, seconds: float, steps: list[Step]) -> None:
    state: FixedWindowState | None = None
    window = EpochWindow(seconds)
    for now, amount, best_effort, granted, remaining in steps:
        state, decision = fixed_window(state, now, amount, limit, window, best_effort)
        assert (decision.granted, decision.remaining) == (granted, remaining), now
        _, end = window.bounds(now)
        assert decision.reset_after == pytest.approx(end - now)
        if granted == 0 and amount > 0:
            assert not decision.allowed
            assert decision.retry_after == pytest.approx(end - now)
        else:
            assert decision.allowed


ROLLING_CASES: list[tuple[str, int, float, float, list[Step]]] = [
    ("fills across buckets", 4, 10, 1, [(0.5, 2, False, 2, 2), (3.5, 2, False, 2, 0), (9.9, 1, False, 0, 0)]),
    # A bucket leaves the window one window length after its start: [0,1) at t=10, [3,4) at t=13.
    (
        "oldest bucket slides out",
        4,
        10,
        1,
        [
            (0.5, 2, False, 2, 2),
            (3.5, 2, False, 2, 0),
            (10.0, 2, False, 2, 0),
            (12.9, 1, False, 0, 0),
            (13.0, 1, False, 1, 1),
        ],
    ),
    (
        "no double rate at the edge",
        5,
        10,
        1,
        [(9.9, 5, False, 5, 0), (10.1, 5, False, 0, 0), (18.9, 5, False, 0, 0), (19.0, 5, False, 5, 0)],
    ),
    ("empties after one window", 5, 10, 1, [(9.9, 5, False, 5, 0), (20.0, 5, False, 5, 0)]),
    ("best effort", 3, 10, 2, [(0, 2, False, 2, 1), (1, 5, True, 1, 0)]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("limit", "window", "bucket", "steps"), [c[1:] for c in ROLLING_CASES], ids=[c[0] for c in ROLLING_CASES]
)
def test_rolling_window(limit: int, window: float, bucket: float, steps: list[Step]) -> None:
    state: RollingWindowState | None = None
    for now, amount, best_effort, granted, remaining in steps:
        state, decision = rolling_window(state, now, amount, limit, window, bucket, best_effort)
        assert (decision.granted, decision.remaining) == (granted, remaining), now
        assert len(state.buckets) <= math.ceil(window / bucket)


def test_rolling_window_retry_after_is_when_enough_units_leave() -> None:
    state, _ = rolling_window(None, 0.5, 2, 4, 10, 1)
    state, _ = rolling_window(state, 3.5, 2, 4, 10, 1)
    _, denied = rolling_window(state, 5.0, 3, 4, 10, 1)
    # Two units come back at t=10 and two more at t=13; three are needed.
    assert denied.retry_after == pytest.approx(8.0)
    _, denied_one = rolling_window(state, 5.0, 1, 4, 10, 1)
    assert denied_one.retry_after == pytest.approx(5.0)


def test_rolling_window_rejects_bad_buckets() -> None:
    with pytest.raises(ValueError, match="bucket length"):
        rolling_window(None, 0, 1, 1, 10, 20)


GCRA_CASES: list[tuple[str, int, float, int, list[Step]]] = [
    # 10 per second, burst 2: two at once, then one every 0.1 s.
    ("burst then exact rate", 10, 1, 2, [(0, 1, False, 1, 1), (0, 1, False, 1, 0), (0, 1, False, 0, 0),
                                         (0.1, 1, False, 1, 0), (0.15, 1, False, 0, 0), (0.2, 1, False, 1, 0)]),
    ("idle refills to burst only", 10, 1, 3, [(0, 3, False, 3, 0), (100, 4, False, 0, 3), (100, 3, False, 3, 0)]),
    ("best effort", 10, 1, 3, [(0, 2, False, 2, 1), (0, 5, True, 1, 0)]),
    ("exact rate over a minute", 60, 60, 1, [(0, 1, False, 1, 0), (0.5, 1, False, 0, 0), (1.0, 1, False, 1, 0)]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("limit", "period", "burst", "steps"), [c[1:] for c in GCRA_CASES], ids=[c[0] for c in GCRA_CASES]
)
def test_gcra(limit: int, period: float, burst: int, steps: list[Step]) -> None:
    state: GcraState | None = None
    for now, amount, best_effort, granted, remaining in steps:
        state, decision = gcra(state, now, amount, limit, period, burst, best_effort)
        assert (decision.granted, decision.remaining) == (granted, remaining), now
        assert decision.limit == limit


def test_gcra_retry_after_and_reset() -> None:
    state, _ = gcra(None, 0, 2, 10, 1, 2)
    state, denied = gcra(state, 0, 1, 10, 1, 2)
    assert denied.retry_after == pytest.approx(0.1)
    assert denied.reset_after == pytest.approx(0.2)
    _, too_big = gcra(state, 0, 3, 10, 1, 2)
    assert too_big.retry_after == math.inf


def test_gcra_exact_over_long_run() -> None:
    # At 100 requests per second offered against 10/s, exactly 10 per second pass after the burst.
    state: GcraState | None = None
    granted = 0
    for i in range(1000):
        state, decision = gcra(state, i / 100, 1, 10, 1, 1)
        granted += decision.granted
    assert granted == 100


@pytest.mark.parametrize(
    ("unit", "zone", "now", "start", "end"),
    [
        (CalendarUnit.MINUTE, "UTC", "2026-11-25T10:00:59.9+00:00", "2026-11-25T10:00:00+00:00", "2026-11-25T10:01:00+00:00"),
        (CalendarUnit.HOUR, "UTC", "2026-11-25T10:59:59+00:00", "2026-11-25T10:00:00+00:00", "2026-11-25T11:00:00+00:00"),
        (CalendarUnit.DAY, "Europe/Berlin", "2026-11-25T23:30:00+00:00", "2026-11-26T00:00:00+01:00", "2026-11-27T00:00:00+01:00"),
        # A DST day in Berlin is 23 hours long.
        (CalendarUnit.DAY, "Europe/Berlin", "2026-03-29T12:00:00+02:00", "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"),
        (CalendarUnit.MONTH, "UTC", "2026-12-31T23:59:59+00:00", "2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
        (CalendarUnit.MONTH, "America/New_York", "2026-03-01T03:00:00+00:00", "2026-02-01T00:00:00-05:00", "2026-03-01T00:00:00-05:00"),
    ],
)  # fmt: skip
def test_calendar_windows(unit: CalendarUnit, zone: str, now: str, start: str, end: str) -> None:
    window = CalendarWindow(unit, ZoneInfo(zone))
    assert window.bounds(_ts(now)) == (_ts(start), _ts(end))


def test_calendar_window_remembers_its_window_but_not_past_its_bounds() -> None:
    window = CalendarWindow(CalendarUnit.DAY, ZoneInfo("Europe/Berlin"))
    fresh = CalendarWindow(CalendarUnit.DAY, ZoneInfo("Europe/Berlin"))
    day = _ts("2026-03-29T00:00:00+01:00")
    # Inside one day, at its very end, at the next day's start, then back in time (a clock step).
    for now in (day + 3600, day + 82799.999, day + 82800, day + 10, day - 0.001):
        assert window.bounds(now) == fresh._compute(now)
    assert window == fresh
    assert hash(window) == hash(fresh)
    assert "_last" not in repr(window)


def test_fixed_window_calendar_aligned_day() -> None:
    window = CalendarWindow(CalendarUnit.DAY, ZoneInfo("UTC"))
    before = datetime(2026, 11, 25, 23, 59, 59, tzinfo=UTC).timestamp()
    state, first = fixed_window(None, before, 1, 1, window)
    assert first.granted == 1
    assert first.reset_after == pytest.approx(1.0)
    state, denied = fixed_window(state, before + 0.5, 1, 1, window)
    assert denied.granted == 0
    _, next_day = fixed_window(state, before + 1.0, 1, 1, window)
    assert next_day.granted == 1


def test_epoch_window_rejects_nonpositive() -> None:
    with pytest.raises(ValueError, match="positive"):
        EpochWindow(0)
