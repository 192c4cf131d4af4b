"""glibc's mmap threshold fixed at start (the RSS bound itself is in test_memory_bounds.py)."""

from __future__ import annotations

import ctypes
import platform

import pytest

from mixer.server._malloc import THRESHOLD_ENV, tune_malloc

GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; other C libraries are left alone")
def test_the_threshold_is_fixed_on_glibc() -> None:
    assert hasattr(ctypes.CDLL(None), "mallopt")
    assert tune_malloc({}) is True


def test_an_operators_threshold_is_left_alone() -> None:
    assert tune_malloc({THRESHOLD_ENV: "131072"}) is False
