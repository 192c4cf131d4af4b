"""glibc's allocator: big buffers served from the heaps, and the heaps' free pages handed back often.

Two costs pull against each other here.

- **RSS.** A heap gives memory back to the system only from its top, and only once more than
  ``M_TRIM_THRESHOLD`` is free there. Caller-sized values passing through a server (100 KB request
  paths, bodies in access logs) land in the heaps, and a few of them still alive at the top pin all
  that was freed below: RSS stayed at its peak long after every record was written (135 MiB above
  the plateau, seen in tests/server/test_memory_bounds.py).
- **Page faults.** A block above ``M_MMAP_THRESHOLD`` is mapped on its own, and every page of it
  faults in anew, and is unmapped when freed. The hot path allocates such blocks all the time: a
  Report request's bytes, a Kafka produce request (aiokafka copies it four times), a ``_bulk``
  body, an OTLP export, the stdio writer's joined lines: 100 KB to 1 MB each. A threshold fixed at
  64 KiB (the earlier answer to RSS) sent them all to ``mmap``. In a virtual machine each fault is
  dear: three copies of a 400 KB buffer took 1,000 us that way and 49 us from a heap (in process),
  and the fan-out ran 13 % faster per CPU-second with the blocks in the heaps
  (docs/performance.md).

So: blocks up to :data:`MMAP_THRESHOLD` come from the heaps, a free trims a heap's top only past
a burst's worth (:data:`TRIM_THRESHOLD`), and :func:`trim_heaps` (``malloc_trim(0)``, which since
glibc 2.8 hands back every whole free page of every arena, not only a heap's top) runs every
:data:`TRIM_INTERVAL` seconds while serving: RSS comes back to its plateau within that time after
big values, and buffers in between reuse pages already in memory.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import math
import os
import time
from collections.abc import Callable, Mapping

logger = logging.getLogger("mixer.server")

#: glibc's ``mallopt`` parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks this large or larger are mapped on their own (rare: larger than any batch we build).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free bytes at a heap's top beyond which a free gives them back at once: a burst's worth.
TRIM_THRESHOLD = 64 * 1024 * 1024
#: Seconds between two :func:`trim_heaps` while serving, unless :data:`TRIM_INTERVAL_ENV` says
#: otherwise (0: never). Each trim makes the next buffers fault their pages in again.
TRIM_INTERVAL = 10.0
TRIM_INTERVAL_ENV = "MIXER_MALLOC_TRIM_SECONDS"
#: Set in the environment, glibc has read the operator's own settings at start: all is left alone.
THRESHOLD_ENVS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
#: The first of :data:`THRESHOLD_ENVS`, named by earlier releases.
THRESHOLD_ENV = THRESHOLD_ENVS[0]


class _Heaps:
    """glibc's ``malloc_trim``, once :func:`tune_malloc` has set the thresholds that need it."""

    trim: Callable[[int], int] | None = None


_heaps = _Heaps()


def tune_malloc(environ: Mapping[str, str] | None = None) -> bool:
    """Set the thresholds above and enable :func:`trim_heaps`; whether it was done.

    Nothing is done when one of :data:`THRESHOLD_ENVS` is set, or where the C library is not glibc
    (musl and macOS have neither ``mallopt`` nor ``malloc_trim``).
    """
    env = os.environ if environ is None else environ
    if any(name in env for name in THRESHOLD_ENVS):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        malloc_trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if done:
        _heaps.trim = malloc_trim
    logger.debug("malloc thresholds %s", "set" if done else "not set")
    return done


def trim_heaps() -> bool:
    """Hand the heaps' free pages back to the system; whether :func:`tune_malloc` enabled it."""
    trim = _heaps.trim
    if trim is None:
        return False
    started = time.perf_counter()
    trim(0)
    logger.debug("heaps trimmed in %.1f ms", (time.perf_counter() - started) * 1000)
    return True


def trim_interval(environ: Mapping[str, str] | None = None) -> float:
    """Seconds between trims: :data:`TRIM_INTERVAL`, or :data:`TRIM_INTERVAL_ENV` when it holds a
    number of seconds (0 or less: never)."""
    text = (os.environ if environ is None else environ).get(TRIM_INTERVAL_ENV)
    if text is None:
        return TRIM_INTERVAL
    try:
        value = float(text)
    except ValueError:
        logger.warning(
            "%s=%r is not a number of seconds; trimming every %g s", TRIM_INTERVAL_ENV, text, TRIM_INTERVAL
        )
        return TRIM_INTERVAL
    return value if value > 0 and math.isfinite(value) else 0.0


async def trim_heaps_periodically(interval: float | None = None) -> None:
    """:func:`trim_heaps` every ``interval`` seconds (default :func:`trim_interval`), until
    cancelled; returns at once when the thresholds were not set (glibc then trims a heap's top on
    its own) or the interval is 0."""
    if interval is None:
        interval = trim_interval()
    if _heaps.trim is None or interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        trim_heaps()
