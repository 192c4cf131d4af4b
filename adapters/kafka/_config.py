"""The kafka adapter's params: brokers, routing, encoding, producer tuning, SASL, TLS, delivery."""

from __future__ import annotations

import enum
import re
from datetime import timedelta
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from adapters.kafka._format import FormatError, InstanceFormat
from mixer.delivery import DeliveryOptions
from mixer.params import PositiveDuration
from mixer.redact import FieldRedaction

__all__ = [
    "DEFAULT_TOPIC",
    "Compression",
    "Encoding",
    "KafkaConfig",
    "SaslConfig",
    "SaslMechanism",
    "TlsConfig",
    "is_valid_topic",
]

DEFAULT_TOPIC = "mixer-{template}"
#: Kafka's own limit on topic names (and its legal characters).
MAX_TOPIC_LENGTH = 249
_TOPIC_CHARS = re.compile(r"[a-zA-Z0-9._-]*")
_HOST_PORT = re.compile(r"(?:\[(?P<ipv6>[0-9a-fA-F:.]+)\]|(?P<host>[^\s:\[\]/]+)):(?P<port>[0-9]{1,5})")


def is_valid_topic(name: str) -> bool:
    """Whether Kafka accepts ``name`` as a topic: 1-249 of ``[a-zA-Z0-9._-]``, not ``.`` or ``..``."""
    return (
        0 < len(name) <= MAX_TOPIC_LENGTH
        and _TOPIC_CHARS.fullmatch(name) is not None
        and name not in (".", "..")
    )


class Encoding(enum.StrEnum):
    #: One JSON object per instance, as the stdio adapter writes it.
    JSON = "json"
    #: OTLP protobuf (LogsData, TracesData, MetricsData), as the Collector's kafkareceiver reads it.
    OTLP_PROTO = "otlp_proto"


class Compression(enum.StrEnum):
    NONE = "none"
    GZIP = "gzip"
    SNAPPY = "snappy"
    LZ4 = "lz4"
    ZSTD = "zstd"


class SaslMechanism(enum.StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


def _acks(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("acks must be 0, 1 or all")  # else True would pass as 1
    # YAML may quote the number; Kafka's own configs spell "all" as -1 too.
    if isinstance(value, str) and value.strip() in ("0", "1", "-1"):
        value = int(value.strip())
    if value == -1:
        return "all"
    if isinstance(value, str):
        return value.strip().lower()
    return value


Acks = Annotated[Literal[0, 1, "all"], BeforeValidator(_acks)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SaslConfig(_Model):
    """SASL authentication; over TLS when ``tls.enabled``, else over plain TCP."""

    mechanism: SaslMechanism = Field(
        default=SaslMechanism.PLAIN, description="``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``."
    )
    username: str = Field(min_length=1, description="The SASL user name.")
    password: SecretStr = Field(description="The SASL password; shown redacted.")


class TlsConfig(_Model):
    """TLS to the brokers. Files are read when the handler starts, not when config loads."""

    enabled: bool = Field(default=False, description="Connect to the brokers with TLS.")
    ca_file: str | None = Field(
        default=None,
        description=(
            "CA bundle (PEM) the brokers' certificates are checked against; the system store when unset."
        ),
    )
    cert_file: str | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS; may hold the key too."
    )
    key_file: str | None = Field(
        default=None, description="Private key (PEM) of ``cert_file``, when that file does not hold it."
    )
    insecure_skip_verify: bool = Field(
        default=False,
        description="Accept any certificate and host name. For tests only: it gives up what TLS is for.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        files = [name for name in ("ca_file", "cert_file", "key_file") if getattr(self, name)]
        if not self.enabled and (files or self.insecure_skip_verify):
            given = ", ".join([*files, *(["insecure_skip_verify"] if self.insecure_skip_verify else [])])
            raise ValueError(f"{given} given but TLS is off: set enabled: true")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file")
        return self


class KafkaConfig(_Model):
    """Params of a ``kafka`` handler."""

    brokers: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:9092"],
        min_length=1,
        description="Bootstrap brokers, ``host:port`` (``[::1]:9092`` for IPv6).",
    )
    topic: str = Field(
        default=DEFAULT_TOPIC,
        description=(
            "Topic of each record: a format with ``{placeholders}`` (see ``_format``); a plain name is fixed."
        ),
    )
    key: str | None = Field(
        default=None, description="Record key, a format like ``topic``; unset, records have no key."
    )
    encoding: Encoding = Field(
        default=Encoding.JSON,
        description=(
            "``json`` (one object per instance) or ``otlp_proto`` (OTLP protobuf, as the Collector's "
            "kafkareceiver reads it)."
        ),
    )
    redact: FieldRedaction | None = Field(
        default=None,
        description="Fields of each record hashed, masked or dropped before it is encoded (e.g. API keys).",
    )
    compression: Compression = Field(
        default=Compression.NONE,
        description="Record batch compression: ``none``, ``gzip``, ``snappy``, ``lz4`` or ``zstd``.",
    )
    acks: Acks = Field(
        default=1, description="Acknowledgements a produce waits for: ``0``, ``1`` or ``all`` (``-1``)."
    )
    max_batch_size: int = Field(
        default=256 * 1024,
        gt=0,
        description="Bytes of one partition's record batch (before compression); a send may carry several.",
    )
    max_request_size: int = Field(
        default=1024 * 1024,
        gt=0,
        description=(
            "Largest record (key + value + overhead) the producer sends; bigger ones go to the dead letter."
        ),
    )
    request_timeout: PositiveDuration = Field(
        default=timedelta(seconds=5),
        description=(
            "How long a produce or metadata request may take before it counts as failed (and is retried)."
        ),
    )
    client_id: str = Field(
        default="mesh-mixer",
        min_length=1,
        description="The client id the brokers see in their logs and quotas.",
    )
    sasl: SaslConfig | None = Field(default=None, description="SASL authentication; unset, none.")
    tls: TlsConfig = Field(default=TlsConfig(), description="TLS to the brokers.")
    delivery: DeliveryOptions = Field(
        default=DeliveryOptions(),
        description="Queueing, batching, retry and spooling (see docs/delivery.md).",
    )

    @field_validator("brokers")
    @classmethod
    def _check_brokers(cls, brokers: list[str]) -> list[str]:
        for broker in brokers:
            match = _HOST_PORT.fullmatch(broker.strip())
            if match is None:
                raise ValueError(f"broker {broker!r} is not host:port")
            if not 0 < int(match.group("port")) < 65536:
                raise ValueError(f"broker {broker!r}: port out of range")
        return [broker.strip() for broker in brokers]

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, topic: str) -> str:
        parsed = _parse("topic", topic)
        literal = parsed.literal_text
        if parsed.is_constant:
            if not is_valid_topic(literal):
                raise ValueError(
                    f"{topic!r} is not a Kafka topic name (1-{MAX_TOPIC_LENGTH} of a-z A-Z 0-9 . _ -)"
                )
        elif _TOPIC_CHARS.fullmatch(literal) is None or len(literal) > MAX_TOPIC_LENGTH:
            raise ValueError(
                f"{topic!r}: the text around placeholders may only use a-z A-Z 0-9 . _ - "
                f"and be at most {MAX_TOPIC_LENGTH} characters"
            )
        return topic

    @field_validator("key")
    @classmethod
    def _check_key(cls, key: str | None) -> str | None:
        if key is not None:
            _parse("key", key)
        return key

    @model_validator(mode="after")
    def _check_sizes_and_timeouts(self) -> Self:
        if self.max_batch_size > self.max_request_size:
            raise ValueError(
                f"max_batch_size ({self.max_batch_size}) cannot exceed max_request_size "
                f"({self.max_request_size}): a batch travels in one request"
            )
        if self.request_timeout >= self.delivery.send_timeout:
            raise ValueError(
                f"request_timeout ({self.request_timeout.total_seconds():g}s) must be shorter than "
                f"delivery.send_timeout ({self.delivery.send_timeout.total_seconds():g}s), or every "
                "slow send is cut off before the producer reports what happened to it"
            )
        return self

    @property
    def topic_format(self) -> InstanceFormat:
        return InstanceFormat(self.topic)

    @property
    def key_format(self) -> InstanceFormat | None:
        return None if self.key is None else InstanceFormat(self.key)


def _parse(what: str, text: str) -> InstanceFormat:
    try:
        return InstanceFormat(text)
    except FormatError as exc:
        raise ValueError(f"{what}: {exc}") from None
