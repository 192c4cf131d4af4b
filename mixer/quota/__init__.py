"""Quota: rate-limit algorithms (pure, clock-injected) shared by every quota store, the
:class:`CounterStore` contract and the in-process :class:`MemoryCounterStore`. The Redis store is
:mod:`mixer.quota.redis_store`; the handler the counter-store adapters share is
:mod:`mixer.quotahandler` (it needs plans and the adapter contract, which sit above this package)."""

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
from mixer.quota._memory import DEFAULT_MAX_DEDUP_BYTES, MemoryCounterStore, MemoryStoreStats
from mixer.quota._store import Allocation, CounterRequest, CounterStore

__all__ = [
    "DEFAULT_MAX_DEDUP_BYTES",
    "Algorithm",
    "Allocation",
    "CalendarUnit",
    "CalendarWindow",
    "CounterRequest",
    "CounterStore",
    "Decision",
    "EpochWindow",
    "FixedWindowState",
    "GcraState",
    "MemoryCounterStore",
    "MemoryStoreStats",
    "RollingWindowState",
    "Window",
    "fixed_window",
    "gcra",
    "rolling_window",
]
