"""The ``delivery:`` params an adapter embeds in its config model."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mixer.params import NonNegativeDuration, PositiveDuration

__all__ = ["DeliveryOptions", "SpoolOptions"]

MiB = 1024 * 1024
GiB = 1024 * MiB


class SpoolOptions(BaseModel):
    """The on-disk spool (``<data_dir>/spool.sqlite3``) for what cannot be sent or kept in memory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Without a data dir the spool is off whatever this says.
    enabled: bool = True
    #: Bytes of records (as :meth:`Record.size` counts them) the spool holds at most.
    max_bytes: int = Field(default=GiB, gt=0)
    #: When the spool is full: ``reject`` refuses new records (the caller answers UNAVAILABLE);
    #: ``drop_oldest`` deletes the oldest spooled records to make room, counted as dropped.
    full_policy: Literal["reject", "drop_oldest"] = "reject"
    #: SQLite ``synchronous``: ``normal`` survives the process being killed; ``full`` also fsyncs
    #: every commit, so committed records survive a power failure or an OS crash.
    synchronous: Literal["normal", "full"] = "normal"


class DeliveryOptions(BaseModel):
    """Queueing, batching, retry and spooling of one report handler's records."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue_max_records: int = Field(default=10_000, gt=0)
    queue_max_bytes: int = Field(default=32 * MiB, gt=0)
    batch_max_records: int = Field(default=500, gt=0)
    batch_max_bytes: int = Field(default=MiB, gt=0)
    #: How long a batch that is not full waits for more records.
    batch_timeout: NonNegativeDuration = timedelta(milliseconds=200)
    max_concurrent_sends: int = Field(default=2, gt=0)
    send_timeout: PositiveDuration = timedelta(seconds=10)
    retry_initial_interval: PositiveDuration = timedelta(milliseconds=100)
    retry_max_interval: PositiveDuration = timedelta(seconds=5)
    retry_multiplier: float = Field(default=2.0, ge=1.0)
    #: Each wait is the backoff interval times a random factor in ``[1 - jitter, 1 + jitter]``.
    retry_jitter: float = Field(default=0.2, ge=0.0, le=1.0)
    #: How long a batch is retried before it goes to the spool (and the circuit opens).
    retry_max_elapsed: NonNegativeDuration = timedelta(seconds=60)
    spool: SpoolOptions = SpoolOptions()
    #: When a Report is answered: ``memory`` once the records are queued; ``spool`` once they are
    #: committed to the spool; ``auto`` like ``spool`` while the backend is failing, the circuit is
    #: open, records wait in the spool or the backend has not answered yet, else like ``memory``.
    #: Unset: the server's ``--delivery-ack`` (``auto`` by default).
    ack: Literal["memory", "spool", "auto"] | None = None
    #: Bytes of ``dead-letter.jsonl``; past it the file is rotated to ``dead-letter.1.jsonl``.
    dead_letter_max_bytes: int = Field(default=64 * MiB, gt=0)
