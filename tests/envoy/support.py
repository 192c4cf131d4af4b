"""Golden files, the docs' configurations, and the Envoy servicers served in process."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from prometheus_client import generate_latest

from mixer.api import Admission, ServiceLimits
from mixer.config import ValidatedConfig, load_config_text
from mixer.registry import Registry
from mixer.runtime import Runtime, build_runtime
from mixer.server import ConfigInfo, RuntimeHolder, ServerMetrics
from plugins.manager import create_plugin_manager
from tests.server.support import free_port, metric_value

GOLDEN = Path(__file__).parent / "golden"
DOC = Path(__file__).resolve().parents[2] / "docs" / "envoy.md"

_BLOCK = re.compile(r"^<!-- (?P<marker>[^\n]*) -->\n```yaml\n(?P<body>.*?)^```", re.DOTALL | re.MULTILINE)
_ANY_BLOCK = re.compile(r"^```yaml\n", re.MULTILINE)


def prometheus_on_a_free_port() -> dict[str, str]:
    """Config environment for the embedded default: its Prometheus handler would otherwise
    listen on a fixed port that another test or server may hold."""
    return {"MIXER_PROMETHEUS_LISTEN": f"127.0.0.1:{free_port()}"}


def golden_bytes(name: str) -> bytes:
    return (GOLDEN / f"{name}.bin").read_bytes()


def golden_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text("utf-8"))
    return data


def as_json(message: Message) -> dict[str, Any]:
    """A message in the golden files' JSON form (proto field names, defaults left out)."""
    data: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return data


@dataclass(frozen=True)
class DocBlock:
    line: int
    marker: str
    text: str


def doc_blocks() -> list[DocBlock]:
    """Every ```yaml block of docs/envoy.md with the marker comment right above it."""
    source = DOC.read_text("utf-8")
    blocks = [
        DocBlock(source.count("\n", 0, m.start("body")), m.group("marker").strip(), m.group("body"))
        for m in _BLOCK.finditer(source)
    ]
    assert len(blocks) == len(_ANY_BLOCK.findall(source)), "every yaml block in docs/envoy.md needs a marker"
    return blocks


def doc_config(marker: str) -> str:
    (block,) = [b for b in doc_blocks() if b.marker == f"config: {marker}"]
    return block.text


def real_registry() -> Registry:
    return create_plugin_manager(load_entry_points=False, blocked=()).registry()


def load(text: str, registry: Registry, environ: dict[str, str] | None = None) -> ValidatedConfig:
    return load_config_text(text, registry, source_name="envoy.yaml", environ=environ or {})


@dataclass
class Served:
    """A servicer on an in-process grpc.aio server, with the metrics it records into."""

    channel: grpc.aio.Channel
    holder: RuntimeHolder
    metrics: ServerMetrics
    admission: Admission

    async def unary(self, method: str, payload: bytes, timeout: float = 10.0) -> bytes:
        answer: bytes = await self.channel.unary_unary(method)(payload, timeout=timeout)
        return answer

    async def stream(self, method: str, payloads: list[bytes], timeout: float = 10.0) -> bytes:
        async def messages() -> AsyncIterator[bytes]:
            for payload in payloads:
                yield payload

        answer: bytes = await self.channel.stream_unary(method)(messages(), timeout=timeout)
        return answer

    def sample(self, name: str, **labels: str) -> float | None:
        return metric_value(generate_latest(self.metrics.registry).decode(), name, **labels)


ServiceFactory = Callable[[RuntimeHolder, ServerMetrics, Admission, ServiceLimits], Any]


@asynccontextmanager
async def serve(
    factory: ServiceFactory,
    runtime: Runtime,
    *,
    limit: int = 100,
    limits: ServiceLimits | None = None,
) -> AsyncIterator[Served]:
    """Serve the service ``factory`` builds on a free loopback port; the runtime is started and
    shut down here."""
    holder = RuntimeHolder(runtime, ConfigInfo(embedded=False, source="test"))
    metrics = ServerMetrics(lambda: holder.current.stats)
    admission = Admission(limit)
    service = factory(holder, metrics, admission, limits or ServiceLimits())
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((service.rpc_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await runtime.start()
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(channel, holder, metrics, admission)
    finally:
        await server.stop(None)
        await runtime.shutdown(1.0)


def runtime_of(text: str, environ: dict[str, str] | None = None) -> Runtime:
    registry = real_registry()
    return build_runtime(load(text, registry, environ), registry)
