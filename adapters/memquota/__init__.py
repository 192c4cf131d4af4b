"""``memquota``: quotas and plan tiers counted in process memory.

Mixer's ``memquota`` adapter (legacy kind ``memquota``) for the quota template, and the plan
enforcer for the plancheck template. Counters live in this process: run one process (the
embedded default does), or use a shared store for several. See README.md for the params.
"""

from __future__ import annotations

from pydantic import BaseModel

from adapters.memquota._config import MemquotaConfig, OverrideParams, QuotaParams, RateLimitAlgorithm
from mixer import AdapterInfo, Handler, HandlerEnv, Stability, __version__, hookimpl

__all__ = [
    "ADAPTER",
    "MemquotaConfig",
    "OverrideParams",
    "QuotaParams",
    "RateLimitAlgorithm",
    "build_handler",
    "mixer_register_adapters",
]


def build_handler(config: BaseModel, env: HandlerEnv) -> Handler:
    from adapters.memquota._handler import MemquotaHandler

    if not isinstance(config, MemquotaConfig):
        raise TypeError(f"memquota needs a MemquotaConfig, got {type(config).__name__}")
    return MemquotaHandler(config, env)


ADAPTER = AdapterInfo(
    name="memquota",
    description="Quotas and plan-tier limits counted in process memory (single process)",
    templates=frozenset({"quota", "plancheck", "apikey"}),
    config_model=MemquotaConfig,
    factory=build_handler,
    stability=Stability.BETA,
    version=__version__,
    legacy_kinds=("memquota",),
    uses_plans=True,
)


@hookimpl
def mixer_register_adapters() -> list[AdapterInfo]:
    return [ADAPTER]
