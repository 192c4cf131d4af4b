"""Delivery: what every report adapter shares between ``handle_report`` and its backend.

An adapter writes a :class:`BatchSender` ("send this batch", classifying failures as
:class:`RetryableError` or :class:`PermanentError`, or per item through :class:`SendResult`) and
hands encoded :class:`Record` objects to :meth:`Delivery.offer`. :class:`Delivery` owns the
bounded queue, batching, concurrency, retry with jittered backoff, the durable spool, the dead
letter file and the self-metrics. :class:`Backoff` is its retry schedule, for adapters that retry
something of their own. See ``docs/delivery.md``.
"""

from __future__ import annotations

from mixer.delivery._backoff import Backoff
from mixer.delivery._delivery import Delivery
from mixer.delivery._handler import DeliveryReportHandler
from mixer.delivery._metrics import DeliveryCollector
from mixer.delivery._options import DeliveryOptions, SpoolOptions
from mixer.delivery._stats import SEND_DURATION_BUCKETS, DeliveryStats
from mixer.delivery._types import BatchSender, PermanentError, Record, RetryableError, SendResult

__all__ = [
    "SEND_DURATION_BUCKETS",
    "Backoff",
    "BatchSender",
    "Delivery",
    "DeliveryCollector",
    "DeliveryOptions",
    "DeliveryReportHandler",
    "DeliveryStats",
    "PermanentError",
    "Record",
    "RetryableError",
    "SendResult",
    "SpoolOptions",
]
