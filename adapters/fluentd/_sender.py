"""Sending batches over fluentd's Forward protocol (PackedForward mode, chunk acks)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import Sequence

import msgpack

from mixer.delivery import Record, RetryableError, SendResult

__all__ = ["ForwardSender"]

#: An ack is a small map; anything bigger is not fluentd.
_MAX_ACK_BYTES = 4096


class ForwardSender:
    """One TCP connection, used by one send at a time; reconnects after any failure.

    Each tag of a batch goes out as ``[tag, <packed entries>, {"size": n, "chunk": id}]`` and,
    with acks on, is sent only once fluentd answers ``{"ack": id}``. A failure or a missing ack
    is retryable: Delivery retries, then spools. fluentd may then receive a chunk twice (the
    protocol's at-least-once).
    """

    def __init__(self, host: str, port: int, require_ack: bool, logger: logging.Logger) -> None:
        self.host = host
        self.port = port
        self.require_ack = require_ack
        self._logger = logger
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.chunks_sent = 0

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        by_tag: dict[str, list[bytes]] = {}
        for record in batch:
            by_tag.setdefault(record.route, []).append(record.payload)
        async with self._lock:
            try:
                for tag, payloads in by_tag.items():
                    await self._send_chunk(tag, payloads)
            except (OSError, EOFError, ValueError, asyncio.IncompleteReadError) as exc:
                await self._disconnect()
                raise RetryableError(f"fluentd {self.host}:{self.port}: {exc!r}") from exc
            except BaseException:
                # A cancelled send (the delivery timeout) leaves the stream mid-message.
                await self._disconnect()
                raise
        return None

    async def _send_chunk(self, tag: str, payloads: list[bytes]) -> None:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        chunk = base64.b64encode(os.urandom(16)).decode("ascii")
        option: dict[str, object] = {"size": len(payloads)}
        if self.require_ack:
            option["chunk"] = chunk
        message = msgpack.packb([tag, b"".join(payloads), option], use_bin_type=True)
        self._writer.write(message)
        await self._writer.drain()
        if self.require_ack:
            await self._await_ack(chunk)
        self.chunks_sent += 1

    async def _await_ack(self, chunk: str) -> None:
        assert self._reader is not None
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=_MAX_ACK_BYTES)
        while True:
            data = await self._reader.read(_MAX_ACK_BYTES)
            if not data:
                raise EOFError("fluentd closed the connection before acknowledging")
            unpacker.feed(data)
            for answer in unpacker:
                if isinstance(answer, dict) and answer.get("ack") == chunk:
                    return
                raise ValueError(f"unexpected answer to chunk {chunk}: {str(answer)[:100]}")

    async def _disconnect(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        await self._disconnect()
