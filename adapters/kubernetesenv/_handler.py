"""The kubernetesenv handler: answers the ``kubernetes`` template from the pod inventory."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from adapters.kubernetesenv._cache import PodInventory, PodRecord, parse_ip
from adapters.kubernetesenv._config import KubernetesEnvConfig
from adapters.kubernetesenv._metrics import track
from adapters.kubernetesenv._static import load_inventory
from adapters.kubernetesenv._template import KubernetesInstance
from adapters.kubernetesenv._watch import KubernetesWatcher
from mixer import AttributeHandler, HandlerEnv
from mixer.attributes import AttributeValue
from mixer.templates import Instance

__all__ = ["KubernetesEnvHandler", "key_from_uid"]

_KUBE_PREFIX = "kubernetes://"


def key_from_uid(uid: str) -> str:
    """The inventory key for a uid: an IP as is, ``kubernetes://<pod>.<namespace>`` as
    ``<namespace>/<pod>`` (Mixer's rule: exactly one dot after the prefix), else the rest."""
    try:
        ipaddress.ip_address(uid)
        return uid
    except ValueError:
        pass
    name = uid.removeprefix(_KUBE_PREFIX)
    parts = name.split(".")
    if len(parts) == 2:
        return f"{parts[1]}/{parts[0]}"
    return name


class KubernetesEnvHandler(AttributeHandler):
    """Pod lookups are dict reads; the inventory is filled by a background watch of the
    Kubernetes API, or once at start from ``inventory_path``."""

    def __init__(self, config: KubernetesEnvConfig, env: HandlerEnv) -> None:
        self.config = config
        self.name = env.handler_name
        self._logger = env.logger
        self.inventory = PodInventory(config.cache_max_entries, config.cache_max_bytes)
        track(self.name, self.inventory)
        self.watcher: KubernetesWatcher | None = None
        self._closed = False

    async def start(self) -> None:
        if self.config.inventory_path is not None:
            pods, replicasets = load_inventory(self.config.inventory_path, self.inventory)
            self._logger.info(
                "%s: %d pods, %d replica sets from the inventory file", self.name, pods, replicasets
            )
            return
        if self.watcher is None:
            # Lookups miss (and bind the defaults) until the first list completes, as requests
            # must not wait on the API server.
            self.watcher = KubernetesWatcher(self.config, self.inventory, self._logger)
            await self.watcher.start()

    async def shutdown(self, timeout: float) -> None:
        if self._closed:
            return
        self._closed = True
        if self.watcher is not None:
            await self.watcher.close()

    def generate_attributes(self, instance: Instance) -> Mapping[str, AttributeValue]:
        if not isinstance(instance, KubernetesInstance):
            raise TypeError(f"kubernetesenv takes kubernetes instances, got {type(instance).__name__}")
        out: dict[str, AttributeValue] = {}
        pod = self._find(instance.destination_uid, instance.destination_ip)
        if pod is not None:
            self._fill("destination", pod, out)
            container = _container(pod, instance.destination_port)
            if container:
                out["destination_container_name"] = container
        pod = self._find(instance.source_uid, instance.source_ip)
        if pod is not None:
            self._fill("source", pod, out)
        return out

    def _find(
        self, uid: str | None, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    ) -> PodRecord | None:
        # Mixer looked up by uid when one was given (even when it found nothing), else by IP.
        if uid:
            return self.inventory.pod(key_from_uid(uid))
        if ip is not None and not ip.is_unspecified:
            return self.inventory.pod(str(ip))
        return None

    def _fill(self, side: str, pod: PodRecord, out: dict[str, AttributeValue]) -> None:
        out[f"{side}_pod_uid"] = f"{_KUBE_PREFIX}{pod.name}.{pod.namespace}"
        if pod.labels:
            out[f"{side}_labels"] = pod.labels
        out[f"{side}_pod_name"] = pod.name
        out[f"{side}_namespace"] = pod.namespace
        if pod.service_account:
            out[f"{side}_service_account_name"] = pod.service_account
        pod_ip = parse_ip(pod.pod_ip) if pod.pod_ip else None
        if pod_ip is not None:
            out[f"{side}_pod_ip"] = pod_ip
        host_ip = parse_ip(pod.host_ip) if pod.host_ip else None
        if host_ip is not None:
            out[f"{side}_host_ip"] = host_ip
        workload = self.inventory.workload(pod)
        out[f"{side}_workload_uid"] = workload.uid
        out[f"{side}_workload_name"] = workload.name
        out[f"{side}_workload_namespace"] = workload.namespace
        out[f"{side}_owner"] = workload.owner


def _container(pod: PodRecord, port: int | None) -> str:
    if port is None or port <= 0:
        return ""
    for name, number in pod.ports:
        if number == port:
            return name
    return ""
