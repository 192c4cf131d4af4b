"""The chaos suite: faults injected into real `mixer serve` processes and real backends.

Every scenario runs in two sizes. The short form (the default) is part of ``make test``: outages of
a few seconds, a few hundred records. ``MIXER_CHAOS=full`` (``make chaos``) runs the long form:
20 s outages, 100 reloads, thousands of records.

Each scenario records its figures (sent, accepted, delivered, duplicated, lost and what else it
measured) with :func:`record`: printed, and appended as one JSON object per line to
``build/chaos/figures-<form>.jsonl`` (git-ignored), from which docs/reliability.md quotes the
last run.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.backends.kafka import tansu
from tests.backends.redis import redis_server
from tests.e2e.conftest import ReportLoad, fake_otlp
from tests.fakes.fake_elasticsearch import FakeElasticsearch
from tests.server.support import Launcher, ServerProcess, launcher, metric_value

__all__ = ["fake_otlp", "redis_server", "tansu"]  # fixtures for the scenarios

ROOT = Path(__file__).resolve().parents[2]
FULL = os.environ.get("MIXER_CHAOS") == "full"
FORM = "full" if FULL else "short"
FIGURES_DIR = ROOT / "build" / "chaos"
#: The Istio attribute vocabulary and access log instance of the fan-out deployment, which the
#: scenarios' own configs reuse (``accesslog.yaml`` sits next to it).
FANOUT_ATTRIBUTES = ROOT / "deploy" / "config" / "fanout" / "attributes.yaml"


def sized(short: float, full: float) -> float:
    """``full`` in the long form (``MIXER_CHAOS=full``), else ``short``."""
    return full if FULL else short


@dataclass
class Figures:
    """What one scenario sent and what came out of it.

    ``accepted``: records (or calls) answered OK; ``delivered``: distinct accepted ones found at the
    backend; ``duplicated``: copies beyond the first; ``lost``: accepted but never found.
    """

    scenario: str
    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    duplicated: int = 0
    lost: int = 0
    refused: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


def record(figures: Figures) -> None:
    line = {"form": FORM, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **asdict(figures)}
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    with (FIGURES_DIR / f"figures-{FORM}.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps(line, sort_keys=True) + "\n")
    print(f"chaos {FORM}: {json.dumps(line, sort_keys=True)}")


def count_delivery(figures: Figures, accepted: set[str], seen: Counter[str]) -> None:
    """Fill ``delivered``, ``duplicated`` and ``lost`` of ``figures`` from request ids seen at a backend."""
    figures.accepted = len(accepted)
    figures.delivered = len(accepted & set(seen))
    figures.duplicated = sum(count - 1 for count in seen.values() if count > 1)
    figures.lost = len(accepted - set(seen))


def reports_sent(load: ReportLoad) -> int:
    """Records a :class:`ReportLoad` sent: every Report carries ``batch`` of them."""
    return load.batch * (len(load.accepted) // load.batch + load.refused)


async def wait_for(condition: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll an async ``condition`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0 when absent), scraped off the event loop."""
    exposition = await asyncio.to_thread(server.metrics)
    return metric_value(exposition, name, **labels) or 0.0


async def start_server(
    launch: Launcher, config: Path, *args: str, env: Mapping[str, str] | None = None
) -> ServerProcess:
    """`mixer serve` on ``config`` (file or directory), started off the loop so the fakes keep answering."""
    argv = ("--config", str(config), "--log-level", "WARNING", *args)
    return await asyncio.to_thread(launch.start, *argv, env=env)


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    """Starts `mixer serve` processes; every one is killed by PID when the test ends."""
    with launcher(tmp_path) as servers:
        yield servers


@pytest.fixture
async def fake_es() -> AsyncIterator[FakeElasticsearch]:
    async with FakeElasticsearch() as es:
        yield es
