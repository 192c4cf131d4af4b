"""Rate-limit algorithms as pure state transitions.

Each algorithm takes the stored state of one counter, the current time and a request for
``amount`` units and returns the new state and a :class:`Decision`. Stores (memory, Redis) keep
the state and apply transitions atomically; the Redis store mirrors these functions in Lua, and
one table of tests runs against both.

Times are float seconds on the wall clock (epoch based) because calendar-aligned windows and
counters shared by several processes through Redis need the same time everywhere.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo

from mixer.frozen import quick_init

_UTC = ZoneInfo("UTC")


class Algorithm(enum.Enum):
    FIXED_WINDOW = "fixed_window"
    ROLLING_WINDOW = "rolling_window"
    GCRA = "gcra"


class CalendarUnit(enum.Enum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


@quick_init
@dataclass(frozen=True, slots=True)
class Decision:
    """What one allocation answered.

    ``remaining`` is what is left after this allocation; ``reset_after`` the seconds until the
    limit is whole again (window end, or GCRA's drain time); ``retry_after`` the seconds until a
    denied ``amount`` could be granted (None when granted).
    """

    granted: int
    limit: int
    remaining: int
    reset_after: float
    retry_after: float | None = None

    @property
    def allowed(self) -> bool:
        return self.retry_after is None


class Window(Protocol):
    def bounds(self, now: float) -> tuple[float, float]:
        """The start and end (epoch seconds) of the window containing ``now``."""
        ...


@dataclass(frozen=True, slots=True)
class EpochWindow:
    """Windows of ``seconds`` aligned to the Unix epoch (what Mixer's memquota did)."""

    seconds: float

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ValueError("window length must be positive")

    def bounds(self, now: float) -> tuple[float, float]:
        start = math.floor(now / self.seconds) * self.seconds
        return start, start + self.seconds


@dataclass(frozen=True, slots=True)
class CalendarWindow:
    """Windows aligned to a calendar unit in a time zone: a day starts at local midnight."""

    unit: CalendarUnit
    zone: tzinfo = _UTC
    #: The last window computed, (start, end): a call within it answers without the calendar.
    #: One tuple replaced whole, so that a reader never sees a start and an end of two windows.
    _last: list[tuple[float, float]] = field(
        default_factory=lambda: [(0.0, 0.0)], init=False, repr=False, compare=False, hash=False
    )

    def bounds(self, now: float) -> tuple[float, float]:
        last = self._last[0]
        if last[0] <= now < last[1]:
            return last
        last = self._compute(now)
        self._last[0] = last
        return last

    def _compute(self, now: float) -> tuple[float, float]:
        local = datetime.fromtimestamp(now, self.zone)
        if self.unit is CalendarUnit.MINUTE:
            start = local.replace(second=0, microsecond=0)
            end = start + timedelta(minutes=1)
        elif self.unit is CalendarUnit.HOUR:
            start = local.replace(minute=0, second=0, microsecond=0)
            end = start + timedelta(hours=1)
        elif self.unit is CalendarUnit.DAY:
            start = local.replace(hour=0, minute=0, second=0, microsecond=0)
            # Add a calendar day in local time: across a DST change a day is 23 or 25 hours.
            end = _local_midnight(start.date() + timedelta(days=1), self.zone)
            start = _local_midnight(start.date(), self.zone)
        else:
            first = local.date().replace(day=1)
            following = (first + timedelta(days=32)).replace(day=1)
            start = _local_midnight(first, self.zone)
            end = _local_midnight(following, self.zone)
        return start.timestamp(), end.timestamp()


def _local_midnight(day: object, zone: tzinfo) -> datetime:
    assert hasattr(day, "year")
    return datetime(day.year, day.month, day.day, tzinfo=zone)  # type: ignore[attr-defined]


def _grant(available: int, amount: int, best_effort: bool) -> int:
    if amount <= available:
        return amount
    return max(available, 0) if best_effort else 0


@quick_init
@dataclass(frozen=True, slots=True)
class FixedWindowState:
    window_start: float
    used: int


def fixed_window(
    state: FixedWindowState | None,
    now: float,
    amount: int,
    limit: int,
    window: Window,
    best_effort: bool = False,
) -> tuple[FixedWindowState, Decision]:
    """A counter per window. Around a window edge up to twice the limit may pass in one window length."""
    start, end = window.bounds(now)
    used = state.used if state is not None and state.window_start == start else 0
    granted = _grant(limit - used, amount, best_effort)
    used += granted
    reset_after = max(end - now, 0.0)
    denied = granted == 0 and amount > 0
    return FixedWindowState(start, used), Decision(
        granted, limit, max(limit - used, 0), reset_after, reset_after if denied else None
    )


@dataclass(frozen=True, slots=True)
class RollingWindowState:
    #: (bucket index, units) oldest first; bucket index = floor(time / bucket length).
    buckets: tuple[tuple[int, int], ...]


def rolling_window(
    state: RollingWindowState | None,
    now: float,
    amount: int,
    limit: int,
    window_seconds: float,
    bucket_seconds: float,
    best_effort: bool = False,
) -> tuple[RollingWindowState, Decision]:
    """Mixer's rolling window: the window is cut into buckets; what the window's buckets hold counts.

    The window is the current bucket and the ``window / bucket - 1`` before it: a bucket leaves
    one window length after its start, so the window slides in steps of one bucket.
    """
    if not 0 < bucket_seconds <= window_seconds:
        raise ValueError("bucket length must be positive and at most the window length")
    n_buckets = math.ceil(window_seconds / bucket_seconds)
    current = math.floor(now / bucket_seconds)
    oldest = current - n_buckets + 1
    live = [(i, n) for i, n in (state.buckets if state else ()) if i >= oldest]
    used = sum(n for _, n in live)
    granted = _grant(limit - used, amount, best_effort)
    if granted:
        if live and live[-1][0] == current:
            live[-1] = (current, live[-1][1] + granted)
        else:
            live.append((current, granted))
        used += granted
    # The window is whole again once its newest used bucket has slid out.
    newest = live[-1][0] if live else current
    reset_after = max((newest + n_buckets) * bucket_seconds - now, 0.0)
    retry_after: float | None = None
    if granted == 0 and amount > 0:
        # Units come back as the oldest buckets leave the window; find when enough have.
        need = amount - (limit - used)
        retry_after = reset_after
        freed = 0
        for index, units in live:
            freed += units
            if freed >= need:
                retry_after = max((index + n_buckets) * bucket_seconds - now, 0.0)
                break
    return RollingWindowState(tuple(live)), Decision(
        granted, limit, max(limit - used, 0), reset_after, retry_after
    )


@dataclass(frozen=True, slots=True)
class GcraState:
    #: Theoretical arrival time: when the counter would be empty again at the exact rate.
    tat: float


def gcra(
    state: GcraState | None,
    now: float,
    amount: int,
    limit: int,
    period: float,
    burst: int,
    best_effort: bool = False,
) -> tuple[GcraState, Decision]:
    """Generic cell rate algorithm: ``limit`` per ``period`` at an exact rate, ``burst`` at once.

    Each unit costs an emission interval ``period / limit``; a request fits when the theoretical
    arrival time after it lies no more than ``burst`` intervals ahead of now.
    """
    if limit <= 0 or period <= 0 or burst <= 0:
        raise ValueError("limit, period and burst must be positive")
    interval = period / limit
    capacity = burst * interval
    tat = max(state.tat if state else now, now)
    # Whole units that fit before the bucket overflows; a tiny epsilon absorbs float error.
    available = math.floor((capacity - (tat - now)) / interval + 1e-9)
    granted = _grant(available, amount, best_effort)
    tat += granted * interval
    remaining = max(math.floor((capacity - (tat - now)) / interval + 1e-9), 0)
    retry_after: float | None = None
    if granted == 0 and amount > 0:
        retry_after = max(tat + amount * interval - capacity - now, 0.0) if amount <= burst else math.inf
    return GcraState(tat), Decision(granted, limit, remaining, max(tat - now, 0.0), retry_after)
