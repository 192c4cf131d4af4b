"""The stock configs in deploy/config/ take the Prometheus scrape address from MIXER_PROMETHEUS_LISTEN,
as the embedded default does, so that one variable moves it whichever of them is served."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixer.config import ValidatedConfig, load_config, load_config_text
from mixer.defaults import embedded_config_text
from plugins.manager import create_plugin_manager

ROOT = Path(__file__).resolve().parents[2]
STOCK = [ROOT / "deploy" / "config" / "istio-1.4" / form for form in ("v1.1", "legacy")]


def _listens(config: ValidatedConfig) -> set[str]:
    return {getattr(h.params, "listen", "") for h in config.handlers.values() if h.adapter == "prometheus"}


@pytest.mark.parametrize("folder", STOCK, ids=[folder.name for folder in STOCK])
def test_the_variable_moves_the_stock_configs_endpoint(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = create_plugin_manager(load_entry_points=False, blocked=()).registry()
    monkeypatch.delenv("MIXER_PROMETHEUS_LISTEN", raising=False)
    assert _listens(load_config([folder], registry)) == {"127.0.0.1:42422"}
    monkeypatch.setenv("MIXER_PROMETHEUS_LISTEN", "127.0.0.1:0")
    assert _listens(load_config([folder], registry)) == {"127.0.0.1:0"}


def test_the_embedded_default_reads_the_same_variable() -> None:
    registry = create_plugin_manager(load_entry_points=False, blocked=()).registry()
    config = load_config_text(
        embedded_config_text(),
        registry,
        source_name="embedded",
        environ={"MIXER_PROMETHEUS_LISTEN": "[::1]:9"},
    )
    assert _listens(config) == {"[::1]:9"}
