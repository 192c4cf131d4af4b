"""docs/delivery.md documents every option and metric, and the package exports what it says."""

from __future__ import annotations

import re
from pathlib import Path

import mixer.delivery
from mixer.delivery import DeliveryCollector, DeliveryOptions, SpoolOptions

DOC = Path(__file__).resolve().parents[2] / "docs" / "delivery.md"


def _table_keys(text: str) -> set[str]:
    return set(re.findall(r"^\| `([a-z_.]+)(?:\{reason\})?` \|", text, flags=re.MULTILINE))


def test_every_option_is_in_the_options_table() -> None:
    documented = _table_keys(DOC.read_text())
    fields = {name for name in DeliveryOptions.model_fields if name != "spool"}
    fields |= {f"spool.{name}" for name in SpoolOptions.model_fields}
    assert fields <= documented, fields - documented


def test_every_metric_family_is_documented() -> None:
    documented = _table_keys(DOC.read_text())
    exported = set()
    for family in DeliveryCollector().collect():
        suffix = "_total" if family.type == "counter" else ""
        exported.add(family.name + suffix)
    assert exported == {name for name in documented if name.startswith("mixer_delivery_")}


def test_all_names_are_importable() -> None:
    for name in mixer.delivery.__all__:
        assert getattr(mixer.delivery, name) is not None
    assert {"Record", "Delivery", "DeliveryOptions", "BatchSender", "SendResult"} <= set(
        mixer.delivery.__all__
    )
