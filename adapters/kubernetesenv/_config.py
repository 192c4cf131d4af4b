"""The kubernetesenv adapter's params: Mixer's (kubeconfig, refresh) plus a static inventory and bounds."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from mixer.params import PositiveDuration

__all__ = ["KubernetesEnvConfig"]

MiB = 1024 * 1024


def _alias(snake: str, camel: str) -> AliasChoices:
    # Istio wrote params in proto JSON, which accepts both spellings.
    return AliasChoices(snake, camel)


class KubernetesEnvConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kubeconfig_path: str = Field(
        default="",
        validation_alias=_alias("kubeconfig_path", "kubeconfigPath"),
        description=(
            "A kubeconfig file; the ``KUBECONFIG`` environment variable wins when set (as in Mixer). "
            "Neither: the in-cluster service account config."
        ),
    )
    cache_refresh_duration: PositiveDuration = Field(
        default=timedelta(minutes=5),
        validation_alias=_alias("cache_refresh_duration", "cacheRefreshDuration"),
        description="How long one watch request lasts before it is renewed from the last resource version.",
    )
    cluster_registries_namespace: str = Field(
        default="",
        validation_alias=_alias("cluster_registries_namespace", "clusterRegistriesNamespace"),
        description="Accepted for Istio compatibility (multicluster secrets); not used.",
    )
    inventory_path: Path | None = Field(
        default=None,
        validation_alias=_alias("inventory_path", "inventoryPath"),
        description=(
            "A YAML file of Pod and ReplicaSet objects (``kubectl get pods,rs -A -o yaml``) to serve "
            "instead of the Kubernetes API, for meshes without Kubernetes. Read at start."
        ),
    )
    cache_max_entries: int = Field(
        default=200_000,
        gt=0,
        validation_alias=_alias("cache_max_entries", "cacheMaxEntries"),
        description="Bound in entries of the pod and replica set cache.",
    )
    cache_max_bytes: int = Field(
        default=256 * MiB,
        gt=0,
        validation_alias=_alias("cache_max_bytes", "cacheMaxBytes"),
        description="Bound in bytes of the pod and replica set cache.",
    )
    max_event_bytes: int = Field(
        default=8 * MiB,
        gt=0,
        validation_alias=_alias("max_event_bytes", "maxEventBytes"),
        description="Longest line of a watch stream (one event); a longer one ends the watch and relists.",
    )
    retry_interval: PositiveDuration = Field(
        default=timedelta(seconds=1),
        validation_alias=_alias("retry_interval", "retryInterval"),
        description="Wait before listing again after the API failed (doubles up to 30s).",
    )
