"""The elasticsearch handler: encodes report instances and hands them to the delivery helper."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from elasticsearch import AsyncElasticsearch

from adapters.elasticsearch._config import ElasticsearchConfig
from adapters.elasticsearch._encoding import DocumentEncoder
from adapters.elasticsearch._sender import BulkSender
from mixer import HandlerEnv, HandlerOverloaded, ReportBatch
from mixer.delivery import DeliveryReportHandler, Record

__all__ = ["ElasticsearchHandler"]


class ElasticsearchHandler(DeliveryReportHandler[BulkSender]):
    """Indexes logentry, metric and tracespan instances into Elasticsearch.

    ``handle_report`` encodes each instance into a document (see :class:`DocumentEncoder`) and
    offers the records to its :class:`~mixer.delivery.Delivery`, which queues, batches, retries
    and spools them and calls :class:`BulkSender` to send. Nothing touches the network before the
    first send or the background template install that :meth:`start` begins.
    """

    def __init__(
        self,
        config: ElasticsearchConfig,
        env: HandlerEnv,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        client_factory: Callable[[], AsyncElasticsearch] | None = None,
    ) -> None:
        super().__init__(
            BulkSender(config, env.logger, name=env.handler_name, client_factory=client_factory),
            config.delivery,
            env,
        )
        self.name = env.handler_name
        self.config = config
        self._logger = env.logger
        self._encoder = DocumentEncoder(config, now)
        self._started = False
        #: Instances of templates this adapter does not write, ignored.
        self.ignored = 0

    def handle_report(self, batch: ReportBatch) -> Awaitable[None] | None:
        # Refused before encoding, so that a batch arriving after shutdown is not counted in
        # ``ignored`` and is refused even when none of it would have been sent.
        if self._closed:
            raise HandlerOverloaded(f"{self.name} is shut down")
        return super().handle_report(batch)

    def encode_batch(self, batch: ReportBatch) -> list[Record]:
        records = []
        for instance in batch.instances:
            record = self._encoder.encode(instance)
            if record is None:
                self.ignored += 1
            else:
                records.append(record)
        return records

    async def start(self) -> None:
        if self._started or self._closed:
            return
        ca_file = self.config.tls.ca_file
        if ca_file is not None and not ca_file.is_file():
            raise FileNotFoundError(f"{self.name}: tls.ca_file {str(ca_file)!r} is not a file")
        if self.config.uses_tls and not self.config.tls.verify:
            self._logger.warning("%s: tls.verify is false: server certificates are not checked", self.name)
        self._started = True
        await super().start()

    async def start_sender(self) -> None:
        self.sender.start()
