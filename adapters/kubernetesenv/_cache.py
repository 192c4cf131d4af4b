"""The pod inventory: pods and replica sets by key and IP, bounded in entries and bytes.

Lookups are dict reads on the request path; writers (the Kubernetes watch, the static file) run
in the background on the same event loop. Only the fields the ``kubernetes`` template answers
from are kept, in compact records parsed from Kubernetes' JSON.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "InventoryStats",
    "OwnerRef",
    "PodInventory",
    "PodRecord",
    "ReplicaSetRecord",
    "Workload",
    "pod_from_json",
    "replicaset_from_json",
]

#: What a record costs beyond its strings (object headers, dict slots): a rough, fixed estimate.
_RECORD_OVERHEAD = 256
_ENTRY_OVERHEAD = 64


@dataclass(frozen=True, slots=True)
class OwnerRef:
    kind: str
    name: str
    api_version: str
    controller: bool


@dataclass(frozen=True, slots=True)
class PodRecord:
    name: str
    namespace: str
    labels: Mapping[str, str]
    service_account: str = ""
    pod_ip: str = ""
    host_ip: str = ""
    owners: tuple[OwnerRef, ...] = ()
    #: (container name, container port) for every declared port.
    ports: tuple[tuple[str, int], ...] = ()
    self_link: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def size(self) -> int:
        strings = (self.name, self.namespace, self.service_account, self.pod_ip, self.host_ip, self.self_link)
        total = _RECORD_OVERHEAD + sum(len(s) for s in strings)
        total += sum(len(k) + len(v) + _ENTRY_OVERHEAD for k, v in self.labels.items())
        total += sum(len(o.kind) + len(o.name) + len(o.api_version) + _ENTRY_OVERHEAD for o in self.owners)
        total += sum(len(name) + _ENTRY_OVERHEAD for name, _ in self.ports)
        return total


@dataclass(frozen=True, slots=True)
class ReplicaSetRecord:
    name: str
    namespace: str
    owners: tuple[OwnerRef, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def size(self) -> int:
        total = _RECORD_OVERHEAD + len(self.name) + len(self.namespace)
        return total + sum(
            len(o.kind) + len(o.name) + len(o.api_version) + _ENTRY_OVERHEAD for o in self.owners
        )


@dataclass(frozen=True, slots=True)
class Workload:
    uid: str
    name: str
    namespace: str
    owner: str


@dataclass(slots=True)
class InventoryStats:
    hits: int = 0
    misses: int = 0
    #: Records dropped to stay within the bounds (oldest first).
    evictions: int = 0
    #: Records the source sent that could not be parsed.
    invalid: int = 0
    relists: int = 0
    watch_errors: int = 0
    events: dict[str, int] = field(default_factory=dict)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _owners(meta: Mapping[str, Any]) -> tuple[OwnerRef, ...]:
    refs = meta.get("ownerReferences") or ()
    owners = []
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, Mapping) and _str(ref.get("kind")) and _str(ref.get("name")):
            owners.append(
                OwnerRef(
                    _str(ref.get("kind")),
                    _str(ref.get("name")),
                    _str(ref.get("apiVersion")),
                    ref.get("controller") is True,
                )
            )
    return tuple(owners)


def pod_from_json(obj: Any) -> PodRecord | None:
    """A record from a Pod object as the API serves it (camelCase JSON); None when malformed."""
    if not isinstance(obj, Mapping):
        return None
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not _str(meta.get("name")):
        return None
    raw_spec, raw_status = obj.get("spec"), obj.get("status")
    spec: Mapping[str, Any] = raw_spec if isinstance(raw_spec, Mapping) else {}
    status: Mapping[str, Any] = raw_status if isinstance(raw_status, Mapping) else {}
    raw_labels = meta.get("labels")
    labels = (
        {str(k): str(v) for k, v in raw_labels.items() if isinstance(v, str)}
        if isinstance(raw_labels, Mapping)
        else {}
    )
    ports: list[tuple[str, int]] = []
    containers = spec.get("containers")
    for container in containers if isinstance(containers, list) else ():
        if not isinstance(container, Mapping):
            continue
        cports = container.get("ports")
        for port in cports if isinstance(cports, list) else ():
            number = port.get("containerPort") if isinstance(port, Mapping) else None
            if isinstance(number, int) and not isinstance(number, bool):
                ports.append((_str(container.get("name")), number))
    return PodRecord(
        name=_str(meta.get("name")),
        namespace=_str(meta.get("namespace")) or "default",
        labels=MappingProxyType(labels),
        service_account=_str(spec.get("serviceAccountName")) or _str(spec.get("serviceAccount")),
        pod_ip=_str(status.get("podIP")),
        host_ip=_str(status.get("hostIP")),
        owners=_owners(meta),
        ports=tuple(ports),
        self_link=_str(meta.get("selfLink")),
    )


def replicaset_from_json(obj: Any) -> ReplicaSetRecord | None:
    if not isinstance(obj, Mapping):
        return None
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not _str(meta.get("name")):
        return None
    return ReplicaSetRecord(_str(meta.get("name")), _str(meta.get("namespace")) or "default", _owners(meta))


class PodInventory:
    """Pods (by ``namespace/name`` and by pod IP) and replica sets (by ``namespace/name``).

    Bounded by ``max_entries`` records and ``max_bytes`` (estimated by :meth:`PodRecord.size`);
    past either, the oldest records (by last write) are evicted and counted.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stats = InventoryStats()
        self._pods: dict[str, PodRecord] = {}
        self._by_ip: dict[str, str] = {}
        self._replicasets: dict[str, ReplicaSetRecord] = {}
        self._bytes = 0

    # -- reads (the request path) ------------------------------------------------------------

    def pod(self, key: str) -> PodRecord | None:
        """The pod whose IP is ``key``, else whose ``namespace/name`` is ``key``; counts hits and misses."""
        pod_key = self._by_ip.get(key, key)
        record = self._pods.get(pod_key)
        if record is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return record

    def workload(self, pod: PodRecord) -> Workload:
        """The pod's workload as Mixer's kubernetesenv derived it: the root controller (a
        Deployment through its ReplicaSet, or a StatefulSet, Job, ...), else the pod itself."""
        name = pod.name
        owner = pod.self_link or f"kubernetes://apis/v1/namespaces/{pod.namespace}/pods/{pod.name}"
        root = self._root_controller(pod.namespace, pod.owners)
        if root is not None:
            name = root.name
            owner = (
                f"kubernetes://apis/{root.api_version}/namespaces/{pod.namespace}/"
                f"{root.kind.lower()}s/{root.name}"
            )
        return Workload(f"istio://{pod.namespace}/workloads/{name}", name, pod.namespace, owner)

    def _root_controller(self, namespace: str, owners: tuple[OwnerRef, ...]) -> OwnerRef | None:
        for ref in owners:
            if not ref.controller:
                continue
            if ref.kind == "ReplicaSet":
                rs = self._replicasets.get(f"{namespace}/{ref.name}")
                if rs is not None:
                    # One level is enough: a ReplicaSet's controller is a Deployment (or nothing).
                    for rs_ref in rs.owners:
                        if rs_ref.controller:
                            return rs_ref
            return ref
        return None

    @property
    def pods(self) -> int:
        return len(self._pods)

    @property
    def replicasets(self) -> int:
        return len(self._replicasets)

    @property
    def bytes(self) -> int:
        return self._bytes

    # -- writes (the watch, the static file) -------------------------------------------------

    def put_pod(self, record: PodRecord) -> None:
        key = record.key
        self.delete_pod(key)
        self._pods[key] = record
        if record.pod_ip:
            self._by_ip[record.pod_ip] = key
        self._bytes += record.size()
        self._bound()

    def delete_pod(self, key: str) -> None:
        old = self._pods.pop(key, None)
        if old is None:
            return
        self._bytes -= old.size()
        if old.pod_ip and self._by_ip.get(old.pod_ip) == key:
            del self._by_ip[old.pod_ip]

    def replace_pods(self, records: Iterable[PodRecord]) -> None:
        """A relist: the pods become exactly ``records``."""
        for key in list(self._pods):
            self.delete_pod(key)
        for record in records:
            self.put_pod(record)

    def put_replicaset(self, record: ReplicaSetRecord) -> None:
        self.delete_replicaset(record.key)
        self._replicasets[record.key] = record
        self._bytes += record.size()
        self._bound()

    def delete_replicaset(self, key: str) -> None:
        old = self._replicasets.pop(key, None)
        if old is not None:
            self._bytes -= old.size()

    def replace_replicasets(self, records: Iterable[ReplicaSetRecord]) -> None:
        for key in list(self._replicasets):
            self.delete_replicaset(key)
        for record in records:
            self.put_replicaset(record)

    def _bound(self) -> None:
        while self._pods and (
            len(self._pods) + len(self._replicasets) > self.max_entries or self._bytes > self.max_bytes
        ):
            self.delete_pod(next(iter(self._pods)))
            self.stats.evictions += 1
        while self._replicasets and (
            len(self._replicasets) > self.max_entries or self._bytes > self.max_bytes
        ):
            self.delete_replicaset(next(iter(self._replicasets)))
            self.stats.evictions += 1


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
