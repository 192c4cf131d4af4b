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

    enabled: bool = Field(default=True, description="Without a data dir the spool is off whatever this says.")
    max_bytes: int = Field(
        default=GiB,
        gt=0,
        description="Bytes of records (as :meth:`Record.size` counts them) the spool holds at most.",
    )
    full_policy: Literal["reject", "drop_oldest"] = Field(
        default="reject",
        description=(
            "When the spool is full: ``reject`` refuses new records (the caller answers UNAVAILABLE); "
            "``drop_oldest`` deletes the oldest spooled records to make room, counted as dropped."
        ),
    )
    synchronous: Literal["normal", "full"] = Field(
        default="normal",
        description=(
            "SQLite ``synchronous``: ``normal`` survives the process being killed; ``full`` also fsyncs "
            "every commit, so committed records survive a power failure or an OS crash."
        ),
    )


class DeliveryOptions(BaseModel):
    """Queueing, batching, retry and spooling of one report handler's records."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue_max_records: int = Field(
        default=10_000, gt=0, description="Records held in memory at most (waiting or being sent)."
    )
    queue_max_bytes: int = Field(default=32 * MiB, gt=0, description="Bytes held in memory at most.")
    batch_max_records: int = Field(default=500, gt=0, description="Records per batch at most.")
    batch_max_bytes: int = Field(
        default=MiB, gt=0, description="Bytes per batch at most (a single larger record is sent alone)."
    )
    batch_timeout: NonNegativeDuration = Field(
        default=timedelta(milliseconds=200),
        description="How long a batch that is not full waits for more records.",
    )
    max_concurrent_sends: int = Field(default=2, gt=0, description="Batches in flight at most.")
    send_timeout: PositiveDuration = Field(
        default=timedelta(seconds=10),
        description="One send attempt is cancelled after this (a retryable failure).",
    )
    retry_initial_interval: PositiveDuration = Field(
        default=timedelta(milliseconds=100), description="First wait before a retry."
    )
    retry_max_interval: PositiveDuration = Field(
        default=timedelta(seconds=5), description="Cap of the wait between retries (and between probes)."
    )
    retry_multiplier: float = Field(
        default=2.0, ge=1.0, description="Growth of the wait per retry (at least 1)."
    )
    retry_jitter: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description=(
            "Each wait is the backoff interval times a random factor in ``[1 - jitter, 1 + jitter]``."
        ),
    )
    retry_max_elapsed: NonNegativeDuration = Field(
        default=timedelta(seconds=60),
        description="How long a batch is retried before it goes to the spool (and the circuit opens).",
    )
    spool: SpoolOptions = Field(
        default=SpoolOptions(), description="The on-disk spool that keeps records while the backend is down."
    )
    ack: Literal["memory", "spool", "auto"] | None = Field(
        default=None,
        description=(
            "When a Report is answered: ``memory`` once the records are queued; ``spool`` once they are "
            "committed to the spool; ``auto`` like ``spool`` while the backend is failing, the circuit is "
            "open, records wait in the spool or the backend has not answered yet, else like ``memory``. "
            "Unset: the server's ``--delivery-ack`` (``auto`` by default)."
        ),
    )
    dead_letter_max_bytes: int = Field(
        default=64 * MiB,
        gt=0,
        description="Bytes of ``dead-letter.jsonl``; past it the file is rotated to ``dead-letter.1.jsonl``.",
    )
