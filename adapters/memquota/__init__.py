"""``memquota``: quotas and plan tiers counted in process memory.

Mixer's ``memquota`` adapter (legacy kind ``memquota``) for the quota template, and the plan
enforcer for the plancheck template. Counters live in this process: run one process (the
embedded default does), or use a shared store for several. See README.md for the params.
"""

from __future__ import annotations

from adapters.memquota._config import MemquotaConfig, OverrideParams, QuotaParams, RateLimitAlgorithm
from mixer import AdapterInfo, Stability, lazy_factory

__all__ = ["ADAPTER", "MemquotaConfig", "OverrideParams", "QuotaParams", "RateLimitAlgorithm"]


ADAPTER = AdapterInfo(
    name="memquota",
    description="Quotas and plan-tier limits counted in process memory (single process)",
    templates=frozenset({"quota", "plancheck", "apikey"}),
    config_model=MemquotaConfig,
    factory=lazy_factory("adapters.memquota._handler:MemquotaHandler"),
    stability=Stability.BETA,
    uses_plans=True,
    process_local_state=True,
)
