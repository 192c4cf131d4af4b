"""``kubernetesenv``: pod, workload and owner attributes from pod IPs and uids (Mixer's stock APA).

The handler answers instances of the ``kubernetes`` template (registered here) from a pod and
replica set inventory that a background task keeps in step with the Kubernetes API (list and
watch), or that a static YAML file fills. See README.md.
"""

from __future__ import annotations

from pydantic import BaseModel

import mixer
from adapters.kubernetesenv._config import KubernetesEnvConfig
from adapters.kubernetesenv._template import KUBERNETES_TEMPLATE, KubernetesInstance
from mixer import AdapterInfo, Handler, HandlerEnv, Stability, hookimpl
from mixer.templates import TemplateSpec

__all__ = [
    "ADAPTER_INFO",
    "KUBERNETES_TEMPLATE",
    "KubernetesEnvConfig",
    "KubernetesInstance",
    "build_handler",
    "mixer_register_adapters",
    "mixer_register_templates",
]


def build_handler(config: BaseModel, env: HandlerEnv) -> Handler:
    """A handler from validated params; nothing is read or connected before ``start``."""
    from adapters.kubernetesenv._handler import KubernetesEnvHandler

    if not isinstance(config, KubernetesEnvConfig):
        raise TypeError(
            f"kubernetesenv handler needs KubernetesEnvConfig params, got {type(config).__name__}"
        )
    return KubernetesEnvHandler(config, env)


ADAPTER_INFO = AdapterInfo(
    name="kubernetesenv",
    description="Derives pod, workload, owner and service account attributes from pod IPs and uids.",
    templates=frozenset({"kubernetes"}),
    config_model=KubernetesEnvConfig,
    factory=build_handler,
    stability=Stability.BETA,
    version=mixer.__version__,
)


@hookimpl
def mixer_register_adapters() -> list[AdapterInfo]:
    return [ADAPTER_INFO]


@hookimpl
def mixer_register_templates() -> list[TemplateSpec]:
    return [KUBERNETES_TEMPLATE]
