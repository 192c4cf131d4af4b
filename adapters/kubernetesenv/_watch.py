"""List and watch pods and replica sets through the Kubernetes API, into a :class:`PodInventory`.

One background task per resource: list (all namespaces), then watch from the list's
``resourceVersion``, applying ADDED / MODIFIED / DELETED events as they arrive. A watch that
ends is renewed from the last version seen; ``410 Gone`` (the version is too old, as an HTTP
status or an ERROR event) and any failure lead to a fresh list, after a backoff for failures.
The JSON is read raw (``_preload_content=False``) and only the fields the template needs are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from adapters.kubernetesenv._cache import PodInventory, pod_from_json, replicaset_from_json
from adapters.kubernetesenv._config import KubernetesEnvConfig

__all__ = ["LIST_PAGE_SIZE", "KubernetesWatcher"]

_MAX_BACKOFF = 30.0
#: Objects per list request.
LIST_PAGE_SIZE = 500


class _Gone(Exception):
    """The watched resource version is gone (410): list again."""


class _LineTooLong(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Resource:
    name: str
    list_method: str  # on the API class
    api: str  # "core" or "apps"
    parse: Callable[[Any], Any]


_PODS = _Resource("pods", "list_pod_for_all_namespaces", "core", pod_from_json)
_REPLICASETS = _Resource("replicasets", "list_replica_set_for_all_namespaces", "apps", replicaset_from_json)


class KubernetesWatcher:
    """Keeps ``inventory`` in step with the cluster. :meth:`start` returns at once."""

    def __init__(self, config: KubernetesEnvConfig, inventory: PodInventory, logger: logging.Logger) -> None:
        self._config = config
        self._inventory = inventory
        self._logger = logger
        self._tasks: list[asyncio.Task[None]] = []
        self._api_client: Any = None
        #: Resources whose first list has completed.
        self.synced: set[str] = set()

    @property
    def has_synced(self) -> bool:
        return self.synced >= {"pods", "replicasets"}

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(resource), name=f"kubernetesenv-{resource.name}")
            for resource in (_REPLICASETS, _PODS)
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._api_client is not None:
            client, self._api_client = self._api_client, None
            await client.close()

    async def _client(self) -> Any:
        if self._api_client is not None:
            return self._api_client
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        path = os.environ.get("KUBECONFIG") or self._config.kubeconfig_path
        if path:
            await config.load_kube_config(config_file=path, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        self._api_client = client.ApiClient(configuration)
        return self._api_client

    async def _api(self, resource: _Resource) -> Callable[..., Awaitable[Any]]:
        from kubernetes_asyncio import client

        api_client = await self._client()
        api = client.CoreV1Api(api_client) if resource.api == "core" else client.AppsV1Api(api_client)
        method: Callable[..., Awaitable[Any]] = getattr(api, resource.list_method)
        return method

    async def _run(self, resource: _Resource) -> None:
        backoff = self._config.retry_interval.total_seconds()
        stats = self._inventory.stats
        while True:
            try:
                list_call = await self._api(resource)
                version = await self._list(resource, list_call)
                backoff = self._config.retry_interval.total_seconds()
                while True:
                    version = await self._watch(resource, list_call, version)
            except asyncio.CancelledError:
                raise
            except _Gone:
                stats.relists += 1
                self._logger.info("kubernetesenv: %s watch expired (410 Gone), listing again", resource.name)
                continue
            except Exception as exc:
                stats.watch_errors += 1
                self._logger.warning(
                    "kubernetesenv: %s list/watch failed, retrying in %.1fs: %r", resource.name, backoff, exc
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                stats.relists += 1

    async def _list(self, resource: _Resource, list_call: Callable[..., Awaitable[Any]]) -> str:
        """List in pages of :data:`LIST_PAGE_SIZE` (a big cluster's list never sits in memory
        whole), then replace the resource's records; :returns: the list's resource version."""
        from kubernetes_asyncio.client.exceptions import ApiException

        records = []
        token = ""
        version = ""
        while True:
            try:
                response = await list_call(
                    limit=LIST_PAGE_SIZE, _continue=token or None, _preload_content=False
                )
            except ApiException as exc:
                if exc.status == 410:  # the continue token expired: start over
                    raise _Gone() from exc
                raise
            try:
                body = await response.json()
            finally:
                response.release()
            if not isinstance(body, dict):
                raise ValueError(f"{resource.name} list answered {type(body).__name__}, not an object")
            items = body.get("items")
            for item in items if isinstance(items, list) else ():
                record = resource.parse(item)
                if record is None:
                    self._inventory.stats.invalid += 1
                else:
                    records.append(record)
            metadata = body.get("metadata")
            metadata = metadata if isinstance(metadata, dict) else {}
            found = metadata.get("resourceVersion")
            version = found if isinstance(found, str) else version
            token = metadata.get("continue") or ""
            if not isinstance(token, str) or not token:
                break
        if resource is _PODS:
            self._inventory.replace_pods(records)
        else:
            self._inventory.replace_replicasets(records)
        self.synced.add(resource.name)
        return version

    async def _watch(
        self, resource: _Resource, list_call: Callable[..., Awaitable[Any]], version: str
    ) -> str:
        """Apply one watch request's events; :returns: the last resource version seen."""
        from kubernetes_asyncio.client.exceptions import ApiException

        timeout = max(int(self._config.cache_refresh_duration.total_seconds()), 1)
        try:
            response = await list_call(
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _preload_content=False,
                _request_timeout=timeout + 30,
            )
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone() from exc
            raise
        limit = self._config.max_event_bytes
        buffer = bytearray()
        try:
            async for chunk in response.content.iter_any():
                buffer += chunk
                while True:
                    end = buffer.find(b"\n")
                    if end < 0:
                        break
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        version = self._apply(resource, line, version)
                if len(buffer) > limit:
                    raise _LineTooLong(f"{resource.name} watch event over {limit} bytes")
        finally:
            response.release()
        return version

    def _apply(self, resource: _Resource, line: bytes, version: str) -> str:
        event = json.loads(line)
        kind = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        stats = self._inventory.stats
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            if code == 410:
                raise _Gone()
            raise RuntimeError(f"{resource.name} watch error event: {str(obj)[:200]}")
        if not isinstance(kind, str) or not isinstance(obj, dict):
            stats.invalid += 1
            return version
        stats.events[kind] = stats.events.get(kind, 0) + 1
        metadata = obj.get("metadata")
        new_version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        if kind == "BOOKMARK":
            return new_version if isinstance(new_version, str) else version
        record = resource.parse(obj)
        if record is None:
            stats.invalid += 1
        elif kind in ("ADDED", "MODIFIED"):
            if resource is _PODS:
                self._inventory.put_pod(record)
            else:
                self._inventory.put_replicaset(record)
        elif kind == "DELETED":
            if resource is _PODS:
                self._inventory.delete_pod(record.key)
            else:
                self._inventory.delete_replicaset(record.key)
        return new_version if isinstance(new_version, str) else version
