"""The kafka handler: instances encoded to records, handed to Delivery, sent by :class:`KafkaSender`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from adapters.kafka._config import KafkaConfig
from adapters.kafka._encoding import EncodeError, make_encoder
from adapters.kafka._sender import KafkaSender
from mixer import HandlerEnv, ReportBatch
from mixer.delivery import DeliveryReportHandler, DeliveryStats, Record

__all__ = ["KafkaHandler"]


class KafkaHandler(DeliveryReportHandler[KafkaSender]):
    """``handle_report`` encodes each instance and offers the records to Delivery; nothing waits.

    An instance that cannot be encoded (a trace id that is not hex, a metric value that is no
    number in ``otlp_proto``) is skipped and counted in ``encode_errors``; the first one and then
    every hundredth is logged. A record whose topic format has no value still goes to Delivery,
    whose sender rejects it to the dead letter, so that it can be found and replayed.
    """

    def __init__(
        self,
        config: KafkaConfig,
        env: HandlerEnv,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(KafkaSender(config, env.logger), config.delivery, env)
        self.name = env.handler_name
        self._logger = env.logger
        self._topic = config.topic_format
        self._key = config.key_format
        self._encoder = make_encoder(config.encoding, now, config.redact)
        #: Instances skipped because they have no form in the configured encoding.
        self.encode_errors = 0

    @property
    def stats(self) -> DeliveryStats:
        return self.delivery_stats

    def encode(self, batch: ReportBatch) -> list[Record]:
        """The records for ``batch``, in order; instances that cannot be encoded are left out."""
        records: list[Record] = []
        for instance in batch.instances:
            try:
                payload = self._encoder.encode(instance)
            except EncodeError as exc:
                self.encode_errors += 1
                if self.encode_errors == 1 or self.encode_errors % 100 == 0:
                    self._logger.warning(
                        "%s: %s not sent (%d so far): %s", self.name, instance.name, self.encode_errors, exc
                    )
                continue
            key = self._key.render(instance) if self._key is not None else None
            records.append(
                Record(payload, self._topic.render(instance) or "", None if key is None else key.encode())
            )
        return records

    def encode_batch(self, batch: ReportBatch) -> list[Record]:
        return self.encode(batch)

    async def start_sender(self) -> None:
        self.sender.prepare()
