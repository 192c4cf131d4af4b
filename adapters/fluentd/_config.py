"""The fluentd adapter's params: Mixer 1.4's (address, integerDuration, buffer, push) plus delivery."""

from __future__ import annotations

import re

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from mixer.delivery import DeliveryOptions
from mixer.params import PositiveDuration

__all__ = ["DEFAULT_ADDRESS", "FluentdConfig"]

DEFAULT_ADDRESS = "localhost:24224"
_HOST_PORT = re.compile(r"(?:\[(?P<ipv6>[0-9a-fA-F:.]+)\]|(?P<host>[^\s:\[\]/]+)):(?P<port>[0-9]{1,5})")


def _alias(snake: str, camel: str) -> AliasChoices:
    return AliasChoices(snake, camel)


class FluentdConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    address: str = Field(
        default=DEFAULT_ADDRESS, description="``host:port`` of the fluentd (or Fluent Bit) forward input."
    )
    integer_duration: bool = Field(
        default=False,
        validation_alias=_alias("integer_duration", "integerDuration"),
        description='Durations as integer milliseconds instead of Go duration text (``"12ms"``).',
    )
    instance_buffer_size: int | None = Field(
        default=None,
        gt=0,
        validation_alias=_alias("instance_buffer_size", "instanceBufferSize"),
        description="Mixer's queue of entries awaiting a push: the delivery queue's record bound.",
    )
    max_batch_size_bytes: int | None = Field(
        default=None,
        gt=0,
        validation_alias=_alias("max_batch_size_bytes", "maxBatchSizeBytes"),
        description="Mixer's bytes per push: the delivery batch's byte bound.",
    )
    push_interval_duration: PositiveDuration | None = Field(
        default=None,
        validation_alias=_alias("push_interval_duration", "pushIntervalDuration"),
        description="How long a batch that is not full waits (Mixer: at least one push per interval).",
    )
    push_timeout_duration: PositiveDuration | None = Field(
        default=None,
        validation_alias=_alias("push_timeout_duration", "pushTimeoutDuration"),
        description="How long one push may take, ack included; past it the batch is retried.",
    )
    require_ack: bool = Field(
        default=True,
        validation_alias=_alias("require_ack", "requireAck"),
        description=(
            "Ask fluentd to acknowledge each chunk (at-least-once); without it a written chunk counts as "
            "sent."
        ),
    )
    delivery: DeliveryOptions = Field(
        default=DeliveryOptions(),
        description="Queueing, batching, retry and spooling (see docs/delivery.md).",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        match = _HOST_PORT.fullmatch(value.strip())
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ValueError(f"address must be host:port, got {value!r}")
        return value.strip()

    def host_port(self) -> tuple[str, int]:
        match = _HOST_PORT.fullmatch(self.address)
        assert match is not None
        return match["ipv6"] or match["host"], int(match["port"])

    def effective_delivery(self) -> DeliveryOptions:
        """``delivery`` with Mixer's params applied where given."""
        updates: dict[str, object] = {}
        if self.instance_buffer_size is not None:
            updates["queue_max_records"] = self.instance_buffer_size
        if self.max_batch_size_bytes is not None:
            updates["batch_max_bytes"] = self.max_batch_size_bytes
        if self.push_interval_duration is not None:
            updates["batch_timeout"] = self.push_interval_duration
        if self.push_timeout_duration is not None:
            updates["send_timeout"] = self.push_timeout_duration
        return self.delivery.model_copy(update=updates) if updates else self.delivery
