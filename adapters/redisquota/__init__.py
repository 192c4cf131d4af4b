"""``redisquota``: quotas and plan tiers counted in Redis, shared by every replica.

Mixer's ``redisquota`` adapter (legacy kind ``redisquota``) for the quota template, and the plan
enforcer for the plancheck template: memquota's handler over a Redis counter store (one Lua
round trip per Check). Also registers the ``redis`` API key store. See README.md.
"""

from __future__ import annotations

from adapters.redisquota._config import RedisquotaConfig
from mixer import AdapterInfo, Stability, hookimpl, lazy_factory
from mixer.plans import KeyStoreInfo
from mixer.plans.redis_keys import RedisKeyStoreParams, build_redis_key_store

__all__ = ["ADAPTER", "KEY_STORE", "RedisquotaConfig", "mixer_register_key_stores"]


ADAPTER = AdapterInfo(
    name="redisquota",
    description="Quotas and plan-tier limits counted in Redis (shared by every replica)",
    templates=frozenset({"quota", "plancheck", "apikey"}),
    config_model=RedisquotaConfig,
    factory=lazy_factory("adapters.redisquota._handler:RedisquotaHandler"),
    stability=Stability.BETA,
    uses_plans=True,
)

KEY_STORE = KeyStoreInfo(
    name="redis",
    description="API keys in a Redis hash: {subject, plan} JSON per key, revocations seen within `refresh`",
    config_model=RedisKeyStoreParams,
    factory=build_redis_key_store,
)


@hookimpl
def mixer_register_key_stores() -> list[KeyStoreInfo]:
    return [KEY_STORE]
