"""What a backend adapter implements and what it answers: records, batches, error classes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["BatchSender", "PermanentError", "Record", "RetryableError", "SendResult"]


@dataclass(frozen=True, slots=True)
class Record:
    """One encoded item on its way to a backend.

    ``payload`` is the encoded item (a JSON line, OTLP bytes, ...); ``route`` an adapter-defined
    destination (Kafka topic, Elasticsearch index, ...; ``""`` when there is one); ``key`` the
    Kafka partitioning key, ``None`` elsewhere.
    """

    payload: bytes
    route: str = ""
    key: bytes | None = None

    def size(self) -> int:
        """Bytes this record counts for in every bound: payload, route (UTF-8 length) and key."""
        return len(self.payload) + len(self.route.encode()) + (len(self.key) if self.key is not None else 0)


class RetryableError(Exception):
    """The whole batch may succeed later: backend down, timeout, throttled (429), 5xx."""


class PermanentError(Exception):
    """The whole batch never will: bad request, authentication, other 4xx. It goes to the dead letter."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """A batch the backend accepted only in part; indices are positions in the batch sent.

    ``retry``: items that may succeed later (an Elasticsearch item answered 429). ``rejected``:
    items that never will, each with a reason; they go to the dead letter. Every other item of
    the batch counts as accepted.
    """

    retry: tuple[int, ...] = ()
    rejected: tuple[tuple[int, str], ...] = ()


class BatchSender(Protocol):
    """The one thing a backend adapter writes: send a batch, classify the outcome.

    ``send`` returns ``None`` when every record was accepted, a :class:`SendResult` when only
    some were, and raises :class:`RetryableError` or :class:`PermanentError` for the whole batch.
    Any other exception counts as retryable. ``send`` may be called concurrently (up to
    ``max_concurrent_sends``) and is cancelled when it outlives ``send_timeout`` (a retryable
    failure). ``close`` is called once, after the last send.
    """

    async def send(self, batch: Sequence[Record]) -> SendResult | None: ...

    async def close(self) -> None: ...
