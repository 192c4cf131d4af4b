"""Quota: rate-limit algorithms (pure, clock-injected) shared by every quota store."""

from mixer.quota._algorithms import (
    Algorithm,
    CalendarUnit,
    CalendarWindow,
    Decision,
    EpochWindow,
    FixedWindowState,
    GcraState,
    RollingWindowState,
    Window,
    fixed_window,
    gcra,
    rolling_window,
)

__all__ = [
    "Algorithm",
    "CalendarUnit",
    "CalendarWindow",
    "Decision",
    "EpochWindow",
    "FixedWindowState",
    "GcraState",
    "RollingWindowState",
    "Window",
    "fixed_window",
    "gcra",
    "rolling_window",
]
