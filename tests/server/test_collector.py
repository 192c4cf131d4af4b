"""The garbage collector of a serving process: what start-up leaves it to walk, and how often."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mixer.server import MixerServer
from mixer.server._app import YOUNG_COLLECTION_THRESHOLD
from tests.server.support import policy_options, report


@pytest.fixture
def thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _bags(count: int) -> list[dict[str, Any]]:
    return [
        {
            "destination.service.host": "orders.svc",
            "request.path": f"/v1/orders/{i}",
            "request.headers": {"x-request-id": f"r-{i}", "user-agent": "test/1.0"},
            "response.code": 200,
        }
        for i in range(count)
    ]


async def test_a_report_call_leaves_the_young_generation_alone(tmp_path: Path, thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)
    server = MixerServer(policy_options(tmp_path))
    await server.start()
    collections: list[int] = []

    def counted(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    try:
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD
        assert gc.get_freeze_count() > 0
        bags = _bags(300)
        async with grpc.aio.insecure_channel(str(server.grpc_address)) as channel:
            await report(channel, bags)  # connection set-up, first-call caches
            gc.collect(0)
            gc.callbacks.append(counted)
            try:
                await report(channel, bags)
            finally:
                gc.callbacks.remove(counted)
        # At Python's default of 700 this call (both ends of it) ran the collector several times.
        assert collections == []
    finally:
        await server.stop()
