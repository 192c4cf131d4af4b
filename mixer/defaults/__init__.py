"""The embedded default configuration that ``mixer serve`` runs with when given no ``--config``."""

from __future__ import annotations

from importlib import resources

EMBEDDED_CONFIG_NAME = "<embedded default>"


def embedded_config_text() -> str:
    """The YAML text of the embedded default (multi-document, Istio 1.1+ form)."""
    return resources.files(__package__).joinpath("embedded.yaml").read_text(encoding="utf-8")
