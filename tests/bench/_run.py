"""Runs a bench script as `make bench` would, with a short form of its arguments."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"

#: A figure: digits with optional thousands separators and decimals.
FIGURE = r"[\d,]+(?:\.\d+)?"


def run_bench(script: str, *args: str, timeout: float = 240) -> str:
    """The bench's standard output; fails the test on a non-zero exit or an exception."""
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def positive(text: str) -> float:
    return float(text.replace(",", ""))


def figures(pattern: str, output: str) -> list[tuple[str, ...]]:
    """Every match of ``pattern`` (a regex with groups) over the output's lines."""
    return [m.groups() for m in re.finditer(pattern, output, re.M)]
