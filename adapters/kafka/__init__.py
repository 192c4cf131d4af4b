"""``kafka``: logentry, metric and tracespan instances as Kafka records, in JSON or OTLP protobuf.

Topic and key are formats over the instance's fields; queueing, batching, retry and the spool are
the shared Delivery helper's. See README.md for the params, the encodings and the error classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.kafka._config import (
    DEFAULT_TOPIC,
    Compression,
    Encoding,
    KafkaConfig,
    SaslConfig,
    SaslMechanism,
    TlsConfig,
    is_valid_topic,
)
from adapters.kafka._format import FormatError, InstanceFormat
from mixer import AdapterInfo, Stability, lazy_factory
from mixer.lazy import lazy_getattr

__all__ = [
    "ADAPTER",
    "DEFAULT_TOPIC",
    "Compression",
    "EncodeError",
    "Encoding",
    "FormatError",
    "InstanceFormat",
    "JsonEncoder",
    "KafkaConfig",
    "KafkaHandler",
    "KafkaSender",
    "OtlpEncoder",
    "SaslConfig",
    "SaslMechanism",
    "TlsConfig",
    "is_valid_topic",
]

if TYPE_CHECKING:
    from adapters.kafka._encoding import EncodeError, JsonEncoder, OtlpEncoder
    from adapters.kafka._handler import KafkaHandler
    from adapters.kafka._sender import KafkaSender

# Registration needs only the params model; aiokafka and the OTLP protos load with the first handler.
__getattr__ = lazy_getattr(
    __name__,
    {
        "adapters.kafka._encoding": ("EncodeError", "JsonEncoder", "OtlpEncoder"),
        "adapters.kafka._handler": ("KafkaHandler",),
        "adapters.kafka._sender": ("KafkaSender",),
    },
)


ADAPTER = AdapterInfo(
    name="kafka",
    description="Sends logs, metrics and spans to Kafka topics as JSON or OTLP protobuf records",
    templates=frozenset({"logentry", "metric", "tracespan"}),
    config_model=KafkaConfig,
    factory=lazy_factory("adapters.kafka._handler:KafkaHandler"),
    stability=Stability.BETA,
)
