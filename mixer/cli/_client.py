"""`mixer check` and `mixer report`: a client in the manner of Istio's mixc."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``mixer`` parser's subparsers."""
    del sub


def _unused(args: argparse.Namespace) -> int:
    return 0
