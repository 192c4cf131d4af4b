"""glibc's allocator told to map large blocks on their own, so that RSS comes back after big values.

glibc serves an allocation below its mmap threshold from a heap (the threshold starts at 128 KiB
and rises on the fly, up to 32 MiB, as mapped blocks are freed), and a heap gives memory back to
the system only from its top. Caller-sized values passing through a server (100 KB request paths,
bodies in access logs) land in the heaps, and a few of them still alive at the top pin all that
was freed below: RSS stays at its peak long after every record was written (135 MiB above the
plateau, seen in tests/server/test_memory_bounds.py). With a fixed 64 KiB threshold such values
are mapped and unmapped one by one and RSS returns to its plateau; an ordinary record's
allocations are far smaller and do not change path. Measured side by side in docs/performance.md.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping

logger = logging.getLogger("mixer.server")

#: glibc's ``M_MMAP_THRESHOLD`` parameter of ``mallopt``.
M_MMAP_THRESHOLD = -3
#: Blocks this large or larger are mapped on their own.
MMAP_THRESHOLD = 64 * 1024
#: Set in the environment, glibc has read the operator's own threshold at start: it is left alone.
THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"


def tune_malloc(environ: Mapping[str, str] | None = None) -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD`; whether it was set.

    Nothing is done when :data:`THRESHOLD_ENV` is set, or where the C library is not glibc
    (musl and macOS have no ``mallopt``).
    """
    if THRESHOLD_ENV in (os.environ if environ is None else environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    logger.debug("malloc mmap threshold %s at %d bytes", "fixed" if done else "not fixed", MMAP_THRESHOLD)
    return done
