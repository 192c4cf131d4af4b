"""``kubernetesenv``: pod, workload and owner attributes from pod IPs and uids (Mixer's stock APA).

The handler answers instances of the ``kubernetes`` template (registered here) from a pod and
replica set inventory that a background task keeps in step with the Kubernetes API (list and
watch), or that a static YAML file fills. See README.md.
"""

from __future__ import annotations

from adapters.kubernetesenv._config import KubernetesEnvConfig
from adapters.kubernetesenv._template import KUBERNETES_TEMPLATE, KubernetesInstance
from mixer import AdapterInfo, Stability, hookimpl, lazy_factory
from mixer.templates import TemplateSpec

__all__ = [
    "ADAPTER",
    "KUBERNETES_TEMPLATE",
    "KubernetesEnvConfig",
    "KubernetesInstance",
    "mixer_register_templates",
]


# The adapter's template is its own: registered with it, blocked with it.
@hookimpl
def mixer_register_templates() -> list[TemplateSpec]:
    return [KUBERNETES_TEMPLATE]


ADAPTER = AdapterInfo(
    name="kubernetesenv",
    description="Derives pod, workload, owner and service account attributes from pod IPs and uids.",
    templates=frozenset({"kubernetes"}),
    config_model=KubernetesEnvConfig,
    factory=lazy_factory("adapters.kubernetesenv._handler:KubernetesEnvHandler"),
    stability=Stability.BETA,
)
