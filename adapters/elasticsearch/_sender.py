"""The ``_bulk`` sender: chunks a delivery batch, sends it, classifies every item's outcome.

Also owns the client (created on first use, so that building and starting a handler touch no
network) and the index template, installed before the first document is sent.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from elastic_transport import TransportError
from elasticsearch import ApiError, AsyncElasticsearch
from elasticsearch.serializer import (
    CompatibilityModeJsonSerializer,
    CompatibilityModeNdjsonSerializer,
    JsonSerializer,
    NdjsonSerializer,
)

from adapters.elasticsearch._config import ElasticsearchConfig
from mixer.delivery import Backoff, PermanentError, Record, RetryableError, SendResult

__all__ = ["BulkSender", "TemplateState", "describe_error"]


class _OrjsonAnswers(JsonSerializer):
    """Decodes answers with orjson (a bulk answer holds a status per document); encodes requests
    as the client's own serializer does."""

    def json_loads(self, data: bytes) -> Any:
        return orjson.loads(data)


class _OrjsonCompatibleAnswers(CompatibilityModeJsonSerializer):
    """The same for ``application/vnd.elasticsearch+json``, what Elasticsearch 8 answers."""

    def json_loads(self, data: bytes) -> Any:
        return orjson.loads(data)


class _JoinedBodies(NdjsonSerializer):
    """Sends a ``_bulk`` body we joined as it is. The client's own serializer copies every body
    twice (into a bytearray, then into bytes): 2 % of a fan-out record's CPU."""

    def dumps(self, data: Any) -> bytes:
        if type(data) is bytes and data.endswith(b"\n"):
            return data
        return super().dumps(data)


class _CompatibleJoinedBodies(_JoinedBodies, CompatibilityModeNdjsonSerializer):
    """The same for ``application/vnd.elasticsearch+x-ndjson``, what the client sends to
    Elasticsearch 8."""

    mimetype = CompatibilityModeNdjsonSerializer.mimetype


_SERIALIZERS = {
    _OrjsonAnswers.mimetype: _OrjsonAnswers(),
    _OrjsonCompatibleAnswers.mimetype: _OrjsonCompatibleAnswers(),
    _JoinedBodies.mimetype: _JoinedBodies(),
    _CompatibleJoinedBodies.mimetype: _CompatibleJoinedBodies(),
}

#: Only these fields of a bulk answer are read; the rest is not even sent back.
BULK_FILTER_PATH = "errors,items.*.status,items.*.error"
#: Between attempts of the background template install.
TEMPLATE_RETRY_INITIAL = 0.5
TEMPLATE_RETRY_MAX = 30.0
#: An authentication or authorization failure is logged at most this often (seconds).
AUTH_LOG_INTERVAL = 60.0
#: Action lines are cached per target; one per day per handler in the usual config.
_ACTION_CACHE_MAX = 256


def describe_error(status: int, error: Any) -> str:
    """``429 es_rejected_execution_exception: rejected ...`` from an Elasticsearch error object."""
    if not isinstance(error, dict):
        return f"{status} {error}" if error else str(status)
    text = f"{status} {error.get('type', 'error')}: {error.get('reason', '')}".rstrip(": ")
    caused_by = error.get("caused_by")
    if isinstance(caused_by, dict) and caused_by.get("reason"):
        text += f" (caused by {caused_by.get('type', 'error')}: {caused_by['reason']})"
    return text


def _api_error_text(exc: ApiError) -> str:
    body = exc.body
    if isinstance(body, dict) and "error" in body:
        return describe_error(exc.meta.status, body["error"])
    return f"{exc.meta.status} {exc.message}"


def _is_media_type_error(exc: ApiError) -> bool:
    body = exc.body
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and error.get("type") == "media_type_header_exception"


def _make_client(config: ElasticsearchConfig) -> AsyncElasticsearch:
    """The client for ``config``'s hosts, credentials and TLS settings."""
    kwargs: dict[str, Any] = {
        "request_timeout": config.request_timeout.total_seconds(),
        # Delivery retries with backoff; the client only fails over to another node at once.
        "max_retries": len(config.hosts) - 1,
        "retry_on_status": (),
        "retry_on_timeout": False,
    }
    if config.username is not None and config.password is not None:
        kwargs["basic_auth"] = (config.username, config.password.get_secret_value())
    if config.api_key is not None:
        kwargs["api_key"] = config.api_key.get_secret_value()
    if config.uses_tls:
        kwargs["verify_certs"] = config.tls.verify
        if config.tls.ca_file is not None:
            kwargs["ca_certs"] = str(config.tls.ca_file)
        if not config.tls.verify:
            # The handler logs this once at start; the client would warn on every request.
            kwargs["ssl_show_warn"] = False
    return AsyncElasticsearch(list(config.hosts), serializers=_SERIALIZERS, **kwargs)


@dataclass(slots=True)
class _Chunk:
    """Consecutive records of a batch that go in one ``_bulk`` request."""

    indices: list[int] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    size: int = 0

    def add(self, index: int, line: bytes) -> None:
        self.indices.append(index)
        self.lines.append(line)
        self.size += len(line)

    def halves(self) -> tuple[_Chunk, _Chunk]:
        middle = len(self.indices) // 2
        first, second = _Chunk(), _Chunk()
        for i, (index, line) in enumerate(zip(self.indices, self.lines, strict=True)):
            (first if i < middle else second).add(index, line)
        return first, second


class TemplateState(enum.StrEnum):
    """Where the index template install stands."""

    PENDING = "pending"
    INSTALLED = "installed"
    GIVEN_UP = "given_up"
    NOT_WANTED = "not_wanted"


class BulkSender:
    """The :class:`~mixer.delivery.BatchSender` of the elasticsearch adapter.

    ``send`` cuts the batch into ``_bulk`` requests of at most ``bulk_max_records`` documents and
    ``bulk_max_bytes`` of body, sent one after another. Per item: 429 and 5xx are retried, any
    other failure is rejected with Elasticsearch's error type and reason (dead letter). Whole
    requests: a 400 (a malformed body) rejects the request's items, a 413 splits the request in
    two (a lone document is rejected), every other status, connection error and timeout is
    retryable, authentication and authorization failures (401, 403) included: credentials are
    fixed by a config reload, and records kept until then are not lost. When the first request
    fails as a whole, the error is raised for the batch; when a later one does, the earlier
    results stand and the rest of the batch is returned for retry.

    Before its first document the sender installs the index template (when configured): data
    streams cannot be created without one. :meth:`start` also tries in the background, retrying
    with backoff. A template refused with 400 or 403 (bad body, a user without the
    ``manage_index_templates`` privilege) is logged and given up on; documents are sent anyway.
    """

    def __init__(
        self,
        config: ElasticsearchConfig,
        logger: logging.Logger,
        *,
        name: str,
        client_factory: Callable[[], AsyncElasticsearch] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._config = config
        self._logger = logger
        self._client_factory = client_factory or functools.partial(_make_client, config)
        self._clock = clock
        self._client: AsyncElasticsearch | None = None
        self._op = b"create" if config.data_stream is not None else b"index"
        self._actions: dict[str, bytes] = {}
        self._template_lock = asyncio.Lock()
        self._template_task: asyncio.Task[None] | None = None
        self.template_state = (
            TemplateState.PENDING if config.index_template.install else TemplateState.NOT_WANTED
        )
        self._last_auth_log = -AUTH_LOG_INTERVAL
        self._closed = False
        #: ``_bulk`` requests sent (answered or not).
        self.requests = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Begin installing the index template in the background; returns at once."""
        if self.template_state == TemplateState.PENDING and self._template_task is None and not self._closed:
            self._template_task = asyncio.get_running_loop().create_task(
                self._install_template_forever(), name=f"{self.name} index template"
            )

    async def close(self) -> None:
        """Stop the template install and close the client's connections. Idempotent."""
        self._closed = True
        task, self._template_task = self._template_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _get_client(self) -> AsyncElasticsearch:
        if self._closed:
            raise RetryableError(f"{self.name} is shut down")
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    # -- index template --------------------------------------------------------------------

    async def _install_template_forever(self) -> None:
        backoff = Backoff(TEMPLATE_RETRY_INITIAL, TEMPLATE_RETRY_MAX, multiplier=2.0, jitter=0.2)
        while self._template_pending():
            try:
                await self.install_template()
            except Exception as exc:  # anything unexpected is retried too, never left in a dead task
                delay = backoff.next()
                self._logger.warning(
                    "%s: index template %r not installed yet, retrying in %.1fs: %s",
                    self.name,
                    self._config.template_name,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)

    def _template_pending(self) -> bool:
        return self.template_state is TemplateState.PENDING

    async def install_template(self) -> None:
        """Install the index template unless that was done or given up on.

        :raises RetryableError: Elasticsearch could not be reached or answered with a status
            worth retrying.
        """
        if not self._template_pending():
            return
        async with self._template_lock:
            # Another send may have installed it while this one waited for the lock.
            if not self._template_pending():
                return
            client = self._get_client()
            request = self._config.template_request()
            name = self._config.template_name
            try:
                await client.indices.put_index_template(
                    name=name,
                    index_patterns=request["index_patterns"],
                    priority=request["priority"],
                    template=request["template"],
                    data_stream=request.get("data_stream"),
                    meta=request["_meta"],
                )
            except ApiError as exc:
                if exc.meta.status in {400, 403}:
                    self.template_state = TemplateState.GIVEN_UP
                    self._logger.error(
                        "%s: index template %r refused, not retried (documents are sent without it; "
                        "set index_template.install: false when templates are managed elsewhere): %s",
                        self.name,
                        name,
                        _api_error_text(exc),
                    )
                    return
                if exc.meta.status == 401:
                    self._log_auth_failure(_api_error_text(exc))
                raise RetryableError(_api_error_text(exc)) from exc
            except TransportError as exc:
                raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
            self.template_state = TemplateState.INSTALLED
            self._logger.info(
                "%s: index template %r installed for %s", self.name, name, request["index_patterns"]
            )

    # -- sending ---------------------------------------------------------------------------

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        if not batch:
            return None
        client = self._get_client()
        try:
            await self.install_template()
        except RetryableError as exc:
            raise RetryableError(f"index template not installed yet: {exc}") from exc
        chunks = self._chunks(batch)
        retry: list[int] = []
        rejected: list[tuple[int, str]] = []
        for n, chunk in enumerate(chunks):
            try:
                await self._send_chunk(client, chunk, retry, rejected)
            except RetryableError:
                if n == 0:
                    raise
                # Earlier requests of the batch were answered: keep their results, retry the rest.
                retry.extend(index for later in chunks[n:] for index in later.indices)
                break
            except PermanentError as exc:
                if len(chunks) == 1:
                    raise
                rejected.extend((index, str(exc)) for index in chunk.indices)
        if not retry and not rejected:
            return None
        return SendResult(retry=tuple(retry), rejected=tuple(rejected))

    def _action(self, route: str) -> bytes:
        action = self._actions.get(route)
        if action is None:
            if len(self._actions) >= _ACTION_CACHE_MAX:
                self._actions.clear()
            action = b'{"' + self._op + b'":{"_index":' + json.dumps(route).encode() + b"}}\n"
            self._actions[route] = action
        return action

    def _chunks(self, batch: Sequence[Record]) -> list[_Chunk]:
        max_records = self._config.bulk_max_records
        max_bytes = self._config.bulk_max_bytes
        chunks: list[_Chunk] = []
        current = _Chunk()
        for index, record in enumerate(batch):
            line = self._action(record.route) + record.payload + b"\n"
            if current.indices and (
                len(current.indices) >= max_records or current.size + len(line) > max_bytes
            ):
                chunks.append(current)
                current = _Chunk()
            current.add(index, line)
        if current.indices:
            chunks.append(current)
        return chunks

    async def _send_chunk(
        self,
        client: AsyncElasticsearch,
        chunk: _Chunk,
        retry: list[int],
        rejected: list[tuple[int, str]],
    ) -> None:
        """Send one request and add its items' outcomes to ``retry`` and ``rejected``.

        :raises RetryableError: the request failed as a whole and may succeed later.
        :raises PermanentError: the request was refused as a whole (400).
        """
        # The client passes bytes through as the NDJSON body; its annotation lists only dicts.
        body: Any = b"".join(chunk.lines)
        self.requests += 1
        try:
            response = await client.bulk(
                operations=body, filter_path=BULK_FILTER_PATH, pipeline=self._config.pipeline
            )
        except ApiError as exc:
            status = exc.meta.status
            text = _api_error_text(exc)
            if status == 413:
                await self._split(client, chunk, retry, rejected, text)
                return
            if status == 400 and not _is_media_type_error(exc):
                raise PermanentError(text) from exc
            if status in {401, 403}:
                self._log_auth_failure(text)
            raise RetryableError(text) from exc
        except TransportError as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
        self._read_items(response.body, chunk, retry, rejected)

    async def _split(
        self,
        client: AsyncElasticsearch,
        chunk: _Chunk,
        retry: list[int],
        rejected: list[tuple[int, str]],
        reason: str,
    ) -> None:
        # The server takes smaller bodies than bulk_max_bytes: halve until it accepts them.
        if len(chunk.indices) == 1:
            rejected.append((chunk.indices[0], f"{reason} (one document larger than the server accepts)"))
            return
        first, second = chunk.halves()
        await self._send_chunk(client, first, retry, rejected)
        try:
            await self._send_chunk(client, second, retry, rejected)
        except RetryableError:
            retry.extend(second.indices)
        except PermanentError as exc:
            rejected.extend((index, str(exc)) for index in second.indices)

    def _read_items(
        self, body: Any, chunk: _Chunk, retry: list[int], rejected: list[tuple[int, str]]
    ) -> None:
        if not isinstance(body, dict):
            raise RetryableError(f"unexpected bulk answer: {body!r:.200}")
        if body.get("errors") is False:
            return
        items = body.get("items")
        if not isinstance(items, list):
            raise RetryableError(f"bulk answer without items: {body!r:.200}")
        for position, index in enumerate(chunk.indices):
            if position >= len(items):
                # Elasticsearch answers every item; a short answer is treated as not answered.
                retry.append(index)
                continue
            item = items[position]
            result = next(iter(item.values()), None) if isinstance(item, dict) else None
            status = result.get("status") if isinstance(result, dict) else None
            if not isinstance(status, int) or not isinstance(result, dict):
                retry.append(index)
            elif status < 300:
                continue
            elif status == 429 or status >= 500:
                retry.append(index)
            else:
                rejected.append((index, describe_error(status, result.get("error"))))

    def _log_auth_failure(self, text: str) -> None:
        now = self._clock()
        if now - self._last_auth_log >= AUTH_LOG_INTERVAL:
            self._last_auth_log = now
            self._logger.error(
                "%s: Elasticsearch refused the credentials (%s); records are retried and spooled "
                "until the config is fixed",
                self.name,
                text,
            )
