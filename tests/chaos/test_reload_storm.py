"""Config reloads, one after another, while Checks and Reports keep arriving.

`mixer serve` runs a policy config written by the test (a denier for one host, every Report
logged by a stdio handler to a file). It is reloaded by SIGHUP 20 times (100 with
``MIXER_CHAOS=full``), each time with a change: every reload moves the denied host (new rules),
every second one also moves the stdio handler's output file (the handler is retired and a new one
started). Meanwhile Checks for a host no rule denies and Reports go on from concurrent senders.
No call may fail, every Check must be allowed, and every record of an accepted Report must be in
one of the output files, once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import time
from collections import Counter
from pathlib import Path

import grpc
import grpc.aio
import pytest

from mixer.status import Code
from tests.chaos.conftest import (
    Figures,
    count_delivery,
    metric,
    record,
    reports_sent,
    sized,
    start_server,
    wait_for,
)
from tests.e2e.conftest import ReportLoad
from tests.server.support import Launcher, ServerProcess, check, policy_config, write_atomically

pytestmark = pytest.mark.chaos

RELOADS = int(sized(20, 100))


class CheckLoad:
    """Checks for an allowed host from a few senders; answers other than OK are kept."""

    def __init__(self, target: str, tasks: int = 2) -> None:
        self.target = target
        self.sent = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run()) for _ in range(tasks)]

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            while not self._stop.is_set():
                self.sent += 1
                try:
                    answer = await check(channel, {"destination.service.host": "reviews.default.svc"})
                except grpc.aio.AioRpcError as err:
                    self.failures.append(f"{err.code()}: {err.details()}")
                else:
                    if answer.precondition.status.code != Code.OK:
                        self.failures.append(str(answer.precondition.status))
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def logged_request_ids(outputs: list[Path]) -> Counter[str]:
    seen: Counter[str] = Counter()
    for path in outputs:
        if path.exists():
            for line in path.read_text("utf-8").splitlines():
                if line.strip():
                    request_id = json.loads(line).get("requestId")
                    if request_id:
                        seen[request_id] += 1
    return seen


async def reloads(server: ServerProcess, result: str) -> float:
    return await metric(server, "mixer_config_reloads_total", result=result)


async def test_reloads_under_check_and_report_load_fail_no_call(launch: Launcher, tmp_path: Path) -> None:
    outputs = [tmp_path / "reports-0.jsonl", tmp_path / "reports-1.jsonl"]
    config = tmp_path / "policy.yaml"
    config.write_text(policy_config(outputs[0], blocked_host="blocked-0.svc"), "utf-8")
    server = await start_server(launch, config, "--reload-interval", "0")
    checks = CheckLoad(server.grpc_target)
    reports = ReportLoad(server.grpc_target, batch=5, interval=0.02).start()
    started = time.monotonic()
    try:
        for n in range(1, RELOADS + 1):
            write_atomically(config, policy_config(outputs[(n // 2) % 2], blocked_host=f"blocked-{n}.svc"))
            server.send(signal.SIGHUP)
            await wait_for(functools.partial(_reloaded, server, n), 30, f"reload {n}")
            # Let some load through between reloads.
            await asyncio.sleep(0.1)
    finally:
        elapsed = time.monotonic() - started
        await checks.stop()
        await reports.stop()

    assert await reloads(server, "failure") == 0
    assert not checks.failures, (len(checks.failures), checks.failures[:3])
    assert reports.refused == 0
    accepted = set(reports.accepted)

    async def all_logged() -> bool:
        return accepted <= set(logged_request_ids(outputs))

    await wait_for(all_logged, 30, "every accepted record in the output files")
    seen = logged_request_ids(outputs)
    figures = Figures(f"{RELOADS} config reloads under Check and Report load", sent=reports_sent(reports))
    count_delivery(figures, accepted, seen)
    figures.notes.update(
        checks=checks.sent, failed_checks=len(checks.failures), reload_seconds=round(elapsed, 1)
    )
    record(figures)
    assert figures.lost == 0
    assert figures.duplicated == 0


async def _reloaded(server: ServerProcess, n: int) -> bool:
    return await reloads(server, "success") >= n
