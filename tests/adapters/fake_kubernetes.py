"""A FAKE Kubernetes API server (aiohttp) for the kubernetesenv tests: no cluster runs here.

It serves ``GET /api/v1/pods`` and ``GET /apis/apps/v1/replicasets`` the way the API server does
for an all-namespaces list and watch: a list answers ``{"kind": "PodList", "metadata":
{"resourceVersion", "continue"}, "items"}`` in pages of ``limit``; ``?watch=true&resourceVersion=N`` streams newline-separated
``{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object"}`` events after N and ends after
``timeoutSeconds``. A version older than the retained history gets the API's ``410 Gone`` ERROR
event (``expire``), which a correct client answers with a fresh list.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = ["FakeKubernetes", "pod", "replicaset"]

_PATHS = {"pods": "/api/v1/pods", "replicasets": "/apis/apps/v1/replicasets"}
_LIST_KINDS = {"pods": "PodList", "replicasets": "ReplicaSetList"}


def pod(
    name: str,
    namespace: str = "default",
    *,
    ip: str = "",
    labels: Mapping[str, str] | None = None,
    service_account: str = "default",
    owner: tuple[str, str] | None = None,
    ports: Mapping[str, int] | None = None,
    host_ip: str = "10.128.0.1",
) -> dict[str, Any]:
    """A Pod object as the API serves it; ``owner`` is (kind, name) of its controller."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    if owner is not None:
        api = "apps/v1" if owner[0] in ("ReplicaSet", "StatefulSet", "DaemonSet") else "batch/v1"
        meta["ownerReferences"] = [
            {"apiVersion": api, "kind": owner[0], "name": owner[1], "controller": True, "uid": "u"}
        ]
    containers = [
        {"name": cname, "ports": [{"containerPort": port, "protocol": "TCP"}]}
        for cname, port in (ports or {}).items()
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"serviceAccountName": service_account, "containers": containers},
        "status": {"podIP": ip, "hostIP": host_ip, "phase": "Running"},
    }


def replicaset(name: str, deployment: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment, "controller": True}
            ],
        },
    }


@dataclass
class _Store:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (resource version, event type, object) in order.
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    #: Watches from versions below this get 410 Gone.
    oldest: int = 0


class FakeKubernetes:
    """Start with :meth:`start`; ``lists`` and ``watches`` count requests per resource."""

    def __init__(self, port: int = 0) -> None:
        self._version = 100
        self._stores = {name: _Store() for name in _PATHS}
        self._changed = asyncio.Condition()
        self.lists: dict[str, int] = {name: 0 for name in _PATHS}
        self.watches: dict[str, int] = {name: 0 for name in _PATHS}
        self.pages_served: dict[str, int] = {name: 0 for name in _PATHS}
        self._pages: dict[str, list[dict[str, Any]]] = {name: [] for name in _PATHS}
        self.gone_sent = 0
        self._runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> None:
        app = web.Application()
        for resource, path in _PATHS.items():
            app.router.add_get(path, self._handler(resource))
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        async with self._changed:
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    # -- changing the cluster ------------------------------------------------------------------

    async def apply(self, resource: str, obj: dict[str, Any]) -> None:
        """Create or update ``obj`` (ADDED or MODIFIED event)."""
        store = self._stores[resource]
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        kind = "MODIFIED" if key in store.objects else "ADDED"
        await self._record(store, key, kind, obj)

    async def delete(self, resource: str, namespace: str, name: str) -> None:
        store = self._stores[resource]
        key = f"{namespace}/{name}"
        obj = store.objects.get(key)
        if obj is not None:
            await self._record(store, key, "DELETED", obj)

    async def expire(self, resource: str) -> None:
        """Forget the history: open watches end, and watching from any version seen gets 410."""
        store = self._stores[resource]
        self._version += 1
        store.oldest = self._version
        store.events.clear()
        async with self._changed:
            self._changed.notify_all()

    async def _record(self, store: _Store, key: str, kind: str, obj: dict[str, Any]) -> None:
        self._version += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._version)
        if kind == "DELETED":
            store.objects.pop(key, None)
        else:
            store.objects[key] = obj
        store.events.append((self._version, kind, obj))
        async with self._changed:
            self._changed.notify_all()

    # -- serving -------------------------------------------------------------------------------

    def _handler(self, resource: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            if request.query.get("watch", "").lower() in ("true", "1"):
                return await self._watch(resource, request)
            store = self._stores[resource]
            token = request.query.get("continue", "")
            if token:
                # The snapshot the first page started; versions are frozen in the token.
                version, offset = (int(part) for part in token.split(":"))
                items = self._pages[resource]
            else:
                self.lists[resource] += 1
                version, offset = self._version, 0
                items = self._pages[resource] = list(store.objects.values())
            limit = int(request.query.get("limit") or "0") or len(items) or 1
            page = items[offset : offset + limit]
            metadata: dict[str, str] = {"resourceVersion": str(version)}
            if offset + limit < len(items):
                metadata["continue"] = f"{version}:{offset + limit}"
            self.pages_served[resource] += 1
            body = {
                "kind": _LIST_KINDS[resource],
                "apiVersion": "v1" if resource == "pods" else "apps/v1",
                "metadata": metadata,
                "items": page,
            }
            return web.json_response(body)

        return handle

    async def _watch(self, resource: str, request: web.Request) -> web.StreamResponse:
        self.watches[resource] += 1
        store = self._stores[resource]
        since = int(request.query.get("resourceVersion") or "0")
        timeout = float(request.query.get("timeoutSeconds") or "300")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        if since < store.oldest:
            self.gone_sent += 1
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": f"too old resource version: {since} ({store.oldest})",
                "reason": "Expired",
                "code": 410,
            }
            await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
            return response
        oldest = store.oldest
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for version, kind, obj in list(store.events):
                if version > since:
                    await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                    since = version
            remaining = deadline - loop.time()
            if remaining <= 0 or store.oldest != oldest:
                return response
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
            if self._runner is None or store.oldest != oldest:
                return response
