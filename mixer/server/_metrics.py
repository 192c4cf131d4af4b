"""The server's own metrics live in :mod:`mixer.api`, beside the servicers that record them."""

from __future__ import annotations

from mixer.api import LATENCY_BUCKETS, MethodMetrics, RuntimeStatsCollector, ServerMetrics

__all__ = ["LATENCY_BUCKETS", "MethodMetrics", "RuntimeStatsCollector", "ServerMetrics"]
