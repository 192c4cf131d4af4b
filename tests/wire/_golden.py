"""Reading the golden messages and turning decoded values into their JSON form."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mixer.attributes import AttributeValue

GOLDEN = Path(__file__).parent / "golden"


def golden_bytes(name: str) -> bytes:
    return (GOLDEN / f"{name}.bin").read_bytes()


def golden_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    return data


def typed(value: AttributeValue) -> dict[str, Any]:
    """A decoded value in the golden JSON's form: {"type": ..., "value": ...}."""
    if isinstance(value, bool):
        return {"type": "BOOL", "value": value}
    if isinstance(value, int):
        return {"type": "INT64", "value": value}
    if isinstance(value, float):
        return {"type": "DOUBLE", "value": value}
    if isinstance(value, str):
        return {"type": "STRING", "value": value}
    if isinstance(value, datetime):
        # Compared as instants: RFC 3339 allows several spellings of one time.
        return {"type": "TIMESTAMP", "value": value}
    if isinstance(value, timedelta):
        return {"type": "DURATION", "value": value // timedelta(microseconds=1) * 1000}
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return {"type": "IP_ADDRESS", "value": str(value)}
    if isinstance(value, Mapping):
        return {"type": "STRING_MAP", "value": dict(value)}
    raise AssertionError(f"unexpected decoded value {value!r}")


def expected_typed(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A golden JSON attribute with its timestamp parsed, to compare against :func:`typed`."""
    if entry["type"] == "TIMESTAMP":
        return {"type": "TIMESTAMP", "value": datetime.fromisoformat(entry["value"])}
    if entry["type"] == "IP_ADDRESS":
        # Canonical text, so that an uncompressed IPv6 spelling would still compare equal.
        return {"type": "IP_ADDRESS", "value": str(ipaddress.ip_address(entry["value"]))}
    return dict(entry)


def typed_bag(values: Mapping[str, AttributeValue]) -> dict[str, dict[str, Any]]:
    return {name: typed(value) for name, value in values.items()}


def expected_bag(attributes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: expected_typed(entry) for name, entry in attributes.items()}
