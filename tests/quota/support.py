"""A settable clock and small builders for the quota and plan tests."""

from __future__ import annotations

from datetime import UTC, datetime

from mixer.attributes import ISTIO_MANIFEST
from mixer.config import load_config_text
from mixer.plans import PlanConfig
from mixer.registry import Registry


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, start: float = datetime(2024, 3, 10, 12, 0, 0, tzinfo=UTC).timestamp()) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def plans(text: str) -> dict[str, PlanConfig]:
    """Plans compiled from YAML plan documents (other kinds allowed)."""
    config = load_config_text(
        text, Registry.build([]), source_name="plans.yaml", base_manifest=ISTIO_MANIFEST
    )
    return dict(config.plans)


def plan(name: str, limits: str, *, description: str = "") -> PlanConfig:
    """One plan from the YAML text of its ``limits`` list (indented by two spaces)."""
    text = (
        "apiVersion: mixer.mesh/v1alpha1\nkind: plan\n"
        f"metadata: {{name: {name}}}\nspec:\n  description: '{description}'\n  limits:\n{limits}"
    )
    return plans(text)[name]
