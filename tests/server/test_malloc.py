"""glibc's thresholds set at start and the heaps trimmed while serving (the RSS bound itself is in
test_memory_bounds.py)."""

from __future__ import annotations

import asyncio
import ctypes
import platform
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


@pytest.mark.skipif(not GLIBC, reason="mallopt and malloc_trim are glibc's; other C libraries are left alone")
def test_on_glibc_big_blocks_come_from_the_heaps_and_trimming_gives_their_pages_back(untuned: None) -> None:
    assert hasattr(ctypes.CDLL(None), "malloc_trim")
    assert tune_malloc({}) is True
    # Freed blocks of 200 KB between live 1 KB ones (from malloc too, unlike Python's own small
    # objects): below the mmap threshold now, so they stay in the heap, pinned by the small
    # ones, until trimmed.
    blocks = []
    for i in range(400):
        blocks.append(bytearray(200 * 1024))
        blocks.append(bytearray(1024 + i))
    held = _rss_kib()
    del blocks[::2]
    assert _rss_kib() > held - 40 * 1024, "freed blocks were given back without a trim"
    assert trim_heaps() is True
    assert _rss_kib() < held - 60 * 1024, "the trim did not give the freed blocks back"


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
