"""``memquota``: quotas and plan tiers counted in process memory.

Mixer's ``memquota`` adapter (legacy kind ``memquota``) for the quota template, and the plan
enforcer for the plancheck template. Counters live in this process: run one process (the
embedded default does), or use a shared store for several. See README.md for the params.
"""

from __future__ import annotations

from adapters.memquota._config import MemquotaConfig, OverrideParams, QuotaParams, RateLimitAlgorithm
from mixer import AdapterInfo, Handler, HandlerEnv, Stability, __version__

__all__ = [
    "ADAPTER",
    "MemquotaConfig",
    "OverrideParams",
    "QuotaParams",
    "RateLimitAlgorithm",
    "build_handler",
]


def build_handler(config: MemquotaConfig, env: HandlerEnv) -> Handler:
    from adapters.memquota._handler import MemquotaHandler

    return MemquotaHandler(config, env)


ADAPTER = AdapterInfo(
    name="memquota",
    description="Quotas and plan-tier limits counted in process memory (single process)",
    templates=frozenset({"quota", "plancheck", "apikey"}),
    config_model=MemquotaConfig,
    factory=build_handler,
    stability=Stability.BETA,
    version=__version__,
    uses_plans=True,
    process_local_state=True,
)
