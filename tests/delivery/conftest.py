from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mixer.delivery import BatchSender, Delivery, DeliveryOptions

from .doubles import VirtualClock

MakeDelivery = Callable[..., Delivery]


@pytest.fixture
async def make_delivery() -> AsyncIterator[MakeDelivery]:
    """Build Deliveries that are shut down at the end of the test (unless a test did it)."""
    made: list[Delivery] = []
    counter = iter(range(1_000_000))

    def make(
        sender: BatchSender,
        data_dir: Path | None,
        *,
        clock: VirtualClock | None = None,
        name: str | None = None,
        **options: Any,
    ) -> Delivery:
        timing = clock if clock is not None else VirtualClock(auto=True)
        delivery = Delivery(
            name or f"test-{next(counter)}",
            sender,
            DeliveryOptions.model_validate(options),
            data_dir=data_dir,
            logger=logging.getLogger("tests.delivery"),
            clock=timing if clock is not None else time.monotonic,
            sleep=timing.sleep if clock is not None else asyncio.sleep,
        )
        made.append(delivery)
        return delivery

    yield make
    for delivery in made:
        await delivery.shutdown(1.0)
