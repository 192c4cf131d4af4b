"""The fluentd handler: logentry instances encoded as events and handed to the delivery helper."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from adapters.fluentd._config import FluentdConfig
from adapters.fluentd._encoding import encode_entry
from adapters.fluentd._sender import ForwardSender
from mixer import HandlerEnv, HandlerOverloaded, ReportBatch
from mixer.delivery import DeliveryReportHandler, Record

__all__ = ["FluentdHandler"]


class FluentdHandler(DeliveryReportHandler[ForwardSender]):
    def __init__(
        self,
        config: FluentdConfig,
        env: HandlerEnv,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        host, port = config.host_port()
        super().__init__(
            ForwardSender(host, port, config.require_ack, env.logger), config.effective_delivery(), env
        )
        self.name = env.handler_name
        self.config = config
        self._now = now
        #: Instances of templates other than logentry, ignored.
        self.ignored = 0

    def handle_report(self, batch: ReportBatch) -> None:
        if self._closed:
            raise HandlerOverloaded(f"{self.name} is shut down")
        super().handle_report(batch)

    def encode_batch(self, batch: ReportBatch) -> list[Record]:
        records = []
        for instance in batch.instances:
            record = encode_entry(instance, self.config.integer_duration, self._now)
            if record is None:
                self.ignored += 1
            else:
                records.append(record)
        return records
