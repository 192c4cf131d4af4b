"""The zipkin handler: encode tracespan instances, hand them to Delivery, POST them as v2 JSON."""

from __future__ import annotations

import asyncio
import gzip
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp

from adapters.zipkin._config import ZipkinConfig
from adapters.zipkin._encode import encode_instance, spans_body
from mixer.adapter import HandlerEnv
from mixer.delivery import DeliveryStats, PermanentError, Record, RetryableError, SendResult
from mixer.spans import SpanHandler
from mixer.templates import TraceSpanInstance

__all__ = ["RETRYABLE_STATUSES", "ZipkinHandler", "ZipkinSender", "ZipkinStats", "retry_after"]

#: Answers worth sending the same batch again for; every other 4xx is permanent.
RETRYABLE_STATUSES = frozenset({408, 429})
#: A Retry-After longer than this is cut to it, so a bad value cannot stall the handler.
MAX_RETRY_AFTER = 60.0
_REASON_CHARS = 300


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    delay = moment.timestamp() - (time.time() if now is None else now)
    return min(max(delay, 0.0), MAX_RETRY_AFTER)


def _ssl_context(config: ZipkinConfig) -> ssl.SSLContext | None:
    tls = config.tls
    if not config.url.startswith("https:"):
        return None
    context = ssl.create_default_context(cafile=tls.ca_file or None)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class ZipkinSender:
    """POSTs a batch of span records as one JSON array.

    2xx: sent. 408, 429, 5xx, connection errors and timeouts: retryable (a ``Retry-After`` is
    waited out before the next send). Any other status, 400 included: permanent, with the
    server's reason; Zipkin does not say which span of a batch it refused.
    """

    def __init__(
        self,
        config: ZipkinConfig,
        logger: logging.Logger,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._logger = logger
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._headers = {name: value.get_secret_value() for name, value in config.headers.items()}
        self._headers["Content-Type"] = "application/json"
        if config.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._resume_at = float("-inf")

    def open(self) -> None:
        """Create the HTTP session (it connects on first use). Reads the TLS files; errors fail the start.

        :raises OSError, ssl.SSLError: a TLS file cannot be read or used.
        """
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(ssl=_ssl_context(self._config) or False)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._config.timeout.total_seconds()),
            # The collector's address is configured; proxies from the environment would redirect it.
            trust_env=False,
        )

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        wait = self._resume_at - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._session is None:
            self.open()
        assert self._session is not None
        body = spans_body(batch)
        if self._config.compression == "gzip":
            body = gzip.compress(body, compresslevel=5)
        try:
            async with self._session.post(self._config.url, data=body, headers=self._headers) as response:
                status = response.status
                if 200 <= status < 300:
                    return None
                reason = (await response.text(errors="replace")).strip()[:_REASON_CHARS]
                delay = retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RetryableError(f"POST {self._config.url} failed: {type(exc).__name__}: {exc}") from None
        message = f"Zipkin answered {status}: {reason or '(no body)'}"
        if status in RETRYABLE_STATUSES or status >= 500:
            if delay is not None:
                self._resume_at = self._clock() + delay
            raise RetryableError(message)
        raise PermanentError(message)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


@dataclass(frozen=True, slots=True)
class ZipkinStats:
    """``invalid_spans``: instances that could not become spans (bad ids or times), never sent."""

    delivery: DeliveryStats
    invalid_spans: int


class ZipkinHandler(SpanHandler[ZipkinSender]):
    """Sends tracespan instances to Zipkin; see the package README for the mapping."""

    def __init__(self, config: ZipkinConfig, env: HandlerEnv) -> None:
        super().__init__(ZipkinSender(config, env.logger), config.delivery, env)
        self.config = config

    def encode_span(self, instance: TraceSpanInstance) -> Record:
        return encode_instance(instance)

    @property
    def stats(self) -> ZipkinStats:
        return ZipkinStats(self.delivery_stats, self.invalid_spans)
