"""Redis SIGKILLed under Check load, then restarted on the same port.

Two `mixer serve` processes share one real redis-server (each under its own key prefix): one with
``failure_policy: fail_open``, one with ``fail_closed``. Concurrent Checks go to both while Redis
is killed and, after an outage, started again (empty: it keeps nothing on disk). What must hold:

- fail_open: every Check answered OK throughout, the uncounted grants counted;
- fail_closed: during the outage every Check is answered UNAVAILABLE ``quota store unavailable``
  (docs/quotas.md), each one counted as a store failure;
- both: no call fails at the gRPC level, the same processes count again after the restart (no
  mixer restart), and the quotas are exact again: N Checks on a plan of L grant exactly L.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mixer.client import MixerCallError, MixerClient
from mixer.status import Code
from tests.backends.redis import RedisServer, unique_prefix
from tests.chaos.conftest import Figures, metric, record, sized, start_server, wait_for
from tests.server.support import Launcher, ServerProcess

pytestmark = pytest.mark.chaos

HANDLER = "plans.istio-system"
LOAD_KEY = "load-key"
EXACT_KEY = "exact-key"
LIMIT = 50
#: Checks sent on the metered plan after recovery: the limit and some over it.
EXACT_CHECKS = LIMIT + 30
BEFORE = sized(1.5, 5.0)
OUTAGE = sized(2.0, 20.0)
AFTER = sized(1.5, 5.0)
TASKS = 3
#: The documented answer of fail_closed while the store is down (docs/quotas.md).
STORE_DOWN = "quota store unavailable"


def quota_config(redis_url: str, prefix: str, policy: str) -> str:
    # The load spends a plan it can never exhaust; the exactness check after recovery spends a
    # rolling hour that cannot roll over during the test.
    return f"""
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {{name: bulk}}
spec:
  limits:
  - {{name: per_day, max: 100000000, per: day}}
---
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {{name: metered}}
spec:
  limits:
  - {{name: per_hour, max: {LIMIT}, per: 1h, algorithm: rolling_window, buckets: 10}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: plans, namespace: istio-system}}
spec:
  compiledAdapter: redisquota
  params:
    redis_server_url: '{redis_url}'
    key_prefix: '{prefix}'
    # Wide for a busy two-core machine: a slow round trip must not read as an outage.
    timeout: 1s
    failure_policy: {policy}
    subjects:
      keys:
        inline:
          {LOAD_KEY}: {{subject: loader, plan: bulk}}
          {EXACT_KEY}: {{subject: sam, plan: metered}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: plancheck, namespace: istio-system}}
spec:
  compiledTemplate: plancheck
  params:
    api_key: request.api_key | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: plans, namespace: istio-system}}
spec:
  actions:
  - handler: plans
    instances: [plancheck]
"""


@dataclass
class Answer:
    sent_at: float
    answered_at: float
    code: Code | None  # None: the call itself failed
    message: str


@dataclass
class CheckLoad:
    """``TASKS`` senders of Checks to one server, each answer kept with its times."""

    target: str
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> CheckLoad:
        self._tasks = [asyncio.create_task(self._run()) for _ in range(TASKS)]
        return self

    async def _run(self) -> None:
        async with MixerClient(self.target, timeout=10) as client:
            while not self._stop.is_set():
                sent_at = time.monotonic()
                try:
                    answer = await client.check(
                        {"request.api_key": LOAD_KEY, "context.protocol": "http"},
                        deduplication_id=uuid.uuid4().hex,
                    )
                except MixerCallError as err:
                    self.answers.append(Answer(sent_at, time.monotonic(), None, str(err)))
                else:
                    self.answers.append(Answer(sent_at, time.monotonic(), answer.code, answer.message))
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def between(self, start: float, end: float) -> list[Answer]:
        """Answers to Checks sent after ``start`` and answered before ``end``."""
        return [a for a in self.answers if a.sent_at > start and a.answered_at < end]


async def exact_codes(target: str) -> list[Code]:
    """EXACT_CHECKS Checks on the metered plan from a few concurrent senders."""
    codes: list[Code] = []

    async def sender(n: int) -> None:
        async with MixerClient(target, timeout=10) as client:
            for i in range(n, EXACT_CHECKS, TASKS):
                answer = await client.check(
                    {"request.api_key": EXACT_KEY, "context.protocol": "http"},
                    deduplication_id=f"exact-{i}",
                )
                codes.append(answer.code)

    await asyncio.gather(*(sender(n) for n in range(TASKS)))
    return codes


async def test_redis_killed_under_check_load(
    launch: Launcher, redis_server: RedisServer, tmp_path: Path
) -> None:
    servers: dict[str, ServerProcess] = {}
    for policy in ("fail_open", "fail_closed"):
        path = tmp_path / f"{policy}.yaml"
        path.write_text(quota_config(redis_server.url, unique_prefix(policy), policy), "utf-8")
        servers[policy] = await start_server(launch, path, "--reload-interval", "0")
    pids = {policy: server.pid for policy, server in servers.items()}
    loads = {policy: CheckLoad(server.grpc_target).start() for policy, server in servers.items()}
    try:
        await asyncio.sleep(BEFORE)
        await asyncio.to_thread(redis_server.kill)
        # Taken once the process is gone (kill waits for it): a Check sent earlier may be granted.
        killed_at = time.monotonic()
        await asyncio.sleep(OUTAGE)
        restarted_at = time.monotonic()
        await asyncio.to_thread(redis_server.start)

        async def counting_again() -> float | None:
            recent = loads["fail_closed"].between(restarted_at, time.monotonic())
            return next((a.answered_at for a in recent if a.code is Code.OK), None)

        recovered_at = await wait_for(counting_again, 30, "fail_closed Checks answered OK again")
        await asyncio.sleep(AFTER)
        steady_from = time.monotonic() - AFTER + 0.5
    finally:
        for load in loads.values():
            await load.stop()

    figures = Figures("redis killed under Check load")
    for policy, load in loads.items():
        server = servers[policy]
        # The same processes throughout: recovery needed no restart of mixer.
        assert server.process.poll() is None
        assert server.pid == pids[policy]
        failed_calls = [a for a in load.answers if a.code is None]
        assert not failed_calls, (
            f"{policy}: {len(failed_calls)} calls failed, first: {failed_calls[0].message}"
        )
        before = load.between(0, killed_at)
        outage = load.between(killed_at, restarted_at)
        after = load.between(steady_from, time.monotonic())
        assert min(len(before), len(outage), len(after)) > 0, (policy, len(before), len(outage), len(after))
        assert {a.code for a in before} == {Code.OK}, policy
        assert {a.code for a in after} == {Code.OK}, policy
        failures = await metric(server, "mixer_redisquota_store_failures_total", handler=HANDLER)
        if policy == "fail_open":
            assert {a.code for a in outage} == {Code.OK}
            grants = await metric(server, "mixer_redisquota_fail_open_grants_total", handler=HANDLER)
            assert grants == failures >= len(outage)
        else:
            # The handler's name prefixes the documented message.
            assert {(a.code, a.message) for a in outage} == {(Code.UNAVAILABLE, f"{HANDLER}:{STORE_DOWN}")}
            refused = [a for a in load.answers if a.code is Code.UNAVAILABLE]
            assert failures == len(refused)
            figures.refused = len(refused)
        figures.sent += len(load.answers)
        figures.accepted += sum(1 for a in load.answers if a.code is Code.OK)
        figures.notes[f"{policy}_outage_checks"] = len(outage)
        figures.notes[f"{policy}_store_failures"] = int(failures)

    # Redis restarted empty: the metered plan starts from zero and grants exactly its limit.
    for policy, server in servers.items():
        codes = await exact_codes(server.grpc_target)
        granted = codes.count(Code.OK)
        assert granted == LIMIT, (policy, granted)
        assert codes.count(Code.RESOURCE_EXHAUSTED) == EXACT_CHECKS - LIMIT, policy
        figures.notes[f"{policy}_exact"] = f"{granted} of {EXACT_CHECKS} for {LIMIT}"
    figures.notes["outage_s"] = OUTAGE
    figures.notes["recovered_after_restart_s"] = round(recovered_at - restarted_at, 2)
    record(figures)
