"""glibc's thresholds set at start and the heaps trimmed while serving (the RSS bound itself is in
test_memory_bounds.py)."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
from collections.abc import Iterator

import pytest

from mixer.server import _malloc
from mixer.server._malloc import (
    THRESHOLD_ENVS,
    TRIM_INTERVAL,
    TRIM_INTERVAL_ENV,
    trim_heaps,
    trim_heaps_periodically,
    trim_interval,
    tune_malloc,
)

GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.fixture
def untuned() -> Iterator[None]:
    before = _malloc._heaps.trim
    try:
        _malloc._heaps.trim = None
        yield
    finally:
        _malloc._heaps.trim = before


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


# In a process of its own: the thresholds it sets stay out of the other tests' way, and the heap
# holds only what the imports left in it.
_HEAP_PROBE = """
import ctypes

from mixer.server._malloc import trim_heaps, tune_malloc


def rss_kib():
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


assert hasattr(ctypes.CDLL(None), "malloc_trim")
tuned = tune_malloc({})
# Freed blocks of 400 KB between live ones of 128 KB: below the mmap threshold now, so they stay
# in the heap, pinned by the live ones, until trimmed. The pins are too big for the holes the
# imports left in the heap (smaller pins landed there, leaving the big blocks in one run at the
# heap's top, where freeing them trims them at once).
blocks = []
for i in range(200):
    blocks.append(bytearray(400 * 1024))
    blocks.append(bytearray(128 * 1024 + i))
held = rss_kib()
del blocks[::2]
freed = rss_kib()
trimmed = trim_heaps()
print(tuned, held, freed, trimmed, rss_kib())
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt and malloc_trim are glibc's; other C libraries are left alone")
def test_on_glibc_big_blocks_come_from_the_heaps_and_trimming_gives_their_pages_back() -> None:
    env = {k: v for k, v in os.environ.items() if k not in THRESHOLD_ENVS}
    done = subprocess.run(
        [sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    tuned, held, freed, trimmed, after = done.stdout.split()
    assert tuned == "True"
    assert trimmed == "True"
    assert int(freed) > int(held) - 40 * 1024, "freed blocks were given back without a trim"
    assert int(after) < int(held) - 60 * 1024, "the trim did not give the freed blocks back"


@pytest.mark.parametrize("name", THRESHOLD_ENVS)
def test_an_operators_settings_are_left_alone(untuned: None, name: str) -> None:
    assert tune_malloc({name: "131072"}) is False
    assert trim_heaps() is False


async def test_the_periodic_trim_returns_at_once_when_not_tuned(untuned: None) -> None:
    await asyncio.wait_for(trim_heaps_periodically(0.01), 1.0)


async def test_the_periodic_trim_runs_until_cancelled(untuned: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def trim(pad: int) -> int:
        calls.append(pad)
        return 1

    monkeypatch.setattr(_malloc._heaps, "trim", trim)
    task = asyncio.ensure_future(trim_heaps_periodically(0.01))
    await asyncio.sleep(0.2)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(calls) >= 3
    assert set(calls) == {0}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (None, TRIM_INTERVAL),
        ("2.5", 2.5),
        ("0", 0.0),
        ("-1", 0.0),
        ("inf", 0.0),
        ("nan", 0.0),
        ("soon", TRIM_INTERVAL),
    ],
)
def test_the_trim_interval_comes_from_the_environment(text: str | None, seconds: float) -> None:
    environ = {} if text is None else {TRIM_INTERVAL_ENV: text}
    assert trim_interval(environ) == seconds


async def test_an_interval_of_0_never_trims(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_malloc._heaps, "trim", lambda pad: pytest.fail("trimmed"))
    await asyncio.wait_for(trim_heaps_periodically(0), 1.0)
