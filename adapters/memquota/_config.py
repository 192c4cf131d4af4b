"""memquota's params: the shared quota handler params plus the in-memory store's bounds."""

from __future__ import annotations

from pydantic import Field

from mixer.quota import DEFAULT_MAX_DEDUP_BYTES
from mixer.quotahandler import (
    FailurePolicy,
    OverrideParams,
    QuotaHandlerParams,
    QuotaParams,
    RateLimitAlgorithm,
)

__all__ = [
    "FailurePolicy",
    "MemquotaConfig",
    "OverrideParams",
    "QuotaHandlerParams",
    "QuotaParams",
    "RateLimitAlgorithm",
]


class MemquotaConfig(QuotaHandlerParams):
    """Params of a ``memquota`` handler."""

    max_counters: int = Field(
        default=100_000,
        ge=1,
        description="Counters kept at most; the least recently used go first (counted as evictions).",
    )
    max_deduplication_entries: int = Field(
        default=100_000, ge=0, description="Deduplication records kept at most; the oldest go first."
    )
    max_deduplication_bytes: int = Field(
        default=DEFAULT_MAX_DEDUP_BYTES,
        ge=0,
        description=(
            "Estimated bytes of the deduplication records kept at most (64 MiB); the oldest go first, "
            "counted as evictions like those over max_deduplication_entries."
        ),
    )
