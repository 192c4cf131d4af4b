"""A static inventory file: Pod and ReplicaSet objects in YAML, for meshes without Kubernetes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from adapters.kubernetesenv._cache import PodInventory, pod_from_json, replicaset_from_json

__all__ = ["MAX_INVENTORY_BYTES", "InventoryFileError", "load_inventory"]

#: Bigger than any inventory a mesh without Kubernetes keeps by hand.
MAX_INVENTORY_BYTES = 64 * 1024 * 1024


class InventoryFileError(ValueError):
    """The inventory file cannot be read or is not YAML of Kubernetes objects."""


def _objects(document: Any) -> Iterator[Mapping[str, Any]]:
    if not isinstance(document, Mapping):
        return
    items = document.get("items")
    if isinstance(items, list):  # kind: List, PodList, ...
        for item in items:
            yield from _objects(item)
        return
    yield document


def load_inventory(path: Path, inventory: PodInventory) -> tuple[int, int]:
    """Fill ``inventory`` with the file's pods and replica sets (replacing what it held).

    The file holds YAML documents, each a Kubernetes object or a list of them (``items``); kinds
    other than Pod and ReplicaSet are skipped. :returns: (pods, replica sets) read.

    :raises InventoryFileError: unreadable, too big, not YAML, or a Pod without a name.
    """
    try:
        size = path.stat().st_size
        if size > MAX_INVENTORY_BYTES:
            raise InventoryFileError(f"{path}: {size} bytes, more than {MAX_INVENTORY_BYTES}")
        text = path.read_text(encoding="utf-8")
        documents = list(yaml.safe_load_all(text))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InventoryFileError(f"{path}: {exc}") from exc
    pods, replicasets = [], []
    for document in documents:
        for index, obj in enumerate(_objects(document)):
            kind = obj.get("kind")
            if kind == "Pod":
                pod = pod_from_json(obj)
                if pod is None:
                    raise InventoryFileError(f"{path}: Pod #{index + 1} has no metadata.name")
                pods.append(pod)
            elif kind == "ReplicaSet":
                rs = replicaset_from_json(obj)
                if rs is None:
                    raise InventoryFileError(f"{path}: ReplicaSet #{index + 1} has no metadata.name")
                replicasets.append(rs)
    inventory.replace_replicasets(replicasets)
    inventory.replace_pods(pods)
    return len(pods), len(replicasets)
