"""Plan tiers: plans as configured, who is on which plan, and enforcing a plan's limits.

Plans are ``kind: plan`` config documents (docs/quotas.md); the loader compiles them into
:class:`PlanConfig`. A plan handler (memquota, later redisquota) resolves the caller with a
:class:`SubjectResolver` and allocates the plan's limits through a :class:`PlanEnforcer` backed by
its :class:`~mixer.quota.CounterStore`. Plugins add API key stores by returning
:class:`KeyStoreInfo` from ``mixer_register_key_stores``.
"""

from __future__ import annotations

from mixer.plans._enforce import (
    OVERAGE_HEADER,
    PLAN_HEADER,
    SUBJECT_HEADER,
    PlanEnforcer,
    PlanEvaluationError,
    PlanStats,
    PlanVerdict,
)
from mixer.plans._keys import (
    CachedKeyStore,
    FileKeyStore,
    InlineKeyStore,
    KeyRecord,
    KeyStore,
    KeyStoreFactory,
    KeyStoreInfo,
    parse_key_file,
)
from mixer.plans._model import (
    BUILTIN_DIMENSIONS,
    CALENDAR_UNIT_SECONDS,
    Dimension,
    LimitConfig,
    Overage,
    PlanConfig,
)
from mixer.plans._subjects import (
    ANONYMOUS,
    KeyCacheParams,
    KeysParams,
    KeyStorePluginParams,
    Resolution,
    SubjectResolver,
    SubjectsParams,
    UnknownKey,
)

__all__ = [
    "ANONYMOUS",
    "BUILTIN_DIMENSIONS",
    "CALENDAR_UNIT_SECONDS",
    "OVERAGE_HEADER",
    "PLAN_HEADER",
    "SUBJECT_HEADER",
    "CachedKeyStore",
    "Dimension",
    "FileKeyStore",
    "InlineKeyStore",
    "KeyCacheParams",
    "KeyRecord",
    "KeyStore",
    "KeyStoreFactory",
    "KeyStoreInfo",
    "KeyStorePluginParams",
    "KeysParams",
    "LimitConfig",
    "Overage",
    "PlanConfig",
    "PlanEnforcer",
    "PlanEvaluationError",
    "PlanStats",
    "PlanVerdict",
    "Resolution",
    "SubjectResolver",
    "SubjectsParams",
    "UnknownKey",
    "parse_key_file",
]
