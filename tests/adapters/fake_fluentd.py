"""A FAKE fluentd forward input (no fluentd runs here): the Forward protocol over TCP, msgpack.

It accepts the three event modes (Message ``[tag, time, record, option?]``, Forward ``[tag,
[[time, record], ...], option?]`` and PackedForward ``[tag, <bin of packed entries>, option?]``)
and answers ``{"ack": <chunk>}`` when the option carries a ``chunk``, as fluentd's in_forward
does. ``ack=False`` reproduces a server that never acknowledges.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import msgpack

__all__ = ["FakeFluentd", "ForwardEvent"]


@dataclass(frozen=True)
class ForwardEvent:
    tag: str
    time: int
    record: dict[str, Any]
    chunk: str | None


class FakeFluentd:
    def __init__(self, *, ack: bool = True, port: int = 0) -> None:
        self.ack = ack
        self.port = port
        self.events: list[ForwardEvent] = []
        self.chunks: list[str] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 * 1024 * 1024)
        try:
            while data := await reader.read(65536):
                unpacker.feed(data)
                for message in unpacker:
                    chunk = self._accept(message)
                    if chunk is not None and self.ack:
                        writer.write(msgpack.packb({"ack": chunk}))
                        await writer.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _accept(self, message: Any) -> str | None:
        tag, second = message[0], message[1]
        rest = message[2:]
        if isinstance(second, bytes):  # PackedForward
            option = rest[0] if rest else {}
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(second)
            entries = list(unpacker)
        elif isinstance(second, list):  # Forward
            option = rest[0] if rest else {}
            entries = second
        else:  # Message
            option = rest[1] if len(rest) > 1 else {}
            entries = [[second, rest[0]]]
        chunk = option.get("chunk") if isinstance(option, dict) else None
        if chunk is not None:
            self.chunks.append(chunk)
        for time, record in entries:
            self.events.append(ForwardEvent(tag, int(time), record, chunk))
        return chunk
