"""google.rpc error details for denials that rate limits caused.

Proxies act on HTTP headers (``Retry-After``, ``RateLimit``), which every protocol carries its own
way; gRPC clients that read status details get the same facts as ``google.rpc.RetryInfo`` (when to
try again) and ``google.rpc.QuotaFailure`` (which limits refused the request).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import timedelta

from google.protobuf.any_pb2 import Any as AnyProto
from google.rpc.error_details_pb2 import QuotaFailure, RetryInfo  # type: ignore[import-untyped]

from mixer.decision import CheckOutcome
from mixer.wire import duration_of

__all__ = ["rate_limit_details", "retry_after_seconds"]


def retry_after_seconds(waits: Iterable[float]) -> int | None:
    """Whole seconds until a request refused with these waits (seconds, one per refusing limit)
    could pass: the longest, rounded up so a client that waits as told is never early, at least 1.
    None when there is no wait or one is infinite (no wait helps)."""
    seconds = list(waits)
    if not seconds or not all(math.isfinite(wait) for wait in seconds):
        return None
    return max(math.ceil(max(seconds) - 1e-9), 1)


def rate_limit_details(outcome: CheckOutcome) -> list[AnyProto]:
    """RetryInfo and QuotaFailure for a denial with rate limits; nothing for anything else."""
    if outcome.status.ok or not outcome.rate_limits:
        return []
    refused = [rl for rl in outcome.rate_limits if rl.retry_after is not None]
    if not refused:
        return []
    details: list[AnyProto] = []
    wait = retry_after_seconds(rl.retry_after for rl in refused if rl.retry_after is not None)
    if wait is not None:
        retry = AnyProto()
        retry.Pack(RetryInfo(retry_delay=duration_of(timedelta(seconds=wait))))
        details.append(retry)
    failure = QuotaFailure()
    for rl in refused:
        failure.violations.add(
            subject=rl.name,
            description=f"{max(rl.limit, 0)} per {_seconds_text(rl.window)}; "
            f"{max(rl.remaining, 0)} left, whole again in {_seconds_text(rl.reset)}",
        )
    packed = AnyProto()
    packed.Pack(failure)
    details.append(packed)
    return details


def _seconds_text(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "never"
    return f"{max(math.ceil(seconds - 1e-9), 0)}s"
