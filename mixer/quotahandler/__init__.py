"""The quota handler shared by the counter-store adapters (memquota, redisquota): Mixer's quota
template and plan checks over any :class:`~mixer.quota.CounterStore`, with its params.

A package of its own, above :mod:`mixer.adapter` and :mod:`mixer.plans`: :mod:`mixer.quota` holds
the algorithms and stores and imports neither.
"""

from mixer.quotahandler._handler import (
    MAX_DEFAULT_BUCKETS,
    MAX_RESOLVED_NAMES,
    MIXER_TICK_SECONDS,
    PLAN_VALID_DURATION,
    PLAN_VALID_USE_COUNT,
    STORE_UNAVAILABLE,
    CounterStoreHandler,
)
from mixer.quotahandler._params import (
    FailurePolicy,
    OverrideParams,
    QuotaHandlerParams,
    QuotaParams,
    RateLimitAlgorithm,
)

__all__ = [
    "MAX_DEFAULT_BUCKETS",
    "MAX_RESOLVED_NAMES",
    "MIXER_TICK_SECONDS",
    "PLAN_VALID_DURATION",
    "PLAN_VALID_USE_COUNT",
    "STORE_UNAVAILABLE",
    "CounterStoreHandler",
    "FailurePolicy",
    "OverrideParams",
    "QuotaHandlerParams",
    "QuotaParams",
    "RateLimitAlgorithm",
]
