"""Istio 1.4's own configs, read from ``../shared/istio-1.4/`` beside the repository (never copied in)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mixer.config import ValidatedConfig, load_config
from mixer.registry import Registry
from plugins.manager import create_plugin_manager
from tests.shared_data import SHARED, shared_path

ISTIO = SHARED / "istio-1.4"


def istio_dir() -> Path:
    """The folder of Istio's configs; a clear failure (not a skip) when it is missing."""
    return shared_path("istio-1.4", "PROVENANCE.md").parent


def istio_file(relative: str) -> Path:
    path = istio_dir() / relative
    assert path.is_file(), f"{relative} is missing from {ISTIO}"
    return path


def real_registry() -> Registry:
    """What ``mixer validate`` loads with: the built-in adapters and templates."""
    return create_plugin_manager(load_entry_points=False, blocked=()).registry()


def load_istio(*relative: str, registry: Registry | None = None) -> ValidatedConfig:
    files: Sequence[Path] = [istio_file(r) for r in relative]
    return load_config(files, registry or real_registry(), environ={})
