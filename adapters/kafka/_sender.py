"""The kafka adapter's :class:`~mixer.delivery.BatchSender`: one produce attempt per record per send.

Retrying is Delivery's job, so the sender makes exactly one attempt and reports per record what
happened. It therefore talks to the brokers through aiokafka's client (metadata, connections,
SASL, TLS) and builds its own produce requests, instead of going through ``AIOKafkaProducer``,
whose accumulator would keep retrying on its own, behind Delivery's back and past its deadline.

Metadata is refreshed before producing whenever the last send saw a failure, so that the first
request a restarted broker sees for a topic is a metadata request (which creates the topic where
auto-create is on), never a produce request carrying a stale partition map. The client is created
on the first send and dropped when metadata cannot be had, so that the next send bootstraps again
from the configured brokers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaClient
from aiokafka import errors as kafka_errors
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition

from adapters.kafka._config import Compression, KafkaConfig, is_valid_topic
from adapters.kafka._hashing import KeyHashes
from mixer.delivery import PermanentError, Record, RetryableError, SendResult

__all__ = ["NO_TOPIC_REASON", "PERMANENT_ITEM_ERRORS", "KafkaSender", "is_permanent"]

#: Why a record whose topic format had no value is rejected.
NO_TOPIC_REASON = "no topic: a placeholder of the topic format had no value and no fallback"

#: Errors about one record that no retry can fix: it goes to the dead letter.
PERMANENT_ITEM_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.CorruptRecordException,
    kafka_errors.InvalidTimestampError,
    kafka_errors.PolicyViolationError,
    kafka_errors.UnsupportedForMessageFormatError,
)
#: Errors that fail every record the same way (credentials, permissions): the whole batch is rejected.
_PERMANENT_BATCH_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.UnsupportedSaslMechanismError,
    kafka_errors.ClusterAuthorizationFailedError,
)
_CODECS = {
    Compression.NONE: DefaultRecordBatch.CODEC_NONE,
    Compression.GZIP: DefaultRecordBatch.CODEC_GZIP,
    Compression.SNAPPY: DefaultRecordBatch.CODEC_SNAPPY,
    Compression.LZ4: DefaultRecordBatch.CODEC_LZ4,
    Compression.ZSTD: DefaultRecordBatch.CODEC_ZSTD,
}


def is_permanent(exc: BaseException) -> bool:
    """Whether ``exc`` about one record means it will never be accepted.

    Everything not known to be permanent is retried: a broker restarting, a leader moving, a
    timeout, an error this module has never seen. Retries end in the spool, not in a loss.
    """
    return isinstance(exc, PERMANENT_ITEM_ERRORS + _PERMANENT_BATCH_ERRORS)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    if not text or text == name:
        return name
    # aiokafka's messages often start with "[Error N] Name: ..." already.
    return text if name in text else f"{name}: {text}"


@dataclass(slots=True)
class _PartitionBatch:
    tp: TopicPartition
    data: bytes
    indices: list[int]


@dataclass(slots=True)
class _Outcome:
    """What became of each record of one send; indices are positions in the batch."""

    rejected: dict[int, str] = field(default_factory=dict)
    failures: dict[int, BaseException] = field(default_factory=dict)

    def fail(self, indices: Sequence[int], exc: BaseException) -> None:
        for index in indices:
            self.failures[index] = exc


class KafkaSender:
    """Sends a batch as produce requests, one record batch per partition, and reads every answer.

    Per record: an invalid or missing topic, or a record larger than ``max_request_size``, is
    rejected; so is a record the broker refuses for good (too large, not authorised). A record
    whose partition failed for a reason that may pass (leader moved, timeout, broker gone) is
    asked to be retried. When nothing was accepted and everything may be retried, the whole batch
    fails with :class:`RetryableError`; credentials the broker refuses fail it with
    :class:`PermanentError`.
    """

    def __init__(self, config: KafkaConfig, logger: logging.Logger) -> None:
        self._config = config
        self._logger = logger
        self._ssl: ssl.SSLContext | None = None
        self._client: Any = None
        self._connect_lock: asyncio.Lock | None = None
        self._stale = True
        self._closed = False
        self._codec = _CODECS[config.compression]
        self._acks = -1 if config.acks == "all" else config.acks
        self._timeout_ms = int(config.request_timeout.total_seconds() * 1000)
        self._key_hashes = KeyHashes()
        #: Clients bootstrapped so far (the first and every one after metadata was lost).
        self.connects = 0

    def prepare(self) -> None:
        """Read the TLS files, so that a wrong path fails the start rather than every send.

        :raises ValueError: a TLS file cannot be read or holds no valid PEM.
        """
        tls = self._config.tls
        if not tls.enabled:
            return
        try:
            context = create_ssl_context(cafile=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"TLS files for Kafka cannot be used: {exc}") from exc
        if tls.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._ssl = context

    def _new_client(self) -> Any:
        config = self._config
        tls, sasl = config.tls, config.sasl
        if sasl is not None:
            protocol = "SASL_SSL" if tls.enabled else "SASL_PLAINTEXT"
        else:
            protocol = "SSL" if tls.enabled else "PLAINTEXT"
        if tls.enabled and self._ssl is None:
            self.prepare()
        options: dict[str, Any] = {}
        if sasl is not None:
            options = {
                "sasl_mechanism": sasl.mechanism.value,
                "sasl_plain_username": sasl.username,
                "sasl_plain_password": sasl.password.get_secret_value(),
            }
        return AIOKafkaClient(
            bootstrap_servers=list(config.brokers),
            client_id=config.client_id,
            request_timeout_ms=self._timeout_ms,
            security_protocol=protocol,
            ssl_context=self._ssl,
            **options,
        )

    async def _ready_client(self) -> Any:
        if self._closed:
            raise RetryableError("the Kafka sender is closed")
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._client is not None:
                return self._client
            client = self._new_client()
            self.connects += 1
            try:
                await client.bootstrap()
            except BaseException as exc:
                await _close_quietly(client)
                if isinstance(exc, _PERMANENT_BATCH_ERRORS):
                    raise PermanentError(f"Kafka refused the connection: {_describe(exc)}") from exc
                if isinstance(exc, Exception):
                    brokers = ", ".join(self._config.brokers)
                    raise RetryableError(f"cannot reach Kafka at {brokers}: {_describe(exc)}") from exc
                raise
            self._client = client
            self._stale = True
            return client

    async def _drop_client(self, client: Any) -> None:
        if self._client is client:
            self._client = None
        await _close_quietly(client)

    async def _refresh_metadata(self, client: Any, topics: set[str]) -> None:
        """Make sure metadata covers ``topics`` and is fresh when the last send failed.

        :raises RetryableError: no broker answered; the client is dropped so that the next send
            bootstraps again (broker addresses may have changed meanwhile).
        """
        unknown = [topic for topic in topics if client.cluster.partitions_for_topic(topic) is None]
        if not self._stale and not unknown:
            return
        for topic in unknown:
            client.add_topic(topic)
        if not await client.force_metadata_update():
            self._stale = True
            await self._drop_client(client)
            raise RetryableError("no Kafka broker answered a metadata request")
        self._stale = False

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        outcome = _Outcome()
        pending: list[int] = []
        for index, record in enumerate(batch):
            if not record.route:
                outcome.rejected[index] = NO_TOPIC_REASON
            elif not is_valid_topic(record.route):
                outcome.rejected[index] = f"invalid Kafka topic name {record.route!r}"
            elif (size := _record_size(record)) > (limit := self._config.max_request_size):
                outcome.rejected[index] = f"record of {size} bytes is larger than max_request_size ({limit})"
            else:
                pending.append(index)
        if pending:
            client = await self._ready_client()
            await self._refresh_metadata(client, {batch[i].route for i in pending})
            requests = self._plan(client, batch, pending, outcome)
            await asyncio.gather(
                *(self._send_node(client, node, reqs, outcome) for node, reqs in requests.items())
            )
        return self._result(batch, outcome)

    def _plan(
        self, client: Any, batch: Sequence[Record], pending: list[int], outcome: _Outcome
    ) -> dict[int, list[list[_PartitionBatch]]]:
        """Records by leader node, as produce requests of record batches (one per partition each)."""
        cluster = client.cluster
        by_partition: dict[TopicPartition, list[int]] = defaultdict(list)
        sticky: dict[str, int] = {}
        # One sorted partition list per topic and send, not per record.
        topic_partitions: dict[str, list[int]] = {}
        key_hash = self._key_hashes
        for index in pending:
            record = batch[index]
            partitions = topic_partitions.get(record.route)
            if partitions is None:
                partitions = topic_partitions[record.route] = sorted(
                    cluster.partitions_for_topic(record.route) or ()
                )
            if not partitions:
                if record.route in cluster.unauthorized_topics:
                    outcome.rejected[index] = f"not authorised to write to topic {record.route!r}"
                else:
                    outcome.failures[index] = kafka_errors.UnknownTopicOrPartitionError(record.route)
                continue
            if record.key is not None:
                partition = partitions[key_hash(record.key) % len(partitions)]
            else:
                # Key-less records of one send share a partition, so they travel as one batch.
                if record.route not in sticky:
                    available = sorted(cluster.available_partitions_for_topic(record.route) or partitions)
                    sticky[record.route] = random.choice(available)
                partition = sticky[record.route]
            by_partition[TopicPartition(record.route, partition)].append(index)

        per_node: dict[int, list[_PartitionBatch]] = defaultdict(list)
        for tp, indices in by_partition.items():
            leader = cluster.leader_for_partition(tp)
            if leader is None or leader < 0:
                self._stale = True
                outcome.fail(indices, kafka_errors.LeaderNotAvailableError(str(tp)))
                continue
            per_node[leader].extend(self._record_batches(tp, batch, indices))
        return {node: self._requests(batches) for node, batches in per_node.items()}

    def _record_batches(
        self, tp: TopicPartition, batch: Sequence[Record], indices: list[int]
    ) -> list[_PartitionBatch]:
        out: list[_PartitionBatch] = []
        start = 0
        while start < len(indices):
            builder = DefaultRecordBatchBuilder(
                magic=2,
                compression_type=self._codec,
                is_transactional=0,
                producer_id=-1,
                producer_epoch=-1,
                base_sequence=-1,
                batch_size=self._config.max_batch_size,
            )
            taken: list[int] = []
            for index in indices[start:]:
                record = batch[index]
                # The builder refuses a record past batch_size, except into an empty batch.
                if (
                    builder.append(
                        len(taken), timestamp=None, key=record.key, value=record.payload, headers=[]
                    )
                    is None
                ):
                    break
                taken.append(index)
            out.append(_PartitionBatch(tp, bytes(builder.build()), taken))
            start += len(taken)
        return out

    def _requests(self, batches: list[_PartitionBatch]) -> list[list[_PartitionBatch]]:
        # A request holds one record batch per partition and stays under max_request_size
        # (a single batch may reach it alone).
        requests: list[list[_PartitionBatch]] = []
        for item in batches:
            for request in requests:
                fits = sum(len(b.data) for b in request) + len(item.data) <= self._config.max_request_size
                if fits and all(b.tp != item.tp for b in request):
                    request.append(item)
                    break
            else:
                requests.append([item])
        return requests

    async def _send_node(
        self, client: Any, node: int, requests: list[list[_PartitionBatch]], outcome: _Outcome
    ) -> None:
        # One request at a time per broker, so a partition's batches are written in order.
        for request in requests:
            topics: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
            for item in request:
                topics[item.tp.topic].append((item.tp.partition, item.data))
            produce = ProduceRequest(
                transactional_id=None,
                required_acks=self._acks,
                timeout=self._timeout_ms,
                topics=list(topics.items()),
            )
            try:
                response = await client.send(node, produce)
            except (kafka_errors.KafkaError, OSError, TimeoutError) as exc:
                self._stale = True
                for item in request:
                    outcome.fail(item.indices, exc)
                continue
            if response is None:  # acks=0: the broker does not answer
                continue
            by_tp = {item.tp: item for item in request}
            for topic, partitions in response.topics:
                for partition_info in partitions:
                    answered = by_tp.get(TopicPartition(topic, partition_info[0]))
                    error_type = kafka_errors.for_code(partition_info[1])
                    if answered is None or error_type is kafka_errors.NoError:
                        continue
                    error = error_type()
                    if not is_permanent(error):
                        self._stale = True
                    outcome.fail(answered.indices, error)

    def _result(self, batch: Sequence[Record], outcome: _Outcome) -> SendResult | None:
        rejected = dict(outcome.rejected)
        batch_error = next(
            (e for e in outcome.failures.values() if isinstance(e, _PERMANENT_BATCH_ERRORS)), None
        )
        if batch_error is not None:
            raise PermanentError(f"Kafka refused the batch: {_describe(batch_error)}") from batch_error
        retry: list[int] = []
        for index, failure in outcome.failures.items():
            if is_permanent(failure):
                rejected[index] = _describe(failure)
            else:
                retry.append(index)
        if not retry and not rejected:
            return None
        if len(retry) == len(batch):
            first = outcome.failures[retry[0]]
            raise RetryableError(
                f"Kafka accepted none of {len(batch)} records: {_describe(first)}"
            ) from first
        return SendResult(retry=tuple(sorted(retry)), rejected=tuple(sorted(rejected.items())))

    async def close(self) -> None:
        """Disconnect. Idempotent; nothing is buffered here, so there is nothing to flush."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await _close_quietly(client)


def _record_size(record: Record) -> int:
    """Bytes the record takes in a batch of its own: what ``max_request_size`` is checked against."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.payload, []))


async def _close_quietly(client: Any) -> None:
    # It is being discarded: how its shutdown went changes nothing for the records.
    with contextlib.suppress(Exception):
        await client.close()
